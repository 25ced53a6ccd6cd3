"""Sweeps: every bad sweep config is refused before a point starts; a tiny sweep runs, resumes, reruns what
changed, and goes on past a point that crashes."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from plm_jax.sweep.spec import Axis, Budget, Stage, Sweep, SweepError, axis, expand, load_sweep
from tests import corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two base configs (a tiny MLM pretraining and a tiny sentiment fine-tune) over synthetic data."""
    base = tmp_path_factory.mktemp("sweep")
    text = corpus.write_corpus(base / "corpus.txt", 300)
    rng = np.random.default_rng(0)
    for split, n in (("train", 256), ("eval", 96)):
        corpus.write_sentiment_csv(base / f"{split}.csv", n, rng)
    (base / "pretrain.py").write_text(textwrap.dedent(f"""
        from plm_jax.config_base import mlm_pretrain_config

        def get_config(arg=""):
            c = mlm_pretrain_config()
            c.model.update(vocab_size=56, num_layers=1 if arg == "one_layer" else 2, hidden_size=32, num_heads=2,
                           mlp_dim=64, max_len=64)
            c.data.update(source="text", paths=({text!r},), seq_len=64, shuffle_buffer=64)
            c.train.update(batch_size=16, steps=8, lr=3e-3, warmup_steps=2, log_every=4, eval_every=8,
                           eval_batches=1, checkpoint_every=8, keep_checkpoints=1, async_checkpoints=False)
            return c
        """))
    (base / "finetune.py").write_text(textwrap.dedent(f"""
        from plm_jax.config_base import finetune_config

        def get_config():
            c = finetune_config()
            c.task.update(source="local", train_file={str(base / "train.csv")!r},
                          eval_file={str(base / "eval.csv")!r}, seq_len=48)
            c.train.update(batch_size=32, epochs=1, lr=3e-3, log_every=4, async_checkpoints=False)
            return c
        """))
    return base


def tiny_sweep(files, **changes) -> Sweep:
    fields = dict(name="tiny", pretrain=Stage(str(files / "pretrain.py")),
                  finetune={"sentiment": Stage(str(files / "finetune.py"))},
                  axes=[axis("pretrain.data.mask_rate", [0.15, 0.3])], seeds=2, budget=Budget(steps=8))
    return Sweep(**{**fields, **changes})


# --- checks before anything runs --------------------------------------------------------------------------------


def test_points_and_stages(files):
    plan = expand(tiny_sweep(files, axes=[axis("pretrain.data.mask_rate", [0.15, 0.3]),
                                          axis("finetune.train.lr", [1e-3, 3e-3], name="lr")]))
    assert len(plan.points) == 2 * 2 * 2
    # the lr axis does not touch pretraining: its points share the pretraining runs (2 rates x 2 seeds)
    assert sum(s.kind == "pretrain" for s in plan.stages.values()) == 4
    assert sum(s.kind == "finetune" for s in plan.stages.values()) == 8
    order = list(plan.stages)  # point by point, so that an interrupted sweep leaves whole points behind
    assert all(order.index(s.depends_on) < order.index(d) for d, s in plan.stages.items() if s.depends_on)
    assert [plan.stages[d].kind for d in order[:3]] == ["pretrain", "finetune", "pretrain"]
    point = plan.points[-1]
    assert point.values == {"mask_rate": "0.3", "lr": "0.003"} and point.seed == 1
    stage = plan.stages[point.stages["sentiment"]]
    assert stage.overrides["train.lr"] == 3e-3 and stage.overrides["seed"] == 1
    assert stage.depends_on == point.stages["pretrain"]
    assert plan.stages[point.stages["pretrain"]].resolved["data"]["mask_rate"] == 0.3
    # "{seed}" in a string value is the point's seed: a teacher per seed
    seeded = expand(tiny_sweep(files, finetune={"sentiment": Stage(str(files / "finetune.py"), {
        "distill.teacher": "runs/teachers/seed={seed}"})}))
    assert sorted({seeded.stages[p.stages["sentiment"]].resolved["distill"]["teacher"] for p in seeded.points}) == [
        "runs/teachers/seed=0", "runs/teachers/seed=1"]


