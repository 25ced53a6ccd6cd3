"""One run at a time in a work directory: a lock file that names its holder (host, pid, start time).

A second run in the same directory while the first lives gets a one-line error. A lock left by a run that was
killed (kill -9, a lost machine) names a process that no longer exists on this host: it is taken over, so a
resume needs no manual step. Creating the lock is also the run's first write, so an unwritable work directory is
named here, before any work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator

from plm_jax.errors import UserError

LOCK_FILE = ".run.lock"
log = logging.getLogger("plm_jax")


def _holder(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}  # unreadable or half-written: treated as stale


def _alive(holder: dict) -> bool:
    """Whether the holder may still run: a live pid on this host other than ours, or any pid on another host."""
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    if holder.get("host") != socket.gethostname():
        return True  # cannot look at another machine's processes
    if pid == os.getpid():
        return False  # this process's own earlier run, ended without releasing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _create(path: str) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, f)


@contextlib.contextmanager
def run_lock(workdir: str, enabled: bool = True) -> Iterator[None]:
    """Holds workdir's lock while the block runs (enabled=False: a host other than process 0 of a multi-host run)."""
    if not enabled:
        yield
        return
    path = os.path.join(workdir, LOCK_FILE)
    try:
        os.makedirs(workdir, exist_ok=True)
        try:
            _create(path)
        except FileExistsError:
            holder = _holder(path)
            if _alive(holder):
                raise UserError(f"{workdir} is in use by another run (pid {holder.get('pid')} on "
                                f"{holder.get('host')}, since {holder.get('started')}); wait for it, or use another "
                                f"--workdir. If that run is gone, delete {path}") from None
            log.warning("%s: taking over the lock of a run that is gone (pid %s, since %s)", workdir,
                        holder.get("pid"), holder.get("started"))
            os.remove(path)
            _create(path)
    except PermissionError as e:
        raise UserError(f"cannot write to the work directory {workdir}: {e.strerror} ({e.filename})") from None
    except (FileExistsError, OSError) as e:
        if isinstance(e, FileExistsError):  # another run took the stale lock at the same moment
            raise UserError(f"{workdir} is in use by another run that started just now") from None
        raise UserError(f"cannot write to the work directory {workdir}: {e.strerror or e}") from None
    try:
        yield
    finally:
        if _holder(path).get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                os.remove(path)
