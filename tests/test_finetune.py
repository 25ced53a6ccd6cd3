"""Fine-tuning end to end on tiny synthetic tasks: learning, exact resume, starting points, export, bad input."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from plm_jax import inference
from plm_jax.config_base import finetune_config
from plm_jax.data.tokenizer import train_tokenizer
from plm_jax.run import load, train
from plm_jax.tasks import finetuning as fdata
from plm_jax.train.checkpoint import tree_equal
from tests import corpus

VOCAB = 60



@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("finetune")
    train_tokenizer(corpus.documents(500), VOCAB, base / "spm.model")
    rng = np.random.default_rng(0)
    for split, n in (("train", 512), ("eval", 160)):
        corpus.write_sentiment_csv(base / f"{split}.csv", n, rng)
    return base


def tiny_config(base, **train):
    c = finetune_config()
    c.tokenizer = str(base / "spm.model")
    c.model.update(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, max_len=64)
    c.task.update(source="local", train_file=str(base / "train.csv"), eval_file=str(base / "eval.csv"), seq_len=60)
    c.train.update(batch_size=32, epochs=6, lr=3e-3, warmup_frac=0.1, log_every=4, async_checkpoints=False)
    c.train.update(**train)
    return c


@pytest.fixture(scope="module")
def trained(task_files):
    workdir = str(task_files / "run")
    return workdir, train(tiny_config(task_files), workdir)


@pytest.mark.slow
def test_a_tiny_task_is_learned_and_the_best_epoch_kept(trained):
    workdir, results = trained
    best = results["best"]
    assert best["metric"] == "accuracy" and best["metrics"]["accuracy"] >= 0.95, best
    evals = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl")) if '"eval"' in line]
    assert [r["epoch"] for r in evals] == list(range(1, 7))
    assert best["metrics"]["accuracy"] == max(r["accuracy"] for r in evals)
    assert evals[0]["accuracy"] < best["metrics"]["accuracy"]
    for name in ("results.json", "curves.png", "model.json", "tokenizer/spm.model"):
        assert os.path.exists(os.path.join(workdir, name)), name
    # `evaluate` reloads the best checkpoint from the work directory alone and gets the same numbers
    again = inference.evaluate(workdir)["eval"]
    assert again["accuracy"] == best["metrics"]["accuracy"]
    np.testing.assert_allclose(again["loss"], best["metrics"]["loss"], rtol=1e-5)


@pytest.mark.slow
def test_predict_labels_new_texts(trained, tmp_path):
    workdir, _ = trained
    texts = ["the happy cat sees the dog near the river because the cat is old .",
             "the dark dog likes the cat at the market because the dog is tall ."]
    (tmp_path / "new.txt").write_text("\n".join(texts) + "\n\n", encoding="utf-8")
    n = inference.predict(workdir, str(tmp_path / "new.txt"), str(tmp_path / "out.jsonl"))
    rows = [json.loads(line) for line in open(tmp_path / "out.jsonl")]
    assert n == 2 and [r["label"] for r in rows] == ["pos", "neg"]
    assert abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-4


@pytest.mark.slow
def test_int8_weights_score_and_predict_like_the_float_ones_and_are_saved_once(trained, tmp_path):
    workdir, results = trained
    scored = inference.evaluate(workdir, int8=True)
    assert abs(scored["eval"]["accuracy"] - results["best"]["metrics"]["accuracy"]) <= 0.02, scored
    size = scored["_size_on_disk"]
    assert 0 < size["int8_bytes"] < size["float_bytes"], size
    saved = json.load(open(os.path.join(workdir, "eval_results_int8.json")))
    assert saved["eval"]["accuracy"] == scored["eval"]["accuracy"]
    int8_steps = os.path.join(workdir, "best_int8")
    step_dir = os.path.join(int8_steps, max(d for d in os.listdir(int8_steps) if d.isdigit()))
    made = os.path.getmtime(step_dir)
    run = load(workdir, int8=True)  # read back from best_int8/, not quantized again
    assert os.path.getmtime(step_dir) == made
    from plm_jax.compress.int8 import Int8Array

    kernels = [x for x in jax.tree.leaves(run.params, is_leaf=lambda x: isinstance(x, Int8Array))
               if isinstance(x, Int8Array)]
    assert kernels and all(str(k.values.dtype) == "int8" for k in kernels)
    texts = ["the happy cat sees the dog near the river because the cat is old .",
             "the dark dog likes the cat at the market because the dog is tall ."]
    (tmp_path / "new.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    inference.predict(workdir, str(tmp_path / "new.txt"), str(tmp_path / "float.jsonl"))
    inference.predict(workdir, str(tmp_path / "new.txt"), str(tmp_path / "int8.jsonl"), int8=True)
    floats, int8s = ([json.loads(line) for line in open(tmp_path / f)] for f in ("float.jsonl", "int8.jsonl"))
    assert [r["label"] for r in int8s] == [r["label"] for r in floats]
    for a, b in zip(floats, int8s):
        assert all(abs(a["probabilities"][k] - b["probabilities"][k]) < 0.02 for k in a["probabilities"])


@pytest.mark.slow
def test_resume_after_sigterm_equals_an_uninterrupted_run(trained, task_files, monkeypatch):
    workdir, results = trained
    resumed = str(task_files / "resumed")
    real_rows = fdata.train_rows

    def rows_then_sigterm(seed, step, *args):
        if step == 37:  # mid-epoch: the loop checkpoints at the next step boundary and leaves
            os.kill(os.getpid(), signal.SIGTERM)
        return real_rows(seed, step, *args)

    monkeypatch.setattr(fdata, "train_rows", rows_then_sigterm)
    first = train(tiny_config(task_files), resumed)
    assert first["interrupted_at"] == 38
    monkeypatch.setattr(fdata, "train_rows", real_rows)
    second = train(tiny_config(task_files), resumed)
    assert second["best"] == results["best"]
    assert tree_equal(load(workdir).params, load(resumed).params)


@pytest.mark.slow
def test_a_work_directory_refuses_another_task(trained, task_files):
    workdir, _ = trained
    config = tiny_config(task_files)
    config.task.seq_len = 48
    with pytest.raises(ValueError, match="holds a fine-tune with another task"):
        train(config, workdir)


def test_bad_input_is_named(task_files, tmp_path):
    config = tiny_config(task_files, batch_size=1024)
    with pytest.raises(ValueError, match="fewer than train.batch_size=1024"):
        train(config, str(tmp_path / "a"))
    config = tiny_config(task_files)
    config.model.vocab_size = VOCAB + 4
    with pytest.raises(ValueError, match="vocabulary has 64 entries but the tokenizer .* has 60"):
        train(config, str(tmp_path / "b"))
    config = tiny_config(task_files)
    config.init = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        train(config, str(tmp_path / "c"))
    config = tiny_config(task_files)
    config.task.kind = "ranking"
    with pytest.raises(ValueError, match="task.kind='ranking'"):
        train(config, str(tmp_path / "d"))
