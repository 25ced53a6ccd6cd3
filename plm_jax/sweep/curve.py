"""The learning-curve part of a sweep report (`Sweep(curve=Curve(x, series))`): a fine-tuning metric against the
number of labeled examples, one line per starting point, as a PNG, a CSV and a Markdown table with 95% intervals
over seeds and each line's difference from the first one (random init), paired by seed.

It reads the same sweep.json and stage results as report.py, which calls it; the x position of "all" (0) is the
train_examples count the runs report.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from plm_jax.sweep import plots, stats


@dataclasses.dataclass
class CurvePoint:
    x_label: str  # the axis label: "100", ..., "all" (max_train_examples 0)
    line: str  # the series value, with any other axes' values
    values: dict[int, float]  # seed -> metric
    examples: float  # labeled training examples (median over the seeds' runs)
    interval: stats.Interval
    difference: stats.Interval | None  # line minus the baseline line, paired by seed; None for the baseline


def _line_label(point: Mapping[str, Any], series: str, others: Sequence[str]) -> str:
    rest = ", ".join(f"{n}={point['values'][n]}" for n in others)
    return point["values"][series] + (f" ({rest})" if rest else "")


def curve_points(metric: str, summary: Mapping[str, Any], stages: Mapping[str, Any],
                 confidence: float = 0.95) -> list[CurvePoint]:
    """Every (x, line) of a fine-tuning metric, in axis order, with intervals and paired differences."""
    curve, paired = summary["curve"], bool(summary.get("paired", True))
    task = metric.split("/")[0]
    axes = {a["name"]: a for a in summary.get("axes") or []}
    others = [n for n in axes if n not in (curve["x"], curve["series"])]
    cells: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    baseline_of: dict[str, str] = {}
    for point in summary.get("points") or []:
        if task not in point["stages"]:
            continue
        line = _line_label(point, curve["series"], others)
        baseline_of[line] = _line_label({"values": {**point["values"], curve["series"]:
                                                    axes[curve["series"]]["labels"][0]}}, curve["series"], others)
        result = stages[point["stages"][task]]
        if metric in result.metrics:
            examples = float(result.metrics.get(f"{task}/train_examples", math.nan))
            cells.setdefault((point["values"][curve["x"]], line), {})[point["seed"]] = (result.metrics[metric],
                                                                                        examples)
        else:
            cells.setdefault((point["values"][curve["x"]], line), {})
    out = []
    for x_label in axes[curve["x"]]["labels"]:
        for line in baseline_of:
            seeds = cells.get((x_label, line))
            if seeds is None:
                continue
            values = {s: v for s, (v, _) in seeds.items()}
            counts = [e for _, e in seeds.values() if math.isfinite(e)]
            examples = float(np.median(counts)) if counts else (float(x_label) if _is_count(x_label) else math.nan)
            difference = None
            base = cells.get((x_label, baseline_of[line]))
            if baseline_of[line] != line and base is not None:
                a = {s: v for s, (v, _) in base.items()}
                if paired:
                    common = sorted(s for s in a.keys() & values.keys() if math.isfinite(a[s] + values[s]))
                    difference = stats.difference_interval([a[s] for s in common], [values[s] for s in common],
                                                           confidence, paired=True)
                else:
                    difference = stats.difference_interval(list(a.values()), list(values.values()), confidence,
                                                           paired=False)
            out.append(CurvePoint(x_label, line, values, examples,
                                  stats.mean_interval(list(values.values()), confidence), difference))
    return out


def _is_count(label: str) -> bool:
    return label.isdigit() and int(label) > 0


def _examples_label(point: CurvePoint) -> str:
    count = f"{point.examples:.0f}" if math.isfinite(point.examples) else "?"
    return count if _is_count(point.x_label) else f"{point.x_label} ({count})"


def markdown(metric: str, points: Sequence[CurvePoint], baseline: str) -> list[str]:
    """Rows: label counts; columns: each line's mean [interval], then each line minus the baseline."""
    lines_order = list(dict.fromkeys(p.line for p in points))
    others = [line for line in lines_order if any(p.difference is not None for p in points if p.line == line)]
    header = ["labels", *(f"{line}: mean [95%]" for line in lines_order),
              *(f"{line} - {baseline}: paired [95%]" for line in others)]
    rows = []
    for x_label in dict.fromkeys(p.x_label for p in points):
        at = {p.line: p for p in points if p.x_label == x_label}
        first = next(iter(at.values()))
        row = [_examples_label(first)]
        row += [f"{at[line].interval.format(4)} (n={at[line].interval.n})" if line in at else ""
                for line in lines_order]
        for line in others:
            diff = at[line].difference if line in at else None
            row.append(diff.format(4) if diff is not None and diff.n else "")
        rows.append(row)
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [f"### Learning curve: {metric}", ""] + table + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def write_csv(path: str, metric: str, points: Sequence[CurvePoint], write_header: bool) -> None:
    columns = ["metric", "labels", "train_examples", "line", "mean", "low", "high", "n", "seeds",
               "diff_vs_baseline", "diff_low", "diff_high", "diff_p", "pairs"]
    with open(path, "a" if not write_header else "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, columns)
        if write_header:
            writer.writeheader()
        for p in points:
            d = p.difference
            writer.writerow({
                "metric": metric, "labels": p.x_label, "train_examples": p.examples, "line": p.line,
                "mean": p.interval.estimate, "low": p.interval.low, "high": p.interval.high, "n": p.interval.n,
                "seeds": " ".join(f"{s}:{v:.6g}" for s, v in sorted(p.values.items())),
                "diff_vs_baseline": d.estimate if d else "", "diff_low": d.low if d else "",
                "diff_high": d.high if d else "", "diff_p": d.p_value if d else "", "pairs": d.n if d else ""})


def curve_section(sweep_dir: str, metrics: Sequence[str], summary: Mapping[str, Any],
                  stages: Mapping[str, Any]) -> tuple[list[str], list[str], dict[str, list[CurvePoint]]]:
    """Markdown lines, the PNG paths, and the points per metric; writes curve.csv and plots/curve_*.png."""
    curve = summary["curve"]
    axes = {a["name"]: a for a in summary.get("axes") or []}
    baseline = axes[curve["series"]]["labels"][0]
    csv_path = os.path.join(sweep_dir, "curve.csv")
    lines = ["## Learning curves", "",
             f"Each headline metric against the number of labeled training examples ({curve['x']}), one line per "
             f"{curve['series']}; differences are each line minus `{baseline}`, "
             f"{'paired by seed' if summary.get('paired', True) else 'unpaired (Welch)'}. "
             "All numbers: [curve.csv](curve.csv).", ""]
    pngs, found = [], {}
    for metric in metrics:
        if metric.split("/")[0] not in (summary.get("tasks") or []):
            continue
        points = curve_points(metric, summary, stages)
        if not any(p.values for p in points):
            continue
        found[metric] = points
        write_csv(csv_path, metric, points, write_header=len(found) == 1)
        series = [(line, [(p.examples, list(p.values.values())) for p in points if p.line == line])
                  for line in dict.fromkeys(p.line for p in points)]
        png = plots.learning_curve(os.path.join(sweep_dir, "plots", f"curve_{plots.safe_name(metric)}.png"),
                                   metric, curve["x"], series)
        if png:
            pngs.append(png)
            lines += [f"![learning curve {metric}]({os.path.relpath(png, sweep_dir)})", ""]
        lines += markdown(metric, points, baseline) + [""]
    return (lines if found else []), pngs, found
