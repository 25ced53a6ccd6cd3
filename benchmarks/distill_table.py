"""Teacher, students and their int8 weights side by side: test accuracy and macro-F1 (mean and 95% interval over
seeds), encoder FLOPs per token, parameters, size on disk, and predict throughput on this machine.

    python benchmarks/distill_table.py --task rotten_tomatoes   # after configs/sweeps/distill.py's commands

- Accuracy: the teachers' and the sweep's students' results.json (test split); int8 rows evaluate `best_int8/`
  (`launch.py evaluate --int8`, once: a rerun reads eval_results_int8.json) of every seed, with the paired change
  against the same run's float weights.
- Throughput: seed 0 of the teacher and of the last student predict the tokenized test split in the run's eval
  batches, once to compile, then `--repeats` times, the models taking turns so that the machine's noise falls on
  all alike; the median examples/s, and each model's ratio to the float teacher's. Tokenizing is left out: it is the
  same for every model.
- Writes <sweep>/distill_table.md and distill_table.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import numpy as np

from plm_jax.compress.int8 import nbytes
from plm_jax.inference import disk_bytes, evaluate
from plm_jax.models.flops import encoder_flops_per_token
from plm_jax.run import LoadedRun, int8_dir, load
from plm_jax.sweep.stats import difference_interval, mean_interval
from plm_jax.train.rundir import BEST, RunDir

METRICS = ("accuracy", "f1_macro")


def test_metrics(run: str, int8: bool) -> dict[str, float]:
    """Test metrics of the float weights (results.json) or of the int8 ones (eval_results_int8.json, written by
    `evaluate --int8` on the first call)."""
    if int8:
        saved = os.path.join(run, "eval_results_int8.json")
        if os.path.isfile(saved):
            with open(saved, encoding="utf-8") as f:
                results = json.load(f)
            if "test" in results:
                return results["test"]
        return evaluate(run, ("test",), int8=True)["test"]
    with open(os.path.join(run, "results.json"), encoding="utf-8") as f:
        return json.load(f)["test"]


def student_runs(sweep_dir: str, task: str) -> dict[str, dict[int, str]]:
    """Student label -> seed -> run directory, from the sweep's plan."""
    with open(os.path.join(sweep_dir, "sweep.json"), encoding="utf-8") as f:
        plan = json.load(f)
    runs: dict[str, dict[int, str]] = {}
    for point in plan["points"]:
        runs.setdefault(point["values"]["student"], {})[point["seed"]] = os.path.join(sweep_dir,
                                                                                      point["stages"][task])
    return runs


def examples_per_second(models: dict[str, LoadedRun], repeats: int) -> dict[str, float]:
    arrays = {name: run.task.split("test").arrays for name, run in models.items()}
    for name, run in models.items():
        run.outputs(arrays[name])  # compiles
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, run in models.items():
            start = time.perf_counter()
            run.outputs(arrays[name])
            times[name].append(time.perf_counter() - start)
    return {name: len(next(iter(arrays[name].values()))) / statistics.median(t) for name, t in times.items()}


def describe(run: str, int8: bool) -> dict[str, float]:
    rundir = RunDir(run)
    loaded = load(run, int8=int8)
    cfg = rundir.model_info().model_cfg
    seq_len = int(loaded.task.config.task.seq_len)
    return {"params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(loaded.setup.abstract_params)),
            "param_bytes": nbytes(loaded.params),
            "disk_bytes": disk_bytes(int8_dir(rundir) if int8 else rundir.file(BEST)),
            "encoder_flops_per_token": encoder_flops_per_token(cfg, seq_len)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=("rotten_tomatoes", "wiki_topics"))
    parser.add_argument("--teachers", default="", help="default runs/teachers_<task>")
    parser.add_argument("--sweep", default="", help="default runs/distill_<task>")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    teachers_dir = args.teachers or f"runs/teachers_{args.task}"
    sweep_dir = args.sweep or f"runs/distill_{args.task}"
    students = student_runs(sweep_dir, args.task)
    seeds = sorted(next(iter(students.values())))
    lines = {"teacher": {s: os.path.join(teachers_dir, f"seed={s}") for s in seeds}, **students}
    last = list(students)[-1]
    rows: list[tuple[str, dict[int, str], bool]] = [("teacher", lines["teacher"], False),
                                                    ("teacher, int8", lines["teacher"], True)]
    rows += [(f"student: {name}", runs, False) for name, runs in students.items()]
    rows.append((f"student: {last}, int8", students[last], True))

    table = []
    for name, runs, int8 in rows:
        values = {m: {s: float(test_metrics(d, int8)[m]) for s, d in runs.items()} for m in METRICS}
        row = {"model": name, "runs": runs, "int8": int8, **describe(runs[seeds[0]], int8)}
        for m in METRICS:
            row[m] = mean_interval(list(values[m].values()))
            row[f"{m}_by_seed"] = values[m]
            if int8:  # the change from the same runs' float weights, paired by seed
                floats = {s: float(test_metrics(d, False)[m]) for s, d in runs.items()}
                row[f"{m}_int8_change"] = difference_interval([floats[s] for s in seeds],
                                                              [values[m][s] for s in seeds], paired=True)
        table.append(row)

    models = {"teacher": load(lines["teacher"][seeds[0]]), "teacher, int8": load(lines["teacher"][seeds[0]], True),
              "student": load(students[last][seeds[0]]), "student, int8": load(students[last][seeds[0]], True)}
    speed = examples_per_second(models, args.repeats)
    for row in table:
        key = ("teacher" if row["model"].startswith("teacher") else "student") + (", int8" if row["int8"] else "")
        row["examples_per_s"] = speed[key]
        row["speedup"] = speed[key] / speed["teacher"]

    teacher = table[0]
    head = ("| model | test accuracy [95%] | of the teacher's | test macro-F1 [95%] | encoder FLOPs/token | "
            "parameters | size on disk | predict examples/s (x teacher) |")
    out = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for row in table:
        share = row["accuracy"].estimate / teacher["accuracy"].estimate
        change = f" ({row['accuracy_int8_change'].format(3, signed=True)})" if row["int8"] else ""
        out.append(f"| {row['model']} | {row['accuracy'].format(3)}{change} | {share:.1%} | "
                   f"{row['f1_macro'].format(3)} | "
                   f"{row['encoder_flops_per_token'] / 1e6:.1f} M ({row['encoder_flops_per_token'] / teacher['encoder_flops_per_token']:.2f}x) | "  # noqa: E501
                   f"{row['params'] / 1e6:.1f} M | {row['disk_bytes'] / 2**20:.1f} MiB | "
                   f"{row['examples_per_s']:.0f} ({row['speedup']:.1f}x) |")
    markdown = "\n".join(out)
    print(markdown)
    with open(os.path.join(sweep_dir, "distill_table.md"), "w", encoding="utf-8") as f:
        f.write(markdown + "\n")
    with open(os.path.join(sweep_dir, "distill_table.json"), "w", encoding="utf-8") as f:
        json.dump(table, f, indent=2, default=lambda x: x.__dict__ if hasattr(x, "__dict__") else str(x))


if __name__ == "__main__":
    main()
