"""Small file helpers shared by the data, training and inference code."""

from __future__ import annotations

import os


def write_atomic(path: str, data: bytes | str) -> None:
    """Writes via a temporary file in the same folder, so readers never see a half-written file and a failure
    leaves the previous version in place."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