def test_stages_side_by_side_split_the_cores_into_cpu_devices(files, tmp_path, monkeypatch):
    """mesh.cpu_devices=-1 is one CPU device per core; two workers give each stage half of the cores."""
    from plm_jax.sweep.runner import SweepRunner

    monkeypatch.setenv("XLA_FLAGS", "")  # conftest's simulated devices would win over the config
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    plan = expand(tiny_sweep(files))
    pretrain, finetune = (next(d for d, s in plan.stages.items() if s.kind == kind)
                          for kind in ("pretrain", "finetune"))

    def command(workers, stage):
        return SweepRunner(plan, str(tmp_path), workers=workers)._command(plan.stages[stage], "s.json", "w")

    assert command(2, pretrain)[-1] == "--cpu_devices=4"  # 8 cores / 2 workers; batch 16
    assert command(2, finetune)[-1] == "--cpu_devices=4"
    assert not any(a.startswith("--cpu_devices") for a in command(1, pretrain))  # launch.py takes all the cores
    plan.stages[pretrain].resolved["mesh"]["cpu_devices"] = 0  # a config's own count is left to launch.py
    assert not any(a.startswith("--cpu_devices") for a in command(2, pretrain))


def test_zipped_axis_and_config_variants(files):
    shapes = axis("pretrain", [f"{files}/pretrain.py", f"{files}/pretrain.py:one_layer"], name="depth")
    width = Axis({"pretrain.model.hidden_size": [32, 64], "pretrain.model.mlp_dim": [64, 128]}, name="width")
    plan = expand(Sweep("z", {}, Stage(str(files / "pretrain.py")), seeds=1, axes=[shapes, width]))
    layers = {p.label: plan.stages[p.stages["pretrain"]].resolved["model"] for p in plan.points}
    assert layers["depth=pretrain,width=64/128"]["num_layers"] == 2
    assert layers["depth=one_layer,width=32/64"]["num_layers"] == 1
    assert layers["depth=one_layer,width=64/128"]["mlp_dim"] == 128


@pytest.mark.parametrize("budget,steps", [(Budget(steps=5), 5), (Budget(tokens=16 * 64 * 3 + 1), 4)])
def test_budget_sets_the_pretraining_steps(files, budget, steps):
    plan = expand(tiny_sweep(files, budget=budget, seeds=1))
    assert {s.resolved["train"]["steps"] for s in plan.stages.values() if s.kind == "pretrain"} == {steps}


def test_flops_budget_gives_fewer_steps_to_a_bigger_model(files):
    from plm_jax.models.config import TransformerConfig
    from plm_jax.models.flops import mlm_train_flops_per_step

    sweep = tiny_sweep(files, axes=[axis("pretrain.model.hidden_size", [32, 64])], seeds=1, budget=Budget(flops=1e12))
    steps = {p.label: expand(sweep).stages[p.stages["pretrain"]].resolved["train"]["steps"]
             for p in expand(sweep).points}
    assert steps["hidden_size=32"] > steps["hidden_size=64"]
    cfg = TransformerConfig(vocab_size=56, num_layers=2, hidden_size=32, num_heads=2, mlp_dim=64, max_len=64)
    assert steps["hidden_size=32"] == round(1e12 / mlm_train_flops_per_step(cfg, 16, 64, 10))


@pytest.mark.parametrize("change,message", [
    (dict(axes=[axis("pretrain.data.mask_rat", [0.1])]), "pretrain (mask_rat=0.1, seed 0): data.mask_rat is not a "
                                                         "key of "),
    (dict(axes=[axis("pretrain.data.mask_rate", ["0.3"])]), "data.mask_rate='0.3' is a str; the key holds a float"),
    (dict(axes=[axis("pretrain.train.steps", [True])], budget=None), "is a bool; the key holds a int"),
    (dict(axes=[axis("pretrain.model", [1])]), "model is a group of keys"),
    (dict(axes=[axis("optimizer.lr", [1])]), "axis key 'optimizer.lr': the part before the first dot"),
    (dict(budget=Budget(steps=0)), "exactly one of steps, tokens, flops or minutes, and not zero"),
    (dict(budget=Budget(tokens=-5)), "budget tokens=-5: must be positive"),
    (dict(budget=Budget(steps=3, tokens=9)), "exactly one of"),
    (dict(seeds=0), "seeds=0: need at least one seed"),
    (dict(axes=[axis("finetune.train.lr", [1e-3, 0.001], labels=["a", "b"])]), "resolve to the same configs"),
    (dict(axes=[axis("pretrain.data.mask_rate", [0.15, 0.15])]), "two values share a label"),
    (dict(axes=[axis("pretrain.train.steps", [3, 4])]), "conflicts with the budget"),
    (dict(axes=[axis("sentiment.seed", [3, 4])]), "seeds and init are set by the sweep"),
])
def test_bad_sweeps_are_refused_before_any_point_runs(files, tmp_path, change, message):
    from plm_jax.sweep.runner import SweepRunner

    with pytest.raises(SweepError, match=None) as e:
        SweepRunner(expand(tiny_sweep(files, **change)), str(tmp_path / "never")).run()
    assert message in str(e.value)
    if "mask_rat=" in message:
        assert str(e.value).endswith("pretrain.py (did you mean data.mask_rate?)")
    assert not (tmp_path / "never").exists()


