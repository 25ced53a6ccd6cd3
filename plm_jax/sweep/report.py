"""`launch.py report <sweep dir>`: a sweep's results as results.csv (long format), PNG plots and report.md, with
95% intervals across seeds and comparisons of each axis value against the axis's first value (the baseline).

It reads only what the runner wrote (sweep.json, each stage's sweep_stage.json, results.json and metrics.jsonl),
so a report can be made while a sweep runs, after some stages failed, or before any ran.

A metric belongs to a stage ("pretrain/accuracy", "rt/test/f1", "rt/duration_s"), and a stage only depends on
the axes whose keys reach it: a fine-tuning-only axis does not change the pretraining, so pretraining metrics are
tabled, plotted and compared over the pretraining axes only, never as copies of the same runs.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from plm_jax.files import write_atomic
from plm_jax.sweep import plots, stats

CONFIDENCE = 0.95
_NOT_METRICS = ("step", "split", "tokens", "epoch", "total", "missing")  # counts and bookkeeping, not scores
_FIXED_COLUMNS = ("point", "seed", "stage", "metric", "value", "status", "error", "directory")
_STATUS_WORDS = {"done": "finished", "missing": "not started"}


@dataclasses.dataclass
class StageResult:
    directory: str  # relative to the sweep directory
    stage: str  # "pretrain" or the task name
    status: str  # done | failed | running | interrupted | pending | missing (no record yet)
    error: str
    metrics: dict[str, float]  # full names: "pretrain/accuracy", "<task>/test/f1", "<stage>/duration_s"
    main_metric: str = ""


@dataclasses.dataclass
class Group:
    """The runs of one configuration of a stage: the values of the axes that reach it, and a directory per seed."""

    values: dict[str, str]
    label: str
    dirs: dict[int, str]


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _numbers(metrics: Any, prefix: str) -> dict[str, float]:
    """The numeric scores of a metrics dict, named prefix/key; signatures, epochs and counts are left out."""
    out = {}
    for key, value in (metrics or {}).items() if isinstance(metrics, Mapping) else ():
        if key.startswith("_") or key in _NOT_METRICS or key.endswith("_total") or isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[f"{prefix}/{key}"] = value if isinstance(value, int) else float(value)
    return out


def read_stage(sweep_dir: str, directory: str, info: Mapping[str, Any]) -> StageResult:
    """One stage's status and metrics; a finished run without a readable results.json counts as failed."""
    path = os.path.join(sweep_dir, directory)
    stage = "pretrain" if info.get("kind") == "pretrain" else str(info.get("task") or directory)
    record = _read_json(os.path.join(path, "sweep_stage.json"))
    if not isinstance(record, dict):
        return StageResult(directory, stage, "missing", "", {})
    status, error = str(record.get("status") or "pending"), str(record.get("error") or "")
    if info.get("key") and record.get("key") and record["key"] != info["key"]:
        return StageResult(directory, stage, "missing", "its record is from an older config; rerun the sweep", {})
    if status != "done":
        return StageResult(directory, stage, status, error, {})
    results = _read_json(os.path.join(path, "results.json"))
    if not isinstance(results, dict):
        return StageResult(directory, stage, "failed", "the run finished but results.json is missing or unreadable",
                           {})
    if stage == "pretrain":
        metrics = _numbers(results.get("eval_at_end"), "pretrain")
    else:
        metrics = {**_numbers((results.get("best") or {}).get("metrics"), f"{stage}/eval"),
                   **_numbers(results.get("test"), f"{stage}/test")}
    metrics.update(_numbers({k: results.get(k) for k in ("steps", "train_examples")}, stage))
    metrics.update(_numbers({k: record.get(k) for k in ("duration_s",)}, stage))
    return StageResult(directory, stage, status, "", metrics, str(results.get("main_metric") or ""))


