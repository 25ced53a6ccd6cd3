"""Continued pretraining (`config.init`: domain- and task-adaptive pretraining): a run starts from another run's
latest parameters, heads included, in its shape and with its tokenizer; another objective is refused."""

import json
import os

import numpy as np
import pytest

from plm_jax.config_base import pretrain_config
from plm_jax.data.tokenizer import train_tokenizer
from plm_jax.errors import UserError
from plm_jax.run import train
from plm_jax.tasks.pretraining import PretrainingTask
from plm_jax.tasks.starting_point import plm_jax_run_params
from tests.corpus import documents as corpus_documents
from tests.corpus import write_corpus


def tiny(corpus: str, objective: str = "mlm", **train_keys):
    c = pretrain_config(objective)
    c.model.update(vocab_size=56, num_layers=2, hidden_size=32, num_heads=2, mlp_dim=64, max_len=48)
    c.data.update(source="text", paths=(corpus,), seq_len=48, shuffle_buffer=64)
    c.train.update(batch_size=8, steps=6, lr=3e-3, warmup_steps=2, log_every=3, eval_every=6, eval_batches=1,
                   checkpoint_every=6, async_checkpoints=False)
    c.train.update(**train_keys)
    return c


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    base = tmp_path_factory.mktemp("continued")
    train(tiny(write_corpus(base / "general.txt", 300)), str(base / "first"))
    return str(base / "first")


@pytest.mark.slow
def test_a_run_continues_from_another_runs_weights_shape_and_tokenizer(first, tmp_path):
    # the task's text: another corpus; the config's model (the default BERT-base shape) gives way to the init's
    config = pretrain_config("mlm")
    config.init = first
    config.data.update(source="text", paths=(write_corpus(tmp_path / "task.txt", 200, seed=7),), seq_len=48,
                       shuffle_buffer=64)
    config.train.update(batch_size=8, steps=2, lr=0.0, warmup_steps=1, log_every=1, eval_every=2, eval_batches=1,
                        checkpoint_every=2, async_checkpoints=False)
    second = str(tmp_path / "second")
    train(config, second)

    shape = PretrainingTask(config).model_cfg
    assert (shape.vocab_size, shape.num_layers, shape.hidden_size, shape.mlp_dim) == (56, 2, 32, 64)
    # with a zero learning rate, two steps leave the start untouched: every subtree came from the first run (a
    # fresh initialisation of any of them would differ)
    heads = ("encoder", "pooler", "mlm_head")
    _, tokenizer_a, params_a = plm_jax_run_params(first, heads=heads)
    os.rename(first, first + ".away")  # the continued run needs nothing of its init: the tokenizer was copied
    try:
        _, tokenizer_b, params_b = plm_jax_run_params(second, heads=heads)
    finally:
        os.rename(first + ".away", first)
    assert set(params_b) == set(heads) and os.path.dirname(tokenizer_b.path) == second
    assert open(tokenizer_b.path, "rb").read() == open(tokenizer_a.path, "rb").read()
    flat_a = dict(_leaves(params_a))
    for path, leaf in _leaves(params_b):
        np.testing.assert_array_equal(leaf, flat_a[path], err_msg=path)


def _leaves(tree, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", np.asarray(value)


def test_an_init_of_another_objective_or_no_run_is_named(tmp_path):
    """Checked when the task is built, before any data is read or any step runs."""
    first = tmp_path / "first"
    (first / "checkpoints").mkdir(parents=True)
    train_tokenizer(corpus_documents(200), 56, first / "tokenizer.model")
    saved = tiny(str(tmp_path / "unused.txt")).to_dict()
    (first / "config.json").write_text(json.dumps(saved), encoding="utf-8")
    config = pretrain_config("causal_lm")
    config.init = str(first)
    with pytest.raises(UserError, match="objective='mlm'; continued pretraining keeps the objective"):
        PretrainingTask(config)
    config = pretrain_config("mlm")
    config.init, config.data.seq_len = str(first), 48
    assert PretrainingTask(config).model_cfg.hidden_size == 32  # the init's shape, not BERT-base's
    config.data.tokenizer = str(first / "tokenizer.model")
    with pytest.raises(UserError, match="continued pretraining uses its init run's tokenizer"):
        PretrainingTask(config)
    config.init, config.data.tokenizer = str(tmp_path / "nowhere"), ""
    with pytest.raises(UserError, match="not a plm_jax pretraining run directory"):
        PretrainingTask(config)