def test_flops_budget_needs_mlm(files):
    sweep = tiny_sweep(files, axes=[axis("pretrain.objective", ["causal_lm"])], budget=Budget(flops=1e9))
    with pytest.raises(SweepError, match="flops budget is counted for objective mlm only"):
        expand(sweep)


def test_configs_agree_on_shared_keys_only():
    from plm_jax.sweep.runner import configs_agree

    old = {"train": {"lr": 1e-3, "steps": 8}, "init": "pretrain:aaa"}
    assert configs_agree(old, {"train": {"lr": 1e-3, "steps": 8, "new_key": 0}, "init": "pretrain:bbb"})
    assert not configs_agree(old, {"train": {"lr": 3e-3, "steps": 8}, "init": "pretrain:aaa"})
    assert not configs_agree(old, {"train": {"lr": 1e-3, "steps": 8}, "init": "runs/elsewhere"})
    assert not configs_agree(None, old)


# --- a real tiny sweep through the command line -------------------------------------------------------------------


def _sweep_file(files, name: str, body: str) -> str:
    path = files / f"{name}.py"
    path.write_text(textwrap.dedent(f"""
        from plm_jax.sweep.spec import Budget, Stage, Sweep, axis

        def get_config():
            return Sweep(name={name!r}, pretrain=Stage({str(files / 'pretrain.py')!r}),
                         finetune={{"sentiment": Stage({str(files / 'finetune.py')!r})}},
                         {body})
        """))
    return str(path)


def _launch(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO, "launch.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.slow
def test_a_sweep_runs_resumes_reruns_changes_and_survives_a_crash(files, tmp_path):
    # 2 fine-tune variants share one pretraining run; max_train_examples=8 < batch 32 makes that point crash
    body = ('axes=[axis("sentiment.task.max_train_examples", [0, 8], name="examples")], seeds=1, '
            'budget=Budget(steps=8), metrics=["pretrain/accuracy", "sentiment/eval/accuracy"]')
    config, workdir = _sweep_file(files, "crash", body), str(tmp_path / "sweep")
    first = _launch("sweep", config, f"--workdir={workdir}", "--workers=2")  # the fine-tunes wait for pretraining
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [p["label"] for p in summary["points"]] == ["examples=0", "examples=8"]
    records = {d: json.loads((tmp_path / "sweep" / d / "sweep_stage.json").read_text()) for d in summary["stages"]}
    status = {d: r["status"] for d, r in records.items()}
    assert status == {"pretrain/seed=0": "done", "finetune/sentiment/examples=0,seed=0": "done",
                      "finetune/sentiment/examples=8,seed=0": "failed"}, status
    assert "fewer than train.batch_size" in records["finetune/sentiment/examples=8,seed=0"]["error"]
    done = records["finetune/sentiment/examples=0,seed=0"]
    assert done["code"]["commit"] and "dirty" in done["code"] and done["packages"]["jax"]
    assert done["resolved"]["task"]["max_train_examples"] == 0 and done["resolved"]["init"].startswith("pretrain:")
    results = json.loads((tmp_path / "sweep" / "finetune/sentiment/examples=0,seed=0/results.json").read_text())
    assert results["starting_point"]["kind"] == "plm_jax"
    assert "1 failed" in first.stdout and "2 done" in first.stdout

    # rerun: done stages are skipped, the failed one is tried again (and fails again)
    second = _launch("sweep", config, f"--workdir={workdir}")
    assert "2 already done" in second.stdout and "started" not in second.stderr.replace(
        "started finetune/sentiment/examples=8", "")
    # a changed finetune config reruns only the stages it changes; the old run is moved aside, not deleted
    body2 = body.replace("[0, 8]", "[0, 64]")
    third = _launch("sweep", _sweep_file(files, "crash", body2), f"--workdir={workdir}")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "3 done" in third.stdout and "2 already done" in third.stdout
    # plm_jax gains a config key (here: the record lacks one, under an older key): nothing reruns
    record_path = tmp_path / "sweep" / "pretrain/seed=0/sweep_stage.json"
    record = json.loads(record_path.read_text())
    del record["resolved"]["train"]["profile_steps"]
    record_path.write_text(json.dumps({**record, "key": "from-an-older-plm_jax"}))
    fourth = _launch("sweep", _sweep_file(files, "crash", body2), f"--workdir={workdir}")
    assert "3 already done" in fourth.stdout and "started" not in fourth.stderr, fourth.stderr[-2000:]
    report = _launch("report", workdir)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "sweep" / "report.md").exists() and (tmp_path / "sweep" / "results.csv").exists()


