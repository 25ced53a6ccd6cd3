"""PNG figures for a sweep report: a metric against one axis (mean and 95% interval across seeds, each seed a faint
dot) and training-loss curves (mean over seeds bold, each seed thin).

Matplotlib with the Agg backend, imported only when a figure is drawn, in the style of train/metrics_log.py.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from plm_jax.sweep import stats

# (legend label, per axis value: the seeds' values); the label is "" when the plot has one line
Series = tuple[str, Sequence[Sequence[float]]]
# (legend label, per seed: [(step, value), ...])
Curves = tuple[str, Sequence[Sequence[tuple[float, float]]]]


def safe_name(text: str) -> str:
    """A file-name part: metric "rt/test/accuracy" -> "rt_test_accuracy"; no slashes, spaces or odd characters."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_.") or "unnamed"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(plt: Any, n: int) -> list[Any]:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _legend(ax: Any, n: int, title: str = "") -> None:
    """Inside the axes for a few lines; beside them when there are many, so that no data is hidden."""
    if n > 6:
        ax.legend(fontsize="x-small", title=title or None, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize="small", title=title or None)


def metric_vs_axis(path: str, metric: str, axis_name: str, axis_labels: Sequence[str], series: Sequence[Series],
                   legend_title: str = "", confidence: float = 0.95) -> str | None:
    """One line per series across the axis values (categorical x), with t-interval error bars; None if no data."""
    if not any(math.isfinite(v) for _, per_value in series for values in per_value for v in values):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5 if len(series) > 6 else 6.0, 4.0))
    x = np.arange(len(axis_labels), dtype=float)
    # a small sideways offset per line keeps the error bars of different lines apart
    offsets = np.linspace(-0.12, 0.12, len(series)) if len(series) > 1 else np.zeros(1)
    for (label, per_value), offset, color in zip(series, offsets, _colors(plt, len(series))):
        means, below, above = [], [], []
        for j, values in enumerate(per_value):
            finite = [float(v) for v in values if math.isfinite(v)]
            if finite:
                # just beside the error bar, so that the bar does not hide them
                ax.plot([x[j] + offset + 0.035] * len(finite), finite, "o", color=color, alpha=0.4, markersize=4,
                        markeredgewidth=0)
            interval = stats.mean_interval(finite, confidence)
            means.append(interval.estimate)
            below.append(interval.estimate - interval.low if math.isfinite(interval.low) else 0.0)
            above.append(interval.high - interval.estimate if math.isfinite(interval.high) else 0.0)
        ax.errorbar(x + offset, means, yerr=[below, above], fmt="o-", color=color, capsize=4, linewidth=1.8,
                    markersize=5, label=label or None)
    ax.set_xticks(x, [str(label) for label in axis_labels])
    ax.set_xlim(-0.5, len(axis_labels) - 0.5)
    ax.set_xlabel(axis_name)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {axis_name}\nmean and {confidence:.0%} interval over seeds; dots: seeds",
                 fontsize="medium")
    ax.grid(alpha=0.3)
    if any(label for label, _ in series):
        _legend(ax, len(series), legend_title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train_curve(directory: str, key: str = "loss") -> list[tuple[float, float]]:
    """(step, train loss) from a run's metrics.jsonl, skipping a line a running job is half-way through."""
    points: dict[float, float] = {}
    try:
        with open(os.path.join(directory, "metrics.jsonl"), encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("split") == "train" and isinstance(record.get(key), int | float):
                    points[float(record["step"])] = float(record[key])
    except OSError:
        return []
    return sorted(points.items())


def mean_curve(curves: Sequence[Sequence[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Mean over seeds at the steps every seed logged (a seed that stopped early does not make the mean jump);
    at every logged step when the seeds share none."""
    tables = [dict(c) for c in curves if c]
    if not tables:
        return []
    steps = set.intersection(*(set(t) for t in tables)) or set().union(*tables)
    return [(s, float(np.mean([t[s] for t in tables if s in t]))) for s in sorted(steps)]


def training_curves(path: str, title: str, runs: Sequence[Curves], key: str = "loss") -> str | None:
    """Train `key` against the step: one colour per configuration, its seeds thin and their mean bold."""
    if not any(curve for _, curves in runs for curve in curves):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0 if len(runs) > 6 else 6.5, 4.0))
    for (label, curves), color in zip(runs, _colors(plt, len(runs))):
        curves = [c for c in curves if c]
        for curve in curves:
            ax.plot(*zip(*curve), color=color, alpha=0.35, linewidth=0.8)
        mean = mean_curve(curves)
        if mean:
            seeds = f"{len(curves)} seed{'s' if len(curves) != 1 else ''}"
            ax.plot(*zip(*mean), color=color, linewidth=2.0, label=f"{label} ({seeds})")
    ax.set_xlabel("step")
    ax.set_ylabel(f"train {key}")
    ax.set_title(f"{title}: train {key} (bold: mean over seeds)", fontsize="medium")
    ax.grid(alpha=0.3)
    _legend(ax, len(runs))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# (legend label, per x position: (number of examples, the seeds' values))
CurveSeries = tuple[str, Sequence[tuple[float, Sequence[float]]]]


def learning_curve(path: str, metric: str, x_name: str, series: Sequence[CurveSeries],
                   confidence: float = 0.95) -> str | None:
    """A metric against the number of labeled examples (log x): one line per starting point, its mean over seeds
    with the t interval shaded and each seed a faint dot; None if there is nothing to draw."""
    if not any(math.isfinite(v) for _, points in series for _, values in points for v in values):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for (label, points), color in zip(series, _colors(plt, len(series))):
        xs, means, lows, highs = [], [], [], []
        for x, values in sorted(points):
            finite = [float(v) for v in values if math.isfinite(v)]
            if not finite or not x > 0:
                continue
            ax.plot([x] * len(finite), finite, "o", color=color, alpha=0.35, markersize=3.5, markeredgewidth=0)
            interval = stats.mean_interval(finite, confidence)
            xs.append(x)
            means.append(interval.estimate)
            lows.append(interval.low if math.isfinite(interval.low) else interval.estimate)
            highs.append(interval.high if math.isfinite(interval.high) else interval.estimate)
        if xs:
            ax.plot(xs, means, "o-", color=color, linewidth=1.8, markersize=4.5, label=label)
            ax.fill_between(xs, lows, highs, color=color, alpha=0.18, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel(f"{x_name}: labeled training examples (log scale)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: learning curve\nmean over seeds, shaded {confidence:.0%} interval; dots: seeds",
                 fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    _legend(ax, len(series))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
