"""A checkpoint save that fails mid-run (the directory became unwritable) stops the run with one line and a
non-zero exit, soon, and never hangs on Orbax's writer threads."""

import os
import subprocess
import sys
import time

import pytest

from tests.corpus import write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = """
from plm_jax.config_base import mlm_pretrain_config

def get_config():
    c = mlm_pretrain_config()
    c.model.update(vocab_size=56, num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64, max_len=64)
    c.data.update(source="text", paths=({corpus!r},), seq_len=64, shuffle_buffer=64)
    c.train.update(batch_size=16, steps=100000, lr=1e-3, warmup_steps=2, log_every=2, eval_every=100000,
                   eval_batches=1, checkpoint_every=20, keep_checkpoints=2)
    return c
"""


@pytest.mark.slow
def test_a_save_that_fails_mid_run_stops_the_run_with_one_line(tmp_path):
    config = tmp_path / "config.py"
    config.write_text(CONFIG.format(corpus=write_corpus(tmp_path / "corpus.txt", 300)))
    workdir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch.py"), "pretrain", f"--config={config}",
                             f"--workdir={workdir}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT})
    deadline = time.time() + 300
    while not (workdir / "checkpoints" / "20").is_dir():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    time.sleep(1.0)
    os.rename(workdir / "checkpoints", workdir / "checkpoints_kept")  # the disk goes away under the run
    os.symlink("/sys/plm_jax_cannot_write_here", workdir / "checkpoints")
    try:
        _, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run hung after its checkpoint save failed")
    assert proc.returncode not in (0, None)
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: saving the checkpoint of step") and "failed" in last, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert (workdir / "checkpoints_kept" / "20").is_dir()  # what was saved before is untouched


def test_orbax_writer_thread_reports_are_dropped_and_its_other_errors_lose_their_traceback():
    import logging
    import sys

    from plm_jax.quiet_orbax import _OrbaxThreadErrors

    try:
        raise ValueError("disk gone")
    except ValueError:
        exc = sys.exc_info()

    def record(name, message, level=logging.ERROR, path="/x/orbax/checkpoint/_src/futures/future.py"):
        return logging.LogRecord(name, level, path, 1, message, None, exc)

    keep = _OrbaxThreadErrors().filter
    assert not keep(record("absl", "[thread=array_type_handler] _SignalingThread.run() raised an exception: x"))
    assert not keep(record("asyncio", "Task exception was never retrieved\nfuture: <Task ...>"))
    other = record("absl", "Save Finalize thread (save_finalize) failed.\nmore")
    assert keep(other) and other.getMessage() == "Save Finalize thread (save_finalize) failed." and not other.exc_info
    mine = record("plm_jax", "Task exception was never retrieved", path="/x/plm_jax/train/trainer.py")
    assert keep(mine) and mine.exc_info  # not Orbax's: untouched
    assert keep(record("absl", "raised an exception", logging.WARNING))


def test_closed_event_loop_reports_from_c_are_dropped_and_every_other_unraisable_is_printed():
    import asyncio

    from plm_jax.quiet_orbax import _drop_closed_loop_reports

    printed = []
    hook = _drop_closed_loop_reports(lambda unraisable: printed.append(unraisable.exc_value))
    loop = asyncio.new_event_loop()
    loop.close()
    try:
        loop.call_soon_threadsafe(print)  # as TensorStore's done-callback does, from C: only asyncio frames
    except RuntimeError as e:
        late_write = e
    hook(_Unraisable(late_write, _only_asyncio_frames(late_write.__traceback__)))
    assert printed == []
    try:
        raise RuntimeError("Event loop is closed")  # raised by our own code: printed
    except RuntimeError as e:
        ours = e
    hook(_Unraisable(ours, ours.__traceback__))
    other = ValueError("a bug")
    hook(_Unraisable(other, None))
    assert printed == [ours, other]


def _only_asyncio_frames(tb):
    while tb is not None and "asyncio" not in tb.tb_frame.f_code.co_filename:
        tb = tb.tb_next
    return tb


class _Unraisable:  # the fields of sys.UnraisableHookArgs that the hook reads
    def __init__(self, value, tb):
        self.exc_type, self.exc_value, self.exc_traceback = type(value), value, tb
