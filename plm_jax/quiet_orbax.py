"""Keeps the tracebacks of Orbax's writer threads off stderr; `launch.py` installs it.

When a checkpoint save fails (a full or vanished disk), each of Orbax's background writes logs its own traceback:
asyncio's "Task exception was never retrieved", absl's "_SignalingThread.run() raised an exception", "Failed to
run N Handler Commit operations", "Save Finalize thread failed", up to hundreds of them. The failure itself
reaches the trainer (train/checkpoint.py raises CheckpointSaveError), which names it in one line. So the
per-thread reports are dropped, and any other error record that Orbax logs with a traceback keeps its first line
only: still said, not buried. TensorStore's writes that finish after Orbax closed its event loop print
"RuntimeError: Event loop is closed" through `sys.unraisablehook` (from C, so the traceback holds asyncio's
frames only); those are dropped too.
"""

from __future__ import annotations

import logging
import sys
import types

_THREAD_REPORTS = ("Task exception was never retrieved", "raised an exception")


def _from_orbax(record: logging.LogRecord) -> bool:
    if "orbax" in record.pathname:
        return True
    tb = record.exc_info[2] if record.exc_info else None
    while tb is not None:
        if "orbax" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


class _OrbaxThreadErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or record.name not in ("asyncio", "absl") or not _from_orbax(record):
            return True
        message = record.getMessage()
        if any(report in message for report in _THREAD_REPORTS):
            return False
        record.msg, record.args = message.splitlines()[0][:300] if message else "", None
        record.exc_info, record.exc_text = None, None
        return True


def _is_closed_loop_report(value: BaseException, tb: types.TracebackType | None) -> bool:
    """A callback from C into a closed asyncio loop: nothing but asyncio in the traceback."""
    if not isinstance(value, RuntimeError) or str(value) != "Event loop is closed" or tb is None:
        return False
    while tb is not None:
        if "asyncio" not in tb.tb_frame.f_code.co_filename:
            return False
        tb = tb.tb_next
    return True


def _drop_closed_loop_reports(hook):  # noqa: ANN001, ANN202  (sys.unraisablehook's signature)
    def unraisablehook(unraisable) -> None:  # noqa: ANN001
        if not _is_closed_loop_report(unraisable.exc_value, unraisable.exc_traceback):
            hook(unraisable)

    return unraisablehook


def install() -> None:
    """Adds the filter to every handler of the root logger (call after logging is configured), and drops
    the closed-loop reports of TensorStore's late writes from `sys.unraisablehook`."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_OrbaxThreadErrors())
    sys.unraisablehook = _drop_closed_loop_reports(sys.unraisablehook)
