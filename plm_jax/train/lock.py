"""One run at a time in a work directory: an exclusive `flock` on `.run.lock`, which names its holder.

A second run in the same directory while the first lives gets a one-line error that names the holder (host, pid,
start time). The kernel drops the lock when its process dies, however it dies (kill -9, a lost machine once its
lease expires on a network file system), so a resume needs no manual step and a stale lock file is harmless.
Taking the lock is also the run's first write, so an unwritable work directory is named here, before any work.
On several hosts, process 0 takes the lock and every host learns the outcome, so none of them starts alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator

import jax
import numpy as np

from plm_jax.errors import UserError

LOCK_FILE = ".run.lock"


def _holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _acquire(workdir: str) -> int:
    """The open, locked lock file's descriptor; a UserError when it is held or cannot be written."""
    path = os.path.join(workdir, LOCK_FILE)
    try:
        os.makedirs(workdir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"cannot write to the work directory {workdir}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _holder(fd)
        os.close(fd)
        raise UserError(f"{workdir} is in use by another run (pid {holder.get('pid', '?')} on "
                        f"{holder.get('host', '?')}, since {holder.get('started', '?')}); wait for it to end, or "
                        "use another --workdir") from None
    me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, me.encode("utf-8"))
    return fd


def _agree(error: str) -> str:
    """Process 0's outcome on every host: "" when it holds the lock, else its error."""
    if jax.process_count() == 1:
        return error
    from jax.experimental import multihost_utils

    failed = int(multihost_utils.broadcast_one_to_all(np.int32(bool(error))))
    return (error or "process 0 could not take the work directory's lock (its log says why)") if failed else ""


@contextlib.contextmanager
def run_lock(workdir: str) -> Iterator[None]:
    """Holds workdir's lock while the block runs (process 0 holds it for every host)."""
    fd, error = None, ""
    if jax.process_index() == 0:
        try:
            fd = _acquire(workdir)
        except UserError as e:
            error = str(e)
    error = _agree(error)
    if error:
        raise UserError(error)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the flock; the file stays, naming the last holder, and is harmless