def test_cli_errors_are_one_line(files, tmp_path):
    bad = _sweep_file(files, "bad", 'axes=[axis("pretrain.data.mask_rat", [0.2])]')
    out = _launch("sweep", bad, f"--workdir={tmp_path / 'x'}")
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "did you mean data.mask_rate?" in out.stderr and not (tmp_path / "x").exists()
    out = _launch("report", str(tmp_path))
    assert out.returncode == 2 and "not a sweep directory" in out.stderr


@pytest.mark.parametrize("name", ["mask_rate", "model_shape", "objective", "pretraining"])
def test_shipped_sweeps_expand_and_document_their_command(name, monkeypatch):
    monkeypatch.chdir(REPO)  # their base configs are named relative to the repository, as in the README
    path = f"configs/sweeps/{name}.py"
    plan = expand(load_sweep(path))
    assert len({p.label for p in plan.points}) >= 2 and plan.sweep.seeds >= 2
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        assert f"python launch.py sweep {path} --workdir runs/{name}" in f.read()


@pytest.mark.slow
def test_a_minutes_budget_times_the_config_once_and_records_its_steps(files, tmp_path):
    """A pretraining-only sweep with a wall-clock budget: a short timing run fixes train.steps, which a rerun
    keeps (the budget is reproducible once measured)."""
    path = files / "minutes.py"
    path.write_text(textwrap.dedent(f"""
        from plm_jax.sweep.spec import Budget, Stage, Sweep

        def get_config():
            return Sweep(name="minutes", finetune={{}}, pretrain=Stage({str(files / 'pretrain.py')!r}), seeds=1,
                         budget=Budget(minutes=0.05))
        """))
    workdir = tmp_path / "sweep"
    out = _launch("sweep", str(path), f"--workdir={workdir}")
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((workdir / "pretrain/seed=0/sweep_stage.json").read_text())
    assert record["status"] == "done" and record["calibrated_steps"] >= 1 and record["calibration_s"] > 0
    assert record["overrides"]["train.steps"] == record["calibrated_steps"]
    results = json.loads((workdir / "pretrain/seed=0/results.json").read_text())
    assert results["steps"] == record["calibrated_steps"]
    assert (workdir / "pretrain/seed=0/calibration/metrics.jsonl").exists()
    again = _launch("sweep", str(path), f"--workdir={workdir}")
    assert "1 already done" in again.stdout and "timing" not in again.stderr


@pytest.mark.slow
def test_sigterm_interrupts_the_sweep_and_a_rerun_resumes_the_stage(files, tmp_path):
    """The sweep passes SIGTERM on to its running stage, which checkpoints; the same command resumes it."""
    import signal
    import time

    path = files / "long.py"
    path.write_text(textwrap.dedent(f"""
        from plm_jax.sweep.spec import Budget, Stage, Sweep

        def get_config():
            return Sweep(name="long", finetune={{}}, seeds=1, budget=Budget(steps=400),
                         pretrain=Stage({str(files / 'pretrain.py')!r}, {{"train.checkpoint_every": 400,
                                                                          "train.eval_every": 400}}))
        """))
    workdir = tmp_path / "sweep"
    stage = workdir / "pretrain" / "seed=0"
    driver = subprocess.Popen([sys.executable, os.path.join(REPO, "launch.py"), "sweep", str(path),
                               f"--workdir={workdir}"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        rows = (stage / "metrics.jsonl").read_text().splitlines() if (stage / "metrics.jsonl").exists() else []
        if any('"train"' in r for r in rows):
            break
        time.sleep(0.5)
    driver.send_signal(signal.SIGTERM)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 1, err[-3000:]
    assert "interrupted: run the same command to resume" in out
    record = json.loads((stage / "sweep_stage.json").read_text())
    assert record["status"] == "interrupted"
    again = _launch("sweep", str(path), f"--workdir={workdir}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in (stage / "log.txt").read_text()
    assert json.loads((stage / "results.json").read_text())["steps"] == 400
    assert json.loads((stage / "sweep_stage.json").read_text())["status"] == "done"
