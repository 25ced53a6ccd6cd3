"""The sweep report on hand-written sweep directories with known numbers: CSV rows, intervals, comparisons,
failed and unfinished stages, and the PNG plots. No model is trained."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from collections.abc import Callable
from typing import Any

import matplotlib.image
import pytest
import scipy.stats

from plm_jax.sweep.report import write_report
from plm_jax.sweep.stats import difference_interval, mean_interval

AXES = [{"name": "mask_rate", "keys": ["pretrain.data.mask_rate"], "labels": ["0.15", "0.3"]},
        {"name": "lr", "keys": ["finetune.train.lr"], "labels": ["1e-4", "3e-4"]}]
SEEDS = [0, 1, 2]
# pretraining eval accuracy by mask_rate: clearly separated
PRETRAIN_ACC = {"0.15": [0.40, 0.41, 0.42], "0.3": [0.50, 0.52, 0.51]}
# rt test accuracy by (mask_rate, lr): lr makes no clear difference (the seeds overlap)
RT_ACC = {("0.15", "1e-4"): [0.70, 0.75, 0.72], ("0.15", "3e-4"): [0.74, 0.69, 0.73],
          ("0.3", "1e-4"): [0.78, 0.80, 0.79], ("0.3", "3e-4"): [0.77, 0.81, 0.78]}
OOM = "RESOURCE_EXHAUSTED: out of memory allocating 4.2GiB | on device 0"

Status = Callable[[str, dict[str, str], int], tuple[str, str]]  # (stage, axis values, seed) -> (status, error)


def _write(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def _jsonl(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def _done(stage: str, values: dict[str, str], seed: int) -> tuple[str, str]:
    return "done", ""


def make_sweep(root: str, status: Status = _done, metrics: tuple[str, ...] = ("pretrain/accuracy",
               "rt/test/accuracy"), paired: bool = True) -> str:
    """A sweep directory as runner.py leaves it: two axes (pretraining, fine-tuning), one task, three seeds."""
    points, stages = [], {}
    for labels in itertools.product(*(a["labels"] for a in AXES)):
        values = dict(zip((a["name"] for a in AXES), labels))
        label = ",".join(f"{k}={v}" for k, v in values.items())
        for seed in SEEDS:
            pre = f"pretrain/mask_rate={values['mask_rate']},seed={seed}"
            fine = f"finetune/rt/{label},seed={seed}"
            points.append({"label": label, "values": values, "seed": seed, "stages": {"pretrain": pre, "rt": fine}})
            stages[pre] = {"kind": "pretrain", "task": "", "key": f"k-{pre}"}
            stages[fine] = {"kind": "finetune", "task": "rt", "key": f"k-{fine}"}
            for name, directory in (("pretrain", pre), ("rt", fine)):
                _write_stage(os.path.join(root, directory), name, values, seed, stages[directory]["key"],
                             *status(name, values, seed))
    _write(os.path.join(root, "sweep.json"), {
        "name": "mask_rate", "axes": AXES, "seeds": SEEDS, "budget": {"kind": "steps", "value": 600.0},
        "metrics": list(metrics), "paired": paired, "tasks": ["rt"], "points": points, "stages": stages,
        "sweep_config": "configs/sweeps/mask_rate.py", "code": {"commit": "abc123", "dirty": True},
        "written": "2024-05-01T10:00:00"})
    return root


def _write_stage(path: str, stage: str, values: dict[str, str], seed: int, key: str, status: str, error: str) -> None:
    if status == "missing":
        return
    _write(os.path.join(path, "sweep_stage.json"), {"status": status, "error": error or None, "key": key,
                                                    "kind": "pretrain" if stage == "pretrain" else "finetune",
                                                    "task": "" if stage == "pretrain" else stage,
                                                    "duration_s": 120.0 + seed})
    if status != "done":
        return
    if stage == "pretrain":
        acc = PRETRAIN_ACC[values["mask_rate"]][seed]
        end = {"step": 600, "split": "eval", "loss": 5.0 - acc, "accuracy": acc, "perplexity": 100.0, "tokens": 4860}
        _write(os.path.join(path, "results.json"), {"steps": 600, "eval_at_start": {**end, "step": 0},
                                                    "eval_at_end": end, "curves": "curves.png"})
        train = [{"step": s, "split": "train", "loss": 9.0 - s / 100 - seed * 0.1, "accuracy": 0.1} for s in
                 range(20, 620, 20)]
    else:
        acc = RT_ACC[values["mask_rate"], values["lr"]][seed]
        metrics = {"accuracy": acc, "f1": acc - 0.01, "loss": 0.6}
        _write(os.path.join(path, "results.json"), {
            "starting_point": {"kind": "plm_jax", "source": "x"}, "task": "classification", "main_metric": "accuracy",
            "steps": 300, "total_steps": 300, "train_examples": 1000,
            "best": {"step": 300, "epoch": 3, "metric": "accuracy", "metrics": {**metrics, "epoch": 3}},
            "test": {**metrics, "_signatures": {"x": "y"}}, "wall_s": 50.0})
        train = [{"step": s, "split": "train", "loss": 0.7 - s / 1000 + seed * 0.01} for s in range(20, 320, 20)]
    _jsonl(os.path.join(path, "metrics.jsonl"), train + [{"step": 600, "split": "eval", "loss": 1.0}])


def _read_csv(path: str) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _section(report: str, metric: str) -> str:
    return report.split(f"## {metric}\n", 1)[1].split("\n## ", 1)[0]


def _row(section: str, *cells: str) -> str:
    start = "| " + " | ".join(cells) + " |"
    rows = [line for line in section.splitlines() if line.startswith(start)]
    assert len(rows) == 1, (start, section)
    return rows[0]


@pytest.fixture
def sweep(tmp_path) -> tuple[str, dict[str, Any], str]:
    root = make_sweep(str(tmp_path / "sweep"))
    out = write_report(root)
    with open(out["report"], encoding="utf-8") as f:
        return root, out, f.read()


def test_csv_has_one_row_per_point_seed_metric(sweep):
    root, out, _ = sweep
    rows = _read_csv(out["csv"])
    assert list(rows[0])[:4] == ["point", "seed", "mask_rate", "lr"]
    assert {"stage", "metric", "value", "status", "error"} <= set(rows[0])
    # 12 points x (pretrain: accuracy, loss, perplexity, steps, duration_s + rt: 3 eval, 3 test, steps,
    # train_examples, duration_s)
    assert len(rows) == out["rows"] == 12 * (5 + 9)
    pick = [r for r in rows if r["point"] == "mask_rate=0.3,lr=3e-4" and r["seed"] == "1"]
    by_metric = {r["metric"]: r for r in pick}
    assert float(by_metric["rt/test/accuracy"]["value"]) == RT_ACC["0.3", "3e-4"][1]
    assert float(by_metric["rt/eval/f1"]["value"]) == pytest.approx(RT_ACC["0.3", "3e-4"][1] - 0.01)
    assert float(by_metric["pretrain/accuracy"]["value"]) == PRETRAIN_ACC["0.3"][1]
    assert float(by_metric["pretrain/steps"]["value"]) == 600
    assert float(by_metric["rt/duration_s"]["value"]) == 121.0
    assert by_metric["rt/test/accuracy"]["mask_rate"] == "0.3" and by_metric["rt/test/accuracy"]["lr"] == "3e-4"
    assert all(r["status"] == "done" and r["error"] == "" for r in pick)
    assert not any(m.startswith(("rt/test/_", "rt/eval/epoch", "pretrain/tokens", "pretrain/step,")) for m in by_metric)


def test_report_mean_and_interval_match_stats_and_scipy(sweep):
    _, out, report = sweep
    values = RT_ACC["0.15", "1e-4"]
    expected = mean_interval(values)
    low, high = scipy.stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 3, scale=scipy.stats.sem(values))
    assert expected.low == pytest.approx(low) and expected.high == pytest.approx(high)
    row = _row(_section(report, "rt/test/accuracy"), "0.15", "1e-4")
    assert f"| {expected.format(4)} | 3 | 0.7000 | 0.7500 | 0.7200 |" in row
    assert f"[{low:.4f}, {high:.4f}]" in row
    assert out["means"]["rt/test/accuracy"]["mask_rate=0.15,lr=1e-4"] == expected
    # pretraining does not depend on lr: one row per mask_rate, not copies per lr
    pretrain = _section(report, "pretrain/accuracy")
    assert f"| {mean_interval(PRETRAIN_ACC['0.3']).format(4)} | 3 |" in _row(pretrain, "0.3")
    assert set(out["means"]["pretrain/accuracy"]) == {"mask_rate=0.15", "mask_rate=0.3"}
    header = next(line for line in pretrain.splitlines() if line.startswith("| "))
    assert header == "| mask_rate | mean [95% interval] | n seeds | seed 0 | seed 1 | seed 2 |"


def test_report_header(sweep):
    _, _, report = sweep
    assert report.startswith("# Sweep report: mask_rate")
    for text in ("configs/sweeps/mask_rate.py", "abc123", "dirty", "2024-05-01T10:00:00", "steps = 600",
                 "**mask_rate** (pretrain.data.mask_rate): 0.15, 0.3", "seeds: 0, 1, 2", "paired by seed",
                 "18 in all: 18 finished", "[results.csv](results.csv)"):
        assert text in report, text


def test_comparisons_separated_excludes_zero_overlapping_includes_zero(sweep):
    _, out, report = sweep
    by_axis = {(c["metric"], c["axis"], tuple(c["held"].values())): c for m in out["comparisons"].values() for c in m}
    separated = by_axis["pretrain/accuracy", "mask_rate", ()]
    expected = difference_interval(PRETRAIN_ACC["0.15"], PRETRAIN_ACC["0.3"], paired=True)
    assert separated["interval"] == expected and not expected.includes_zero and expected.estimate > 0
    assert "excludes zero: pretrain/accuracy is higher by 0.1" in separated["verdict"]
    overlapping = by_axis["rt/test/accuracy", "lr", ("0.15",)]
    expected = difference_interval(RT_ACC["0.15", "1e-4"], RT_ACC["0.15", "3e-4"], paired=True)
    assert overlapping["interval"] == expected and expected.includes_zero
    assert overlapping["verdict"] == "the interval includes zero: no difference detected at 95%"
    # lr does not reach pretraining: no pretraining comparison along it
    assert ("pretrain/accuracy", "lr", ()) not in by_axis
    assert len(out["comparisons"]["rt/test/accuracy"]) == 4  # 2 along mask_rate (per lr), 2 along lr
    section = _section(report, "pretrain/accuracy")
    row = _row(section, "mask_rate", "0.3 vs 0.15", "-")
    assert separated["interval"].format(4) in row and f"{separated['interval'].p_value:.3g}" in row
    assert "3 pairs" in row and "excludes zero" in row
    assert "includes zero" in _row(_section(report, "rt/test/accuracy"), "lr", "3e-4 vs 1e-4", "mask_rate=0.15")


def test_unpaired_uses_welch(tmp_path):
    out = write_report(make_sweep(str(tmp_path), paired=False))
    c = next(c for c in out["comparisons"]["pretrain/accuracy"] if c["axis"] == "mask_rate")
    assert c["interval"] == difference_interval(PRETRAIN_ACC["0.15"], PRETRAIN_ACC["0.3"], paired=False)
    welch = scipy.stats.ttest_ind(PRETRAIN_ACC["0.3"], PRETRAIN_ACC["0.15"], equal_var=False)
    assert c["interval"].p_value == pytest.approx(welch.pvalue, rel=1e-6)


def test_failed_stage_is_reported_and_does_not_crash(tmp_path):
    def status(stage: str, values: dict[str, str], seed: int) -> tuple[str, str]:
        if values["mask_rate"] == "0.3" and seed == 2:
            return "failed", OOM if stage == "pretrain" else "its pretraining (pretrain/mask_rate=0.3,seed=2) failed"
        return "done", ""

    out = write_report(make_sweep(str(tmp_path), status))
    with open(out["report"], encoding="utf-8") as f:
        report = f.read()
    rows = _read_csv(out["csv"])
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 * 2  # two points (lr values), each a failed pretraining and a failed fine-tune
    assert all(r["value"] == "" and r["metric"] == "" and r["error"] for r in failed)
    assert {r["error"] for r in failed if r["stage"] == "pretrain"} == {OOM}
    assert len(rows) == 12 * 14 - 2 * 12
    assert out["counts"] == {"done": 15, "failed": 3}  # one pretraining + two fine-tunes
    assert "15 finished, 3 failed" in report
    failures = report.split("## Failed stages\n", 1)[1]
    assert "`pretrain/mask_rate=0.3,seed=2` (pretrain): RESOURCE_EXHAUSTED: out of memory" in failures
    assert "\\| on device 0" in failures  # a | in an error does not break the Markdown
    assert "`finetune/rt/mask_rate=0.3,lr=1e-4,seed=2` (rt): its pretraining" in failures
    # the failed seed shows as failed; the mean is over the seeds that finished
    row = _row(_section(report, "pretrain/accuracy"), "0.3")
    assert f"| {mean_interval(PRETRAIN_ACC['0.3'][:2]).format(4)} | 2 | 0.5000 | 0.5200 | failed |" in row
    # paired by seed: only the seeds finished on both sides
    c = next(c for c in out["comparisons"]["pretrain/accuracy"] if c["axis"] == "mask_rate")
    assert c["interval"] == difference_interval(PRETRAIN_ACC["0.15"][:2], PRETRAIN_ACC["0.3"][:2], paired=True)
    assert c["interval"].n == 2


def test_plots_are_valid_pngs(sweep):
    root, out, report = sweep
    names = {os.path.relpath(p, root) for p in out["plots"]}
    assert names == {"plots/pretrain_accuracy_vs_mask_rate.png", "plots/rt_test_accuracy_vs_mask_rate.png",
                     "plots/rt_test_accuracy_vs_lr.png", "plots/curves_pretrain.png", "plots/curves_rt.png"}
    for path in out["plots"]:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    for name in names:  # embedded with relative links
        assert f"]({name})" in report, name


def test_no_finished_stage_still_writes_a_report(tmp_path):
    out = write_report(make_sweep(str(tmp_path), lambda *_: ("missing", "")))
    with open(out["report"], encoding="utf-8") as f:
        report = f.read()
    assert "No stage has finished yet" in report and "18 in all: 18 not started" in report
    assert "## Failed stages\n\nnone" in report and out["plots"] == [] and out["counts"] == {"missing": 18}
    rows = _read_csv(out["csv"])
    assert len(rows) == 24 and {r["status"] for r in rows} == {"missing"}


def test_all_failed_sweep_says_so(tmp_path):
    out = write_report(make_sweep(str(tmp_path), lambda *_: ("failed", "boom")))
    with open(out["report"], encoding="utf-8") as f:
        report = f.read()
    assert "No stage has finished yet" in report and "Every stage that ran failed" in report
    assert report.count(": boom") == 18


def test_default_metrics_and_unknown_metric(tmp_path):
    out = write_report(make_sweep(str(tmp_path), metrics=()))
    assert out["metrics"] == ["pretrain/accuracy", "rt/test/accuracy"]
    out = write_report(make_sweep(str(tmp_path), metrics=("rt/test/acc",)))
    with open(out["report"], encoding="utf-8") as f:
        report = f.read()
    assert "No finished stage reports rt/test/acc yet" in report and "rt/test/accuracy" in report


def test_running_stage_with_a_half_written_line_and_missing_results(tmp_path):
    root = make_sweep(str(tmp_path))
    stage = os.path.join(root, "finetune/rt/mask_rate=0.15,lr=1e-4,seed=0")
    with open(os.path.join(stage, "metrics.jsonl"), "a", encoding="utf-8") as f:
        f.write('{"step": 320, "split": "tra')
    os.remove(os.path.join(stage, "results.json"))
    out = write_report(root)
    assert out["counts"] == {"done": 17, "failed": 1}
    values = [v for v in out["means"]["rt/test/accuracy"].values()]
    assert sorted(v.n for v in values) == [2, 3, 3, 3] and not any(math.isnan(v.estimate) for v in values)


def test_not_a_sweep_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="sweep.json"):
        write_report(str(tmp_path))


def test_sweep_without_axes_or_pretraining(tmp_path):
    stages, points = {}, []
    for seed in SEEDS:
        directory = f"finetune/rt/base,seed={seed}"
        stages[directory] = {"kind": "finetune", "task": "rt", "key": directory}
        points.append({"label": "base", "values": {}, "seed": seed, "stages": {"rt": directory}})
        _write_stage(str(tmp_path / directory), "rt", {"mask_rate": "0.15", "lr": "1e-4"}, seed, directory, "done", "")
    _write(str(tmp_path / "sweep.json"), {"name": "rt", "axes": [], "seeds": SEEDS, "budget": None, "metrics": [],
                                          "paired": True, "tasks": ["rt"], "points": points, "stages": stages})
    out = write_report(str(tmp_path))
    assert out["metrics"] == ["rt/test/accuracy"] and out["comparisons"] == {"rt/test/accuracy": []}
    assert out["means"]["rt/test/accuracy"]["base"] == mean_interval(RT_ACC["0.15", "1e-4"])
    assert [os.path.basename(p) for p in out["plots"]] == ["curves_rt.png"]
    with open(out["report"], encoding="utf-8") as f:
        assert "axes: none (one configuration)" in f.read()
