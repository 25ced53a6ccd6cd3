"""Keeps the tracebacks of Orbax's writer threads off stderr; `launch.py` installs it.

When a checkpoint save fails (a full or vanished disk), each of Orbax's background writes logs its own traceback:
asyncio's "Task exception was never retrieved" and absl's "_SignalingThread.run() raised an exception", up to
hundreds of them. The failure itself reaches the trainer (train/checkpoint.py raises CheckpointSaveError), which
names it in one line; these records add nothing but noise, so they are dropped. Any other record passes.
"""

from __future__ import annotations

import logging


class _OrbaxThreadErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or record.name not in ("asyncio", "absl"):
            return True
        text = record.getMessage()
        if record.exc_info and record.exc_info[2] is not None:
            tb = record.exc_info[2]
            while tb.tb_next is not None:
                tb = tb.tb_next
            text += tb.tb_frame.f_code.co_filename
        return "orbax" not in text and "OCDBT" not in text


def install() -> None:
    """Adds the filter to every handler of the root logger (call after logging is configured)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_OrbaxThreadErrors())
