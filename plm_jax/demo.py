"""The whole thesis on real offline data, on CPU: pretrain for an hour, then learning curves that show where the
pretraining pays.

    python launch.py demo --workdir runs/demo [--pretrained runs/cpu_hour] [--sizes 100+1000+0] [--seeds 3]

1. Pretrain the CPU-hour recipe (configs/pretrain/cpu_hour.py, about 55 minutes on 2 cores) in `<workdir>/cpu_hour`,
   or reuse a finished run.
2. For Rotten Tomatoes sentiment and the 11 Wikipedia topics: the learning-curve sweep of configs/sweeps/curve.py
   (fine-tunes from random weights, from the recipe's model and from the imported all-MiniLM-L6-v2, on stratified
   subsets of each size, one per seed), then its report (`<workdir>/curve_<task>/report.md`, curve.csv, plots/).
3. Print one table (test accuracy and macro-F1, mean [95% interval], each start minus random init paired by seed)
   and save it as demo_results.json; each task's curve is its report's plots/curve_<task>_test_accuracy.png.

Every step resumes: run the command again after an interruption and finished fine-tunes are read back.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import ml_collections

from plm_jax.errors import UserError
from plm_jax.sweep.stats import Interval

log = logging.getLogger("plm_jax")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "configs", "pretrain", "cpu_hour.py")
CURVE = os.path.join(ROOT, "configs", "sweeps", "curve.py")
TASKS = ("rotten_tomatoes", "wiki_topics")
# TF-IDF + logistic regression on a stratified 80/20 split, seed 0 (`python benchmarks/tfidf_baseline.py`).
REFERENCE = {"rotten_tomatoes": 0.783, "wiki_topics": 0.902}
METRICS = ("accuracy", "f1_macro")


def demo_configs() -> list[ml_collections.ConfigDict]:
    """The configs the demo runs in its own process (launch.py sizes the CPU devices to fit them); each fine-tune
    is a sweep stage that sizes its own."""
    from plm_jax.sweep.spec import load_python_config

    return [load_python_config(RECIPE)]


def curve_argument(task: str, pretrained: str, sizes: str, seeds: int, minilm: bool, settings: str = "") -> str:
    """The configs/sweeps/curve.py argument of one task's curve."""
    parts = [task, f"pretrained={pretrained}", f"sizes={sizes}", f"seeds={seeds}", f"minilm={int(minilm)}"]
    return ",".join(parts + ([settings] if settings else []))


def run_demo(workdir: str, pretrained: str | None = None, *, tasks: Sequence[str] = TASKS, sizes: str = "100+1000+0",
             seeds: int = 3, minilm: bool = True, workers: int = 2, settings: str = "") -> dict[str, Any]:
    from plm_jax.run import train
    from plm_jax.sweep.report import write_report
    from plm_jax.sweep.runner import run_sweep

    os.makedirs(workdir, exist_ok=True)
    if pretrained is None:
        pretrained = os.path.join(workdir, "cpu_hour")
        log.info("demo 1/3: pretraining the CPU-hour recipe in %s (about an hour on 2 cores)", pretrained)
        results = train(demo_configs()[0], pretrained)
        if "interrupted_at" in results:
            raise KeyboardInterrupt(f"interrupted during {pretrained}; run the demo again to resume")
    elif not os.path.isdir(os.path.join(pretrained, "checkpoints")):
        raise FileNotFoundError(f"--pretrained {pretrained}: not a pretraining run (no checkpoints/ in it)")

    rows, reports, curves, failed = [], {}, [], 0
    for n, task in enumerate(tasks, 1):
        sweep_dir = os.path.join(workdir, f"curve_{task}")
        log.info("demo 2/3: learning curve %d of %d, %s, in %s", n, len(tasks), task, sweep_dir)
        argument = curve_argument(task, pretrained, sizes, seeds, minilm, settings)
        if run_sweep(f"{CURVE}:{argument}", sweep_dir, workers)["interrupted"]:
            raise KeyboardInterrupt(f"interrupted during {sweep_dir}; run the demo again to resume")
        report = write_report(sweep_dir)
        reports[task] = report["report"]
        curves += [p for p in report["plots"] if os.path.basename(p).startswith("curve_")]
        failed += report["counts"].get("failed", 0)
        rows += curve_rows(task, report["curve"])
    summary = {"pretrained": pretrained, "sizes": sizes, "seeds": seeds, "rows": rows, "reports": reports,
               "curves": curves, "tfidf_reference_accuracy": {t: REFERENCE[t] for t in tasks if t in REFERENCE}}
    with open(os.path.join(workdir, "demo_results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=_interval_json)
    print(demo_table(rows))
    print(f"TF-IDF + logistic regression reference accuracy (all labels): {summary['tfidf_reference_accuracy']}")
    print(f"written: {os.path.join(workdir, 'demo_results.json')}; reports: {', '.join(reports.values())}; "
          f"curves: {', '.join(curves)}")
    if failed:
        raise UserError(f"{failed} fine-tune(s) of the demo failed: their errors are in the reports above; run the "
                        "demo again to retry them")
    return summary


def curve_rows(task: str, points_by_metric: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (labels, start): each metric's mean and interval, and its paired difference from random init."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for metric in METRICS:
        for point in points_by_metric.get(f"{task}/test/{metric}", []):
            row = rows.setdefault((point.x_label, point.line), {
                "task": task, "labels": point.x_label, "train_examples": point.examples, "start": point.line,
                "seeds": len(point.values)})
            row[metric] = point.interval
            if point.difference is not None and point.difference.n:
                row[f"{metric}_gain"] = point.difference
    return list(rows.values())


def _interval_json(interval: Interval) -> list[float | None]:
    """[estimate, low, high], null where undefined (one seed)."""
    return [None if not math.isfinite(v) else float(v) for v in (interval.estimate, interval.low, interval.high)]


def demo_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table (the README's is this output)."""
    header = ["task", "labels", "start", "seeds", "test acc [95%]", "gain vs random init", "test macro-F1 [95%]",
              "gain vs random init"]
    body = [[r["task"], r["labels"] if r["labels"] != "all" else f"all ({r['train_examples']:.0f})", r["start"],
             r["seeds"], *(r[k].format(3, signed=k.endswith("_gain")) if k in r else ""
                           for k in ("accuracy", "accuracy_gain", "f1_macro", "f1_macro_gain"))] for r in rows]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in [header, ["---"] * len(header), *body])