def load(sweep_dir: str) -> tuple[dict[str, Any], dict[str, StageResult]]:
    """sweep.json and every stage it lists."""
    summary = _read_json(os.path.join(sweep_dir, "sweep.json"))
    if not isinstance(summary, dict):
        raise FileNotFoundError(f"{sweep_dir}: no readable sweep.json; is it a sweep work directory? "
                                "(`launch.py sweep` writes it when it starts)")
    stages = {d: read_stage(sweep_dir, d, info) for d, info in (summary.get("stages") or {}).items()}
    for point in summary.get("points") or []:  # a stage a point names but the stage list lacks
        for name, d in point["stages"].items():
            if d not in stages:
                stages[d] = read_stage(sweep_dir, d, {"kind": "pretrain" if name == "pretrain" else "finetune",
                                                      "task": name})
    return summary, stages


def _axis_column(name: str) -> str:
    return f"axis_{name}" if name in _FIXED_COLUMNS else name


def csv_rows(summary: Mapping[str, Any], stages: Mapping[str, StageResult]) -> list[dict[str, Any]]:
    """One row per point x seed x metric; a stage without metrics (failed, not run) gets one row, value empty."""
    rows = []
    for point in summary.get("points") or []:
        base = {"point": point["label"], "seed": point["seed"],
                **{_axis_column(a["name"]): point["values"].get(a["name"], "") for a in summary.get("axes") or []}}
        for stage_name, directory in point["stages"].items():
            result = stages[directory]
            common = {"stage": stage_name, "status": result.status, "error": result.error, "directory": directory}
            if not result.metrics:
                rows.append({**base, **common, "metric": "", "value": ""})
            for metric, value in result.metrics.items():
                rows.append({**base, **common, "metric": metric, "value": value})
    return rows


