"""Small file helpers shared by the data, training and inference code."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from plm_jax.errors import UserError


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


def json_objects(lines: Iterable[str], where_of: Callable[[int], str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The JSON objects of a JSONL text, blank lines skipped, each with `where_of(line number)`; a malformed line
    or one that is not an object is a one-line error that names it."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = where_of(number)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: malformed JSON ({e.msg}): {line[:80]!r}") from None
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
        yield where, record


def cache_root(cache_dir: str | None = None) -> Path:
    """Where plm_jax caches what it fetches (wheels, MiniLM): `cache_dir`, $PLM_CACHE_DIR or ~/.cache/plm_jax."""
    return Path(cache_dir or os.environ.get("PLM_CACHE_DIR") or Path.home() / ".cache" / "plm_jax").expanduser()


def read_text(path: str, encoding: str = "utf-8") -> str:
    """A whole text file in `encoding` (a UTF-8 byte-order mark dropped); a byte that does not decode is a one-line
    error naming the line, the encoding, and the two ways out."""
    import codecs

    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UserError(f"task.encoding={encoding!r} is not an encoding Python knows (e.g. utf-8, latin-1, cp1252)"
                        ) from None
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(codecs.BOM_UTF8) and codecs.lookup(encoding).name == "utf-8":  # spreadsheet exports
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        name = "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding
        raise UserError(f"{path} line {line}: not {name} (byte {raw[e.start:e.start + 1]!r} at offset {e.start});"
                        f" convert the file (iconv -f latin1 -t utf-8) or declare its encoding with "
                        f"--config.task.encoding=latin-1") from None
