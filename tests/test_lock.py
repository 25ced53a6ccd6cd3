"""One run per work directory: a live holder is named, the lock of a killed run is free again (a kill -9 resume
needs no manual step), and an unwritable work directory is a one-line error before any work."""

import json
import os
import subprocess
import sys

import pytest

from plm_jax.errors import UserError
from plm_jax.train.lock import LOCK_FILE, run_lock

HOLD = """
import sys, time
from plm_jax.train.lock import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_run_is_refused_while_the_first_lives_and_free_once_it_is_killed(tmp_path):
    workdir = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, workdir], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"{workdir} is in use by another run \(pid {holder.pid} on"):
            with run_lock(workdir):
                pass
    finally:
        holder.kill()
        holder.wait()
    # killed without releasing: the file still names it, but the kernel dropped its lock
    assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == holder.pid
    with run_lock(workdir):
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(UserError, match="in use by another run"):  # a second run in this very process
            with run_lock(workdir):
                pass
    with run_lock(workdir):  # released
        pass


def test_an_unwritable_work_directory_is_named_before_any_work():
    with pytest.raises(UserError, match=r"cannot write to the work directory /sys/plm_jax_test"):
        with run_lock("/sys/plm_jax_test/run"):
            pass