def write_csv(path: str, summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    axes = [_axis_column(a["name"]) for a in summary.get("axes") or []]
    columns = ["point", "seed", *axes, "stage", "metric", "value", "status", "error", "directory"]
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def headline_metrics(summary: Mapping[str, Any], stages: Mapping[str, StageResult]) -> list[str]:
    """sweep.json's metrics; else pretraining eval accuracy and each task's main metric (test, else eval)."""
    if summary.get("metrics"):
        return list(summary["metrics"])
    out = ["pretrain/accuracy"] if any(s.stage == "pretrain" for s in stages.values()) else []
    for task in summary.get("tasks") or []:
        done = [s for s in stages.values() if s.stage == task and s.status == "done"]
        main = next((s.main_metric for s in done if s.main_metric), "accuracy")
        on_test = not done or any(f"{task}/test/{main}" in s.metrics for s in done)
        out.append(f"{task}/{'test' if on_test else 'eval'}/{main}")
    return out


def _reaches(axis: Mapping[str, Any], stage: str) -> bool:
    """Whether an axis changes a stage: its own keys, all fine-tunes' keys, or the pretraining they start from."""
    heads = {key.split(".")[0] for key in axis.get("keys") or []}
    return stage in heads or (stage != "pretrain" and bool(heads & {"finetune", "pretrain"}))


def groups(summary: Mapping[str, Any], stage: str) -> tuple[list[Group], list[Mapping[str, Any]]]:
    """The distinct configurations of a stage, in sweep order, and the axes that reach it."""
    axes = [a for a in summary.get("axes") or [] if _reaches(a, stage)]
    found: dict[str, Group] = {}
    for point in summary.get("points") or []:
        if stage not in point["stages"]:
            continue
        values = {a["name"]: point["values"].get(a["name"], "") for a in axes}
        label = ",".join(f"{k}={v}" for k, v in values.items()) or "base"
        found.setdefault(label, Group(values, label, {})).dirs.setdefault(point["seed"], point["stages"][stage])
    return list(found.values()), axes


def seed_values(group: Group, metric: str, stages: Mapping[str, StageResult]) -> dict[int, float]:
    return {seed: stages[d].metrics[metric] for seed, d in group.dirs.items() if metric in stages[d].metrics}


def verdict(metric: str, diff: stats.Interval) -> str:
    """The comparison in a sentence a reader can act on."""
    level = f"{diff.confidence:.0%}"
    if not (math.isfinite(diff.low) and math.isfinite(diff.high)):
        return f"too few seeds for an interval (at least 2 {'pairs' if diff.n_b is None else 'per side'} needed)"
    if diff.includes_zero:
        return f"the interval includes zero: no difference detected at {level}"
    lo, hi = sorted((abs(diff.low), abs(diff.high)))
    direction = "higher" if diff.estimate > 0 else "lower"
    return (f"the interval excludes zero: {metric} is {direction} by {abs(diff.estimate):.4f} "
            f"({level} interval {lo:.4f} to {hi:.4f})")


def comparisons(metric: str, summary: Mapping[str, Any], stages: Mapping[str, StageResult]) -> list[dict[str, Any]]:
    """Each value of each axis against the axis's first value, the other axes held at the same values."""
    found, axes = groups(summary, metric.split("/")[0])
    by_values = {tuple(g.values.values()): g for g in found}
    paired = bool(summary.get("paired"))
    out = []
    for i, axis in enumerate(axes):
        baseline = axis["labels"][0]
        for key, base_group in by_values.items():
            if key[i] != baseline:
                continue
            a = seed_values(base_group, metric, stages)
            for label in axis["labels"][1:]:
                other = by_values.get(key[:i] + (label,) + key[i + 1:])
                if other is None:
                    continue
                b = seed_values(other, metric, stages)
                if paired:
                    seeds = sorted(s for s in a.keys() & b.keys() if math.isfinite(a[s]) and math.isfinite(b[s]))
                    xa, xb = [a[s] for s in seeds], [b[s] for s in seeds]
                else:
                    xa, xb = list(a.values()), list(b.values())
                diff = stats.difference_interval(xa, xb, CONFIDENCE, paired=paired)
                held = {k: v for k, v in base_group.values.items() if k != axis["name"]}
                out.append({"metric": metric, "axis": axis["name"], "baseline": baseline, "value": label,
                            "held": held, "interval": diff, "verdict": verdict(metric, diff)})
    return out


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _number(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def _missing_cell(result: StageResult) -> str:
    """Why a seed has no value: its stage's status, or '-' for a finished run that does not report the metric."""
    return "-" if result.status == "done" else _STATUS_WORDS.get(result.status, result.status)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def metric_section(metric: str, summary: Mapping[str, Any], stages: Mapping[str, StageResult],
                   plot_paths: Sequence[str], sweep_dir: str) -> tuple[list[str], dict[str, stats.Interval],
                                                                       list[dict[str, Any]]]:
    """A headline metric's table (one row per configuration), plots and comparisons, as Markdown lines."""
    found, axes = groups(summary, metric.split("/")[0])
    lines = [f"## {metric}", ""]
    if not any(seed_values(g, metric, stages) for g in found):
        known = sorted({m for s in stages.values() for m in s.metrics if m.split("/")[0] == metric.split("/")[0]})
        hint = f" Metrics of this stage: {', '.join(known)}." if known else ""
        return lines + [f"No finished stage reports {metric} yet.{hint}", ""], {}, []
    lines += [f"![{os.path.basename(p)[:-4]}]({os.path.relpath(p, sweep_dir)})" for p in plot_paths]
    lines += [""] if plot_paths else []
    seeds = list(summary.get("seeds") or sorted({s for g in found for s in g.dirs}))
    header = [*(a["name"] for a in axes), f"mean [{CONFIDENCE:.0%} interval]", "n seeds", *(f"seed {s}" for s in seeds)]
    rows, means = [], {}
    for group in found:
        values = seed_values(group, metric, stages)
        means[group.label] = interval = stats.mean_interval(list(values.values()), CONFIDENCE)
        per_seed = [_number(values[s]) if s in values else _missing_cell(stages[group.dirs[s]]) if s in group.dirs
                    else "" for s in seeds]
        rows.append([*group.values.values(), interval.format(4), interval.n, *per_seed])
    lines += _table(header, rows) + [""]
    compared = comparisons(metric, summary, stages)
    if compared:
        how = "paired by seed (seeds finished in both)" if summary.get("paired") else "unpaired (Welch)"
        lines += [f"Comparisons with each axis's first value, {how}: difference = value - baseline.", ""]
        crows = []
        for c in compared:
            diff = c["interval"]
            n = f"{diff.n} pairs" if diff.n_b is None else f"{diff.n} vs {diff.n_b}"
            p = f"{diff.p_value:.3g}" if math.isfinite(diff.p_value) else "-"
            held = ", ".join(f"{k}={v}" for k, v in c["held"].items()) or "-"
            crows.append([c["axis"], f"{c['value']} vs {c['baseline']}", held, diff.format(4), p, n, c["verdict"]])
        lines += _table(["axis", "value vs baseline", "other axes", f"difference [{CONFIDENCE:.0%} interval]", "p",
                         "n", "reading"], crows) + [""]
    return lines, means, compared


def make_plots(sweep_dir: str, summary: Mapping[str, Any], stages: Mapping[str, StageResult],
               metrics: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Metric-vs-axis plots per headline metric, and training-curve plots per stage name."""
    folder = os.path.join(sweep_dir, "plots")
    os.makedirs(folder, exist_ok=True)
    by_metric: dict[str, list[str]] = {}
    for metric in metrics:
        found, axes = groups(summary, metric.split("/")[0])
        for i, axis in enumerate(axes):
            if len(axis["labels"]) < 2:
                continue
            others = [a["name"] for j, a in enumerate(axes) if j != i]
            lines: dict[tuple[str, ...], dict[str, list[float]]] = {}
            for g in found:
                key = tuple(g.values[n] for n in others)
                lines.setdefault(key, {})[g.values[axis["name"]]] = list(seed_values(g, metric, stages).values())
            series = [(", ".join(f"{n}={v}" for n, v in zip(others, key)),
                       [per.get(label, []) for label in axis["labels"]]) for key, per in lines.items()]
            path = os.path.join(folder, f"{plots.safe_name(metric)}_vs_{plots.safe_name(axis['name'])}.png")
            if plots.metric_vs_axis(path, metric, axis["name"], axis["labels"], series, ", ".join(others)):
                by_metric.setdefault(metric, []).append(path)
    curves = []
    for stage in ["pretrain", *(summary.get("tasks") or [])]:
        runs = [(g.label, [plots.train_curve(os.path.join(sweep_dir, d)) for d in g.dirs.values()])
                for g in groups(summary, stage)[0]]
        title = "pretraining" if stage == "pretrain" else f"fine-tuning {stage}"
        path = plots.training_curves(os.path.join(folder, f"curves_{plots.safe_name(stage)}.png"), title, runs)
        if path:
            curves.append(path)
    return by_metric, curves


def _axis_line(axis: Mapping[str, Any]) -> str:
    labels = ", ".join(map(str, axis["labels"]))
    return f"**{axis['name']}** ({', '.join(axis['keys'])}): {labels} (baseline {axis['labels'][0]})"


def _budget(budget: Mapping[str, Any] | None) -> str:
    if not budget:
        return "none (each pretraining config's train.steps)"
    return f"{budget['kind']} = {budget['value']:g} per pretraining run"


def _header(summary: Mapping[str, Any], stages: Mapping[str, StageResult], counts: Mapping[str, int]) -> list[str]:
    code = summary.get("code") or {}
    budget = summary.get("budget")
    hours = {k: sum(s.metrics.get(f"{s.stage}/duration_s", 0.0) for s in stages.values()
                    if (s.stage == "pretrain") == (k == "pretraining")) / 3600 for k in ("pretraining", "fine-tuning")}
    status = ", ".join(f"{n} {_STATUS_WORDS.get(s, s)}" for s, n in counts.items())
    return [
        f"# Sweep report: {summary.get('name', '?')}", "",
        f"- sweep config: `{summary.get('sweep_config') or 'unknown'}`",
        f"- code: commit `{code.get('commit', 'unknown')}`"
        f"{' with uncommitted changes (dirty)' if code.get('dirty') else ' (clean)' if code else ''}",
        f"- sweep started: {summary.get('written', 'unknown')}; report written: {time.strftime('%Y-%m-%dT%H:%M:%S')}",
        "- axes: " + ("; ".join(map(_axis_line, summary.get("axes") or [])) or "none (one configuration)"),
        f"- seeds: {', '.join(map(str, summary.get('seeds') or []))}; differences "
        f"{'paired by seed' if summary.get('paired') else 'unpaired (Welch)'}",
        f"- budget: {_budget(budget)}",
        f"- tasks: {', '.join(summary.get('tasks') or []) or 'none (pretraining only)'}",
        f"- stages: {len(stages)} in all: {status or 'none'}",
        f"- compute in finished stages: {hours['pretraining']:.2f} h pretraining, {hours['fine-tuning']:.2f} h "
        "fine-tuning (wall clock, summed over stages)",
        "- all numbers: [results.csv](results.csv)", "",
    ]


def write_report(sweep_dir: str) -> dict[str, Any]:
    """Writes results.csv, plots/*.png and report.md into a sweep work directory; returns their paths, the stage
    counts, the headline metrics and, per metric, the intervals and comparisons the report shows."""
    summary, stages = load(sweep_dir)
    counts: dict[str, int] = {}
    for result in stages.values():
        counts[result.status] = counts.get(result.status, 0) + 1
    counts = dict(sorted(counts.items(), key=lambda kv: ("done", "failed").index(kv[0])
                         if kv[0] in ("done", "failed") else 2))
    csv_path = write_csv(os.path.join(sweep_dir, "results.csv"), summary, rows := csv_rows(summary, stages))
    metrics = headline_metrics(summary, stages)
    lines = _header(summary, stages, counts)
    finished = counts.get("done", 0)
    by_metric, curves = make_plots(sweep_dir, summary, stages, metrics) if finished else ({}, [])
    means: dict[str, dict[str, stats.Interval]] = {}
    compared: dict[str, list[dict[str, Any]]] = {}
    if not finished:
        lines += ["**No stage has finished yet**: there are no results to summarise. "
                  + ("Every stage that ran failed; see below." if counts.get("failed") == len(stages) and stages
                     else f"Run `python launch.py sweep {summary.get('sweep_config') or '<config>'} "
                     f"--workdir={sweep_dir}` (it resumes), then report again."), ""]
    curve_points: dict[str, Any] = {}
    if finished and summary.get("curve"):
        from plm_jax.sweep import curve

        section, pngs, curve_points = curve.curve_section(sweep_dir, metrics, summary, stages)
        lines += section
        by_metric.setdefault("_curve", []).extend(pngs)
    for metric in metrics if finished else []:
        section, means[metric], compared[metric] = metric_section(metric, summary, stages, by_metric.get(metric, []),
                                                                  sweep_dir)
        lines += section
    if any(compared.values()):
        lines += ["Each comparison is at 95% on its own: among many comparisons with no real difference, about one "
                  "in twenty excludes zero by chance.", ""]
    if curves:
        lines += ["## Training curves", ""] + [f"![{os.path.basename(p)}]({os.path.relpath(p, sweep_dir)})"
                                               for p in curves] + [""]
    failed = [s for s in stages.values() if s.status == "failed"]
    lines += ["## Failed stages", ""]
    lines += [f"- `{s.directory}` ({s.stage}): {_cell(s.error or 'no error recorded')}" for s in failed] or ["none"]
    pending = [s for s in stages.values() if s.status not in ("done", "failed")]
    if pending:
        lines += ["", "## Stages not finished", ""]
        lines += [f"- `{s.directory}`: {_STATUS_WORDS.get(s.status, s.status)}" for s in pending]
    report = os.path.join(sweep_dir, "report.md")
    write_atomic(report, "\n".join(lines) + "\n")
    return {"report": report, "csv": csv_path, "plots": [p for ps in by_metric.values() for p in ps] + curves,
            "counts": counts, "rows": len(rows), "metrics": metrics, "means": means, "comparisons": compared,
            "curve": curve_points}
