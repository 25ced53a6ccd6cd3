"""Where a run's numbers go: a metrics JSONL, TensorBoard scalars and a PNG of the curves."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from plm_jax.errors import UserError

JSONL_NAME = "metrics.jsonl"
PLOT_NAME = "curves.png"


def _read(path: str) -> tuple[list[dict[str, Any]], bool]:
    """The records, and whether a torn last line (a write cut short by a kill) was left out."""
    if not os.path.exists(path):
        return [], False
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [(n, line) for n, line in enumerate(f, start=1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                return records, True
            raise UserError(f"{path} line {number}: malformed JSON ({e.msg}) before the last line; the log is "
                            "damaged: move it aside to resume") from None
    return records, False


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The records of a metrics log; a torn last line is left out (and repaired by the next resume)."""
    return _read(path)[0]


class MetricWriter:
    """Appends `{"step", "split", **metrics}` records; `truncate_after(step)` drops records a resume will redo."""

    def __init__(self, workdir: str, *, tensorboard: bool = True, enabled: bool = True):
        self.workdir = workdir
        self.path = os.path.join(workdir, JSONL_NAME)
        self.enabled = enabled  # False on all but one host of a multi-host run
        self._tb = None
        if tensorboard and enabled:
            import tensorflow as tf  # the data pipeline imports it anyway; its writer needs no extra package

            self._tf = tf
            self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """After a kill, records past the restored checkpoint are rewritten, not duplicated."""
        if not self.enabled:
            return
        records, torn = _read(self.path)
        kept = [r for r in records if r["step"] <= step]
        if torn:
            logging.getLogger("plm_jax").warning("%s: the last line was cut short (a kill mid-write); dropped it",
                                                 self.path)
        if len(kept) != len(records) or torn:
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
            os.replace(tmp, self.path)

    def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            with self._tb.as_default(step=int(step)):
                for k, v in metrics.items():
                    self._tf.summary.scalar(f"{split}/{k}", float(v))

    def plot(self, keys: tuple[str, ...] = ("loss", "accuracy"), title: str = "") -> str | None:
        return plot_curves(self.workdir, keys, title) if self.enabled else None

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def plot_curves(workdir: str, keys: tuple[str, ...] = ("loss", "accuracy"), title: str = "masked-LM") -> str | None:
    """One panel per metric, train and eval on the same axes, against the step. Returns the PNG path."""
    records = read_jsonl(os.path.join(workdir, JSONL_NAME))
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for split, style in (("train", "-"), ("eval", "o-")):
            points = sorted({r["step"]: r[key] for r in records if r["split"] == split and key in r}.items())
            if points:
                ax.plot(*zip(*points), style, label=split, markersize=4)
        ax.set_xlabel("step")
        ax.set_title(f"{title} {key}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = os.path.join(workdir, PLOT_NAME)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
