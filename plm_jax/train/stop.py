"""SIGTERM/SIGINT ask the training loop to checkpoint and leave at a step boundary, on every host at once."""

from __future__ import annotations

import signal
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


class StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint and leave at a step boundary.

    With several processes, each may get the signal at a different step; `agreed` turns the local flags into one
    decision at the same step on every host (a collective), so that all of them save the same step and leave.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signum

    def agreed(self) -> bool:
        if jax.process_count() == 1:
            return self.signal is not None
        flags = multihost_utils.process_allgather(np.int32(self.signal or 0))
        if self.signal is None and flags.max():
            self.signal = int(flags.max())
        return bool(flags.max())

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
