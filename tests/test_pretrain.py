"""End to end: learning, exact resume after SIGTERM and SIGKILL, and bad input that names the problem."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import pytest

from plm_jax.models.config import TransformerConfig
from plm_jax.models.encoder import BertForMaskedLM, dummy_inputs
from plm_jax.parallel import sharding
from plm_jax.run import train
from plm_jax.train import optimizer
from plm_jax.train import state as state_lib
from plm_jax.train.checkpoint import Checkpointer, CheckpointMismatchError, tree_equal
from tests.corpus import write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 80

CONFIG_FILE = '''
from plm_jax.config_base import mlm_pretrain_config

def get_config():
    c = mlm_pretrain_config()
    c.model.update(vocab_size=56, num_layers=2, hidden_size=64, num_heads=4, mlp_dim=128, max_len=64)
    c.data.update(source="text", paths=({corpus!r},), seq_len=64, shuffle_buffer=128)
    c.train.update(batch_size=16, steps={steps}, lr=3e-3, warmup_steps=8, log_every=5, eval_every=40,
                   eval_batches=3, checkpoint_every=10, keep_checkpoints=20)
    c.mesh.update(data=2, fsdp=2, tensor=2)
    return c
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("pretrain")
    corpus = write_corpus(base / "corpus.txt", 1500)
    config_path = base / "tiny_config.py"
    config_path.write_text(CONFIG_FILE.format(corpus=corpus, steps=STEPS))
    return base, corpus, str(config_path)


def tiny_config(corpus):
    ns: dict = {}
    exec(CONFIG_FILE.format(corpus=corpus, steps=STEPS), ns)
    return ns["get_config"]()


@pytest.fixture(scope="module")
def uninterrupted(setup):
    base, corpus, _ = setup
    workdir = str(base / "uninterrupted")
    config = tiny_config(corpus)
    config.train.profile_steps = (3, 4)  # tracing must not change a single bit of the run
    return workdir, train(config, workdir)


def _launch(config_path, workdir, *extra):
    """launch.py in the work directory's parent, given a relative --workdir, as a user would type it."""
    cmd = [sys.executable, os.path.join(ROOT, "launch.py"), "pretrain", f"--config={config_path}",
           f"--workdir={os.path.basename(workdir)}", *extra]
    return subprocess.Popen(cmd, cwd=os.path.dirname(workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": ROOT})


def _wait_for_checkpoint(workdir, step, proc, timeout=240):
    path = os.path.join(workdir, "checkpoints", str(step))
    deadline = time.time() + timeout
    while not os.path.isdir(path):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, f"no checkpoint {path} after {timeout}s"
        time.sleep(0.05)


def _final_state(workdir, corpus, step=STEPS):
    cfg = TransformerConfig.from_config(tiny_config(corpus).model)
    model, (tx, _) = BertForMaskedLM(cfg), optimizer.make_optimizer(tiny_config(corpus).train)
    mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    abstract, _ = state_lib.state_shardings(model, tx, dummy_inputs(cfg, 1, 64), mesh, sharding.DEFAULT_RULES)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    state, data = ckpt.restore(step, abstract)
    ckpt.close()
    return state, data


@pytest.mark.slow
def test_loss_falls_and_outputs_are_written(uninterrupted):
    workdir, results = uninterrupted
    start, end = results["eval_at_start"], results["eval_at_end"]
    assert end["loss"] < start["loss"] - 0.4, (start, end)
    assert end["accuracy"] > start["accuracy"] + 0.05, (start, end)
    for name in ("metrics.jsonl", "curves.png", "config.json", "tokenizer.model", "results.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    traces = [f for _, _, files in os.walk(os.path.join(workdir, "profile")) for f in files]
    assert any(f.endswith(".xplane.pb") for f in traces), traces
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert {r["split"] for r in records} == {"train", "eval"}
    timed = [r for r in records if r["split"] == "train" and r["step"] > 5]
    assert timed and all(r["tokens_per_sec"] > 0 and 0 <= r["data_wait_frac"] <= 1 for r in timed)


@pytest.mark.slow
def test_sigterm_and_sigkill_resume_bitwise(setup, uninterrupted):
    """SIGTERM checkpoints and exits 0; SIGKILL loses only the steps since the last checkpoint; the resumed run
    ends with the same parameters, optimizer state and data position as the uninterrupted one, bit for bit."""
    base, corpus, config_path = setup
    workdir = str(base / "interrupted")
    proc = _launch(config_path, workdir)
    _wait_for_checkpoint(workdir, 10, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "saving a checkpoint at step" in out, out
    stopped_at = max(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    assert 10 <= stopped_at < STEPS

    proc = _launch(config_path, workdir)
    _wait_for_checkpoint(workdir, ((stopped_at // 10) + 2) * 10, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    proc = _launch(config_path, workdir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "resumed from" in out

    resumed, resumed_data = _final_state(workdir, corpus)
    reference, reference_data = _final_state(uninterrupted[0], corpus)
    assert resumed_data == reference_data
    assert int(resumed.step) == STEPS
    assert tree_equal(resumed, reference)
    # the eval curve of the resumed run is the uninterrupted one, record for record
    evals = [[(r["step"], r["loss"]) for r in map(json.loads, open(os.path.join(w, "metrics.jsonl")))
              if r["split"] == "eval"] for w in (workdir, uninterrupted[0])]
    assert evals[0] == evals[1]


def _expect_cli_error(config_path, workdir, *extra, match):
    proc = _launch(config_path, workdir, *extra)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("error: ") and match in last, out
    return last


@pytest.mark.slow
def test_cli_errors_are_one_line(setup, tmp_path):
    _, _, config_path = setup
    workdir = str(tmp_path / "w")
    _expect_cli_error(config_path, workdir, "--config.train.stepz=3", match="unknown config key --config.train.stepz")
    _expect_cli_error(config_path, workdir, "--config.data.paths=('/no/such/file.txt',)",
                      match="/no/such/file.txt")
    _expect_cli_error(config_path, workdir, "--profile_steps=5", match="--profile_steps='5': expected FIRST,LAST")
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))


@pytest.mark.slow
def test_bad_input_is_named_and_nothing_is_lost(setup, uninterrupted, tmp_path):
    _, corpus, _ = setup

    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"\n   \n\xff\xfe\n\n")
    bad = tiny_config(corpus)
    bad.data.paths = (str(empty),)
    with pytest.raises(ValueError, match="no usable documents"):
        train(bad, str(tmp_path / "empty_run"))

    # a tokenizer whose vocabulary does not match the model
    bad = tiny_config(corpus)
    bad.data.tokenizer = os.path.join(uninterrupted[0], "tokenizer.model")
    bad.model.vocab_size = 64
    with pytest.raises(ValueError, match=r"tokenizer vocabulary \(56 pieces\) does not match model.vocab_size=64"):
        train(bad, str(tmp_path / "vocab_run"))
    assert not os.path.exists(tmp_path / "vocab_run" / "config.json")  # a failed first start pins no config

    # a work directory of another model shape, and a checkpoint copied from another model shape
    snapshot = {f: os.path.getmtime(os.path.join(uninterrupted[0], f)) for f in ("config.json", "metrics.jsonl")}
    bad = tiny_config(corpus)
    bad.model.hidden_size = 32
    with pytest.raises(ValueError, match="holds a run of another model shape.*hidden_size"):
        train(bad, uninterrupted[0])
    assert snapshot == {f: os.path.getmtime(os.path.join(uninterrupted[0], f)) for f in snapshot}

    other = str(tmp_path / "copied")
    shutil.copytree(os.path.join(uninterrupted[0], "checkpoints"), os.path.join(other, "checkpoints"))
    bad.data.tokenizer = os.path.join(uninterrupted[0], "tokenizer.model")
    with pytest.raises(CheckpointMismatchError, match="differ in shape"):
        train(bad, other)
    assert sorted(os.listdir(os.path.join(other, "checkpoints"))) == sorted(
        os.listdir(os.path.join(uninterrupted[0], "checkpoints")))


@pytest.mark.slow
def test_tokenizer_command(setup, tmp_path):
    _, _, config_path = setup
    out = tmp_path / "spm.model"
    cmd = [sys.executable, os.path.join(ROOT, "launch.py"), "tokenizer", f"--config={config_path}", f"--output={out}"]
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
    assert run.returncode == 0 and "56 pieces" in run.stdout, run.stdout + run.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
    assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr
