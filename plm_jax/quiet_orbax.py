"""Keeps the tracebacks of Orbax's writer threads off stderr; `launch.py` installs it.

When a checkpoint save fails (a full or vanished disk), each of Orbax's background writes logs its own traceback:
asyncio's "Task exception was never retrieved", absl's "_SignalingThread.run() raised an exception", "Failed to
run N Handler Commit operations", "Save Finalize thread failed", up to hundreds of them. The failure itself
reaches the trainer (train/checkpoint.py raises CheckpointSaveError), which names it in one line. So the
per-thread reports are dropped, and any other error record that Orbax logs with a traceback keeps its first line
only: still said, not buried.
"""

from __future__ import annotations

import logging

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


def install() -> None:
    """Adds the filter to every handler of the root logger (call after logging is configured)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_OrbaxThreadErrors())
