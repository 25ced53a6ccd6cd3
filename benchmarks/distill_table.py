"""Teacher, students, pruned teachers and int8 weights side by side: test accuracy and macro-F1 (mean and 95%
interval over seeds), encoder FLOPs per token, parameters, size on disk, peak memory and predict throughput on this
machine.

    python benchmarks/distill_table.py --task rotten_tomatoes   # after configs/sweeps/distill.py's commands
    python benchmarks/distill_table.py --task rotten_tomatoes --sweep runs/distill_rotten_tomatoes \
        --sweep "runs/distill_general_rotten_tomatoes=general student" --sweep runs/prune_rotten_tomatoes

- Rows: the teachers, then every axis value of every `--sweep` (its axis name, or the title after `=`, then the
  value), then int8 rows for the teacher and for the first sweep's last row.
- Accuracy: the teachers' and the sweeps' results.json (test split); int8 rows evaluate `best_int8/`
  (`launch.py evaluate --int8`, once: a rerun reads eval_results_int8.json) of every seed, with the paired change
  against the same run's float weights.
- Throughput: seed 0 of each row predicts the tokenized test split in the run's eval batches, once to compile, then
  `--repeats` times, the models taking turns so that the machine's noise falls on all alike; the median examples/s,
  and each model's ratio to the float teacher's. Rows of one shape share one measurement. Tokenizing is left out:
  it is the same for every model.
- Peak memory: the peak resident set (Linux VmHWM, reset at the child's start) of a fresh process that loads
  seed 0 of the row and predicts the test split once; imports and the tokenized split are in every row alike, so
  the differences between rows are what the models add.
- Writes <first sweep>/distill_table.md and distill_table.json.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and "--peak-rss" in sys.argv:  # before the imports: the peak is this process's own
    with open("/proc/self/clear_refs", "w") as clear:  # a forked child starts with its parent's peak (VmHWM)
        clear.write("5")

import argparse
import json
import os
import statistics
import subprocess
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


def sweep_rows(sweep_dir: str, task: str, title: str = "") -> dict[str, dict[int, str]]:
    """Row name ("<axis or title>: <value>") -> seed -> run directory, from the sweep's plan."""
    with open(os.path.join(sweep_dir, "sweep.json"), encoding="utf-8") as f:
        plan = json.load(f)
    runs: dict[str, dict[int, str]] = {}
    for point in plan["points"]:
        (axis, value), = point["values"].items()
        runs.setdefault(f"{title or axis}: {value}", {})[point["seed"]] = os.path.join(sweep_dir,
                                                                                      point["stages"][task])
    return runs


def peak_rss_mib(run: str, int8: bool) -> float:
    """The peak resident memory of a fresh process that predicts the test split with `run` (MiB)."""
    command = [sys.executable, __file__, "--peak-rss", run] + (["--int8"] if int8 else [])
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def _measure_peak_rss(run: str, int8: bool) -> None:
    loaded = load(run, int8=int8)
    loaded.outputs(loaded.task.split("test").arrays)
    with open("/proc/self/status", encoding="ascii") as status:  # Linux; VmHWM is in kB
        peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(peak_kib / 1024)


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
    parser.add_argument("--task", choices=("rotten_tomatoes", "wiki_topics"))
    parser.add_argument("--teachers", default="", help="default runs/teachers_<task>")
    parser.add_argument("--sweep", action="append", default=[],
                        help="a sweep directory, =TITLE for its rows' name; repeatable (default runs/distill_<task>)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak-rss", default="", help=argparse.SUPPRESS)  # the child process of peak_rss_mib
    parser.add_argument("--int8", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_rss:
        return _measure_peak_rss(args.peak_rss, args.int8)
    if not args.task:
        parser.error("--task is required")
    teachers_dir = args.teachers or f"runs/teachers_{args.task}"
    sweeps = [spec.partition("=")[::2] for spec in args.sweep or [f"runs/distill_{args.task}"]]
    students: dict[str, dict[int, str]] = {}
    for directory, title in sweeps:
        students.update(sweep_rows(directory, args.task, title))
    first = sweep_rows(sweeps[0][0], args.task, sweeps[0][1])
    seeds = sorted(next(iter(first.values())))
    teacher_runs = {s: os.path.join(teachers_dir, f"seed={s}") for s in seeds}
    last = list(first)[-1]
    rows: list[tuple[str, dict[int, str], bool]] = [("teacher", teacher_runs, False),
                                                    ("teacher, int8", teacher_runs, True)]
    rows += [(name, runs, False) for name, runs in students.items()]
    rows.append((f"{last}, int8", students[last], True))

    table = []
    for name, runs, int8 in rows:
        values = {m: {s: float(test_metrics(d, int8)[m]) for s, d in runs.items()} for m in METRICS}
        row = {"model": name, "runs": runs, "int8": int8, **describe(runs[min(runs)], int8)}
        for m in METRICS:
            row[m] = mean_interval(list(values[m].values()))
            row[f"{m}_by_seed"] = values[m]
            if int8:  # the change from the same runs' float weights, paired by seed
                floats = {s: float(test_metrics(d, False)[m]) for s, d in runs.items()}
                row[f"{m}_int8_change"] = difference_interval([floats[s] for s in runs],
                                                              [values[m][s] for s in runs], paired=True)
        table.append(row)

    def shape_key(row: dict) -> str:
        run = row["runs"][min(row["runs"])]
        return json.dumps([RunDir(run).model_info().model_cfg.to_dict(), row["int8"]], sort_keys=True)

    measured = {}  # one run per distinct shape
    for row in table:
        measured.setdefault(shape_key(row), (row["runs"][min(row["runs"])], row["int8"]))
    models = {key: load(run, int8) for key, (run, int8) in measured.items()}
    speed = examples_per_second(models, args.repeats)
    del models
    peak = {key: peak_rss_mib(run, int8) for key, (run, int8) in measured.items()}
    for row in table:
        row["examples_per_s"] = speed[shape_key(row)]
        row["speedup"] = row["examples_per_s"] / speed[shape_key(table[0])]
        row["peak_rss_mib"] = peak[shape_key(row)]

    teacher = table[0]
    head = ("| model | test accuracy [95%] | of the teacher's | test macro-F1 [95%] | encoder FLOPs/token | "
            "parameters | size on disk | peak memory | predict examples/s (x teacher) |")
    out = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for row in table:
        share = row["accuracy"].estimate / teacher["accuracy"].estimate
        change = f" ({row['accuracy_int8_change'].format(3, signed=True)})" if row["int8"] else ""
        out.append(f"| {row['model']} | {row['accuracy'].format(3)}{change} | {share:.1%} | "
                   f"{row['f1_macro'].format(3)} | "
                   f"{row['encoder_flops_per_token'] / 1e6:.1f} M ({row['encoder_flops_per_token'] / teacher['encoder_flops_per_token']:.2f}x) | "  # noqa: E501
                   f"{row['params'] / 1e6:.1f} M | {row['disk_bytes'] / 2**20:.1f} MiB | "
                   f"{row['peak_rss_mib']:.0f} MiB | "
                   f"{row['examples_per_s']:.0f} ({row['speedup']:.1f}x) |")
    markdown = "\n".join(out)
    print(markdown)
    with open(os.path.join(sweeps[0][0], "distill_table.md"), "w", encoding="utf-8") as f:
        f.write(markdown + "\n")
    with open(os.path.join(sweeps[0][0], "distill_table.json"), "w", encoding="utf-8") as f:
        json.dump(table, f, indent=2, default=lambda x: x.__dict__ if hasattr(x, "__dict__") else str(x))


if __name__ == "__main__":
    main()
