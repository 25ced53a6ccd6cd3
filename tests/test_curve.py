"""Learning curves: the curve sweep config, the report's curve (table, CSV, PNG) with intervals checked against
SciPy, and a tiny curve that runs end to end through `launch.py demo` from a pretraining run, random init and
stratified subsets."""

from __future__ import annotations

import collections
import csv
import json
import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import scipy.stats

from plm_jax.config_base import mlm_pretrain_config
from plm_jax.run import train
from plm_jax.sweep.report import write_report
from plm_jax.sweep.spec import SweepError, expand, load_sweep
from tests import corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CURVE = os.path.join(REPO, "configs", "sweeps", "curve.py")

# accuracy by (labels, start) and seed: pretraining helps at 100 labels, not at all
ACC = {("100", "scratch"): [0.55, 0.58, 0.52], ("100", "pre"): [0.63, 0.64, 0.61],
       ("all", "scratch"): [0.80, 0.79, 0.81], ("all", "pre"): [0.80, 0.80, 0.80]}


def _write(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def _curve_sweep(root: str) -> str:
    axes = [{"name": "labels", "keys": ["finetune.task.max_train_examples"], "labels": ["100", "all"]},
            {"name": "start", "keys": ["finetune.init"], "labels": ["scratch", "pre"]}]
    points, stages = [], {}
    for (labels, start), accs in ACC.items():
        for seed, acc in enumerate(accs):
            d = f"finetune/rt/labels={labels},start={start},seed={seed}"
            points.append({"label": f"labels={labels},start={start}", "values": {"labels": labels, "start": start},
                           "seed": seed, "stages": {"rt": d}})
            stages[d] = {"kind": "finetune", "task": "rt", "key": d}
            _write(os.path.join(root, d, "sweep_stage.json"), {"status": "done", "key": d, "duration_s": 9.0})
            _write(os.path.join(root, d, "results.json"), {
                "main_metric": "accuracy", "steps": 10, "train_examples": 100 if labels == "100" else 8530,
                "best": {"metrics": {"accuracy": acc}}, "test": {"accuracy": acc, "f1_macro": acc - 0.02}})
    _write(os.path.join(root, "sweep.json"), {
        "name": "curve_rt", "axes": axes, "seeds": [0, 1, 2], "budget": None, "paired": True, "tasks": ["rt"],
        "metrics": ["rt/test/accuracy", "rt/test/f1_macro"], "points": points, "stages": stages,
        "curve": {"x": "labels", "series": "start"}})
    return root


def test_the_curve_table_csv_and_png_with_intervals_from_scipy(tmp_path):
    root = _curve_sweep(str(tmp_path / "curve"))
    out = write_report(root)
    report = open(out["report"], encoding="utf-8").read()
    assert "## Learning curves" in report and "### Learning curve: rt/test/accuracy" in report
    rows = {(r["metric"], r["labels"], r["line"]): r for r in csv.DictReader(open(os.path.join(root, "curve.csv")))}
    assert len(rows) == 8
    for (labels, start), accs in ACC.items():
        row = rows["rt/test/accuracy", labels, start]
        low, high = scipy.stats.t.interval(0.95, 2, loc=np.mean(accs), scale=scipy.stats.sem(accs))
        assert float(row["mean"]) == pytest.approx(np.mean(accs)) and int(row["n"]) == 3
        assert (float(row["low"]), float(row["high"])) == pytest.approx((low, high), abs=1e-9)
        assert float(row["train_examples"]) == (100 if labels == "100" else 8530)
        if start == "pre":  # paired by seed against scratch: scipy's paired t interval and p-value
            diff = np.subtract(accs, ACC[labels, "scratch"])
            lo, hi = scipy.stats.t.interval(0.95, 2, loc=diff.mean(), scale=scipy.stats.sem(diff))
            assert float(row["diff_vs_baseline"]) == pytest.approx(diff.mean())
            assert (float(row["diff_low"]), float(row["diff_high"])) == pytest.approx((lo, hi), abs=1e-9)
            p = scipy.stats.ttest_rel(accs, ACC[labels, "scratch"]).pvalue
            assert float(row["diff_p"]) == pytest.approx(p, rel=1e-6)
        else:
            assert row["diff_vs_baseline"] == ""
    table = report.split("### Learning curve: rt/test/accuracy", 1)[1].split("###", 1)[0]
    assert "| 100 | 0.5500 [" in table and "| all (8530) | 0.8000 [" in table
    assert "pre - scratch: paired [95%]" in table and "0.0767 [" in table  # (0.08 + 0.06 + 0.09) / 3
    png = os.path.join(root, "plots", "curve_rt_test_accuracy.png")
    assert png in out["plots"] and matplotlib.image.imread(png).shape[2] in (3, 4)


def test_the_curve_config_expands_with_its_settings(monkeypatch):
    monkeypatch.chdir(REPO)
    plan = expand(load_sweep("configs/sweeps/curve.py:rotten_tomatoes"))
    assert plan.sweep.seeds == 3 and plan.sweep.curve.x == "labels"
    labels = {p.values["labels"] for p in plan.points}
    starts = {p.values["start"] for p in plan.points}
    assert labels == {"100", "300", "1000", "3000", "all"}
    assert starts == {"scratch", "cpu_hour", "quickstart", "minilm"}
    by_start = {p.values["start"]: plan.stages[p.stages["rotten_tomatoes"]] for p in plan.points}
    assert by_start["scratch"].overrides["from_scratch"] and by_start["scratch"].overrides["init"] == "runs/cpu_hour"
    assert by_start["minilm"].overrides["train.lr"] == 1e-4
    custom = expand(load_sweep("configs/sweeps/curve.py:wiki_topics,pretrained=runs/x,minilm=0,sizes=50+0,seeds=2,"
                               "train.lr=5e-4,train.warmup_frac=0.2"))
    assert {p.values["start"] for p in custom.points} == {"scratch", "x"} and custom.sweep.seeds == 2
    for stage in custom.stages.values():  # a setting beats the starts' defaults, and reaches every start
        assert stage.overrides["train.lr"] == 5e-4 and stage.overrides["train.warmup_frac"] == 0.2
    with pytest.raises(SweepError, match="must be a task"):
        load_sweep("configs/sweeps/curve.py:imdb")
    with pytest.raises(SweepError, match="not key=value"):
        load_sweep("configs/sweeps/curve.py:rotten_tomatoes,seeds")


@pytest.mark.slow
def test_the_demo_runs_a_tiny_curve_from_a_pretraining_run_and_from_random_init(tmp_path):
    """`launch.py demo` end to end: its curve sweep (each fine-tune a `launch.py finetune` stage), the report, and
    the demo's own table and JSON."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 160), ("eval", 64), ("test", 64)):
        corpus.write_sentiment_csv(tmp_path / f"{split}.csv", n, rng)
    text = corpus.write_corpus(tmp_path / "corpus.txt", 200)
    pretrain = mlm_pretrain_config()  # in this process: the demo below is the part that runs launch.py
    pretrain.model.update(vocab_size=56, num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64, max_len=64)
    pretrain.data.update(source="text", paths=(text,), seq_len=64, shuffle_buffer=64)
    pretrain.train.update(batch_size=16, steps=6, lr=3e-3, warmup_steps=2, log_every=3, eval_every=6,
                          eval_batches=1, checkpoint_every=6, async_checkpoints=False)
    run = tmp_path / "tiny"
    train(pretrain, str(run))
    env = {**os.environ, "PYTHONPATH": REPO}
    settings = (f"task.text_a=sentence,task.train_file={tmp_path / 'train.csv'},task.eval_file={tmp_path / 'eval.csv'},"
                f"task.test_file={tmp_path / 'test.csv'},task.seq_len=48,train.min_steps=8,train.lr=3e-3")
    demo_dir = tmp_path / "demo"
    done = subprocess.run([sys.executable, os.path.join(REPO, "launch.py"), "demo", f"--workdir={demo_dir}",
                           f"--pretrained={run}", "--tasks=local", "--sizes=32", "--seeds=1", "--minilm=false",
                           f"--settings={settings}"], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    sweep_dir = demo_dir / "curve_local"
    rows = list(csv.DictReader(open(sweep_dir / "curve.csv")))
    assert {(r["labels"], r["line"]) for r in rows if r["metric"] == "local/test/accuracy"} == {
        ("32", "scratch"), ("32", "tiny")}  # "all" and its x position (train_examples): the test above
    assert all(int(r["n"]) == 1 for r in rows)  # one seed keeps the test short; intervals: the test above
    assert {float(r["train_examples"]) for r in rows} == {32.0}
    # 32 labels: 1 step an epoch, raised to train.min_steps; the subset is stratified by class
    stage = sweep_dir / "finetune" / "local" / "labels=32,start=tiny,seed=0"
    results = json.loads((stage / "results.json").read_text())
    assert results["steps"] == 8 and results["train_examples"] == 32
    whole = collections.Counter(r["label"] for r in csv.DictReader(open(tmp_path / "train.csv")))
    share = {k: 32 * v / 160 for k, v in whole.items()}
    assert set(results["label_counts"]["train"]) == set(whole)
    assert all(abs(results["label_counts"]["train"][k] - share[k]) < 1 for k in whole), (results, share)
    assert (sweep_dir / "plots" / "curve_local_test_accuracy.png").is_file()
    # the demo's summary: the same numbers as the curve, in one table, a JSON and a figure
    summary = json.loads((demo_dir / "demo_results.json").read_text())
    by_start = {r["start"]: r for r in summary["rows"]}
    assert set(by_start) == {"scratch", "tiny"} and summary["reports"]["local"] == str(sweep_dir / "report.md")
    accuracy = {r["line"]: float(r["mean"]) for r in rows if r["metric"] == "local/test/accuracy"}
    assert {k: v["accuracy"][0] for k, v in by_start.items()} == pytest.approx(accuracy)
    assert by_start["tiny"]["accuracy_gain"][0] == pytest.approx(accuracy["tiny"] - accuracy["scratch"])
    assert f"| local | 32 | tiny | 1 | {accuracy['tiny']:.3f} [nan, nan] |" in done.stdout
    assert summary["curves"] == [str(sweep_dir / "plots" / "curve_local_test_accuracy.png"),
                                 str(sweep_dir / "plots" / "curve_local_test_f1_macro.png")]
