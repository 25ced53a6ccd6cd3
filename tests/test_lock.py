"""One run per work directory: a live holder is named, a dead one's lock is taken over (a kill -9 resume needs no
manual step), and an unwritable work directory is a one-line error before any work."""

import json
import os
import socket
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


def test_a_second_run_is_refused_while_the_first_lives_and_a_dead_ones_lock_is_taken(tmp_path):
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
    # killed without releasing: its lock names a pid that is gone, and the next run takes it over
    assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == holder.pid
    with run_lock(workdir):
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released


def test_a_lock_from_another_host_is_respected_and_a_torn_one_is_stale(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": socket.gethostname() + "-other",
                                                  "started": "then"}))
    with pytest.raises(UserError, match="in use by another run"):
        with run_lock(str(tmp_path)):
            pass
    (tmp_path / LOCK_FILE).write_text('{"pid": 12')
    with run_lock(str(tmp_path)):
        pass


def test_an_unwritable_work_directory_is_named_before_any_work():
    with pytest.raises(UserError, match=r"cannot write to the work directory /sys/plm_jax_test"):
        with run_lock("/sys/plm_jax_test/run"):
            pass
