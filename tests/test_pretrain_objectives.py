"""Causal-LM (GPT) and span-corruption (T5) pretraining through the one pretraining loop: learning, exact resume,
compile-only, refusals; and sampling from the trained causal LM."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from plm_jax.config_base import pretrain_config
from plm_jax.data.tokenizer import train_tokenizer
from plm_jax.perf.compile_only import compile_only
from plm_jax.run import train
from plm_jax.tasks.pretraining import PretrainingTask
from plm_jax.train.checkpoint import Checkpointer
from plm_jax.train.setup import build
from tests.corpus import write_corpus

SENTINELS = 12


def tiny(objective: str, corpus: str, steps: int = 40):
    c = pretrain_config(objective)
    extra = SENTINELS if objective == "span_corruption" else 0
    c.model.update(vocab_size=56 + extra, num_layers=2, hidden_size=32, num_heads=4, mlp_dim=64, max_len=48)
    c.data.update(source="text", paths=(corpus,), seq_len=48, shuffle_buffer=64, num_sentinels=SENTINELS)
    c.train.update(batch_size=8, steps=steps, lr=3e-3, warmup_steps=4, log_every=10, eval_every=20, eval_batches=2,
                   checkpoint_every=20, keep_checkpoints=5, async_checkpoints=False)
    c.mesh.update(data=2, fsdp=2, tensor=2)
    return c


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("objectives") / "corpus.txt", 600)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["causal_lm", "span_corruption"])
def test_objective_learns_and_resumes_exactly(objective, corpus, tmp_path):
    full = train(tiny(objective, corpus), str(tmp_path / "full"))
    assert full["eval_at_end"]["loss"] < full["eval_at_start"]["loss"] - 0.5
    with open(tmp_path / "full" / "config.json") as f:
        assert json.load(f)["objective"] == objective
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")  # as if the run had been killed after step 20
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "40")
    resumed = train(tiny(objective, corpus), str(tmp_path / "resumed"))
    assert resumed["eval_at_end"]["loss"] == full["eval_at_end"]["loss"]
    setup = build(PretrainingTask(tiny(objective, corpus)))
    trees = []
    for run in ("full", "resumed"):
        ckpt = Checkpointer(str(tmp_path / run / "checkpoints"), use_async=False)
        trees.append(jax.device_get(ckpt.restore(40, setup.abstract_state)[0].params))
        ckpt.close()
    jax.tree.map(np.testing.assert_array_equal, *trees)


@pytest.mark.slow
def test_compile_only_knows_every_objective(corpus):
    for objective in ("causal_lm", "span_corruption"):
        report = compile_only(tiny(objective, corpus))
        assert report["params"] > 0 and report["estimated_peak_bytes_per_device"] > 0


def test_a_workdir_keeps_its_objective_and_mismatches_are_refused(corpus, tmp_path):
    c = tiny("causal_lm", corpus)
    c.objective = "span_corruption"
    with pytest.raises(ValueError, match="decoder cross-attends to an encoder's output"):
        train(c, str(tmp_path / "bad"))
    assert not (tmp_path / "bad" / "checkpoints").exists()
    c = tiny("span_corruption", corpus)
    train_tokenizer(open(corpus).read().splitlines(), 56, tmp_path / "spm.model")
    c.data.tokenizer = str(tmp_path / "spm.model")
    c.model.vocab_size = 56  # forgot the sentinels
    with pytest.raises(ValueError, match=r"56 pieces \+ 12 sentinels\) does not match model.vocab_size=56"):
        train(c, str(tmp_path / "vocab"))
    os.makedirs(tmp_path / "mlm" / "checkpoints" / "1", exist_ok=True)  # a run that saved a step
    (tmp_path / "mlm" / "config.json").write_text(json.dumps({"objective": "mlm", "model": {}}))
    with pytest.raises(ValueError, match="holds a run of objective='mlm'"):
        train(tiny("causal_lm", corpus), str(tmp_path / "mlm"))


@pytest.mark.slow
def test_generate_continues_prompts_from_a_causal_lm_run(corpus, tmp_path):
    from plm_jax.inference import generate_samples

    train(tiny("causal_lm", corpus, steps=20), str(tmp_path / "gpt"))
    (tmp_path / "prompts.txt").write_text("the\n\n", encoding="utf-8")
    out = tmp_path / "samples.jsonl"
    assert generate_samples(str(tmp_path / "gpt"), str(tmp_path / "prompts.txt"), str(out), max_new_tokens=8,
                            temperature=0.0) == 2
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["the", ""] and all(isinstance(r["continuation"], str) for r in records)
    with pytest.raises(ValueError, match="exceed the model's max_len=48"):
        generate_samples(str(tmp_path / "gpt"), str(tmp_path / "prompts.txt"), str(out), max_new_tokens=60)
