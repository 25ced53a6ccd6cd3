"""A loss that stops being finite stops the run before anything non-finite is saved: the good checkpoints stay,
a resume with a sane learning rate goes on from them, and results.json stays valid JSON."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from plm_jax.config_base import finetune_config, mlm_pretrain_config
from plm_jax.data.tokenizer import train_tokenizer
from plm_jax.errors import UserError
from plm_jax.run import train
from plm_jax.train.rundir import finite_json
from plm_jax.train.trainer import NonFiniteError
from tests import corpus


def _pretrain_config(text: str, steps: int, lr: float):
    c = mlm_pretrain_config()
    c.model.update(vocab_size=56, num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64, max_len=64)
    c.data.update(source="text", paths=(text,), seq_len=64, shuffle_buffer=64)
    c.train.update(batch_size=16, steps=steps, lr=lr, warmup_steps=0, decay="constant", log_every=4,
                   eval_every=100, eval_batches=1, checkpoint_every=4, keep_checkpoints=3, async_checkpoints=False)
    return c


def _steps(workdir: str) -> list[int]:
    return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


@pytest.mark.slow
def test_a_diverging_pretraining_stops_naming_the_step_and_saves_nothing(tmp_path):
    text = corpus.write_corpus(tmp_path / "corpus.txt", 200)
    workdir = str(tmp_path / "run")
    train(_pretrain_config(text, 8, 3e-3), workdir)
    assert _steps(workdir) == [4, 8]
    # the case, a good run resumed at lr=1e6, is refused before a step: a resume must not change the lr
    with pytest.raises(UserError, match=r"train.lr: 0.003 -> 1000000.0"):
        train(_pretrain_config(text, 40, 1e6), workdir)
    assert _steps(workdir) == [4, 8]
    fresh = str(tmp_path / "fresh")  # a run that diverges: stopped at the first log step, nothing saved
    with pytest.raises(NonFiniteError, match=r"(loss|grad_norm) is (nan|inf) at step [1-4] \(train.lr=1000000.0\); "
                                             r"stopped before saving it: no checkpoint was saved"):
        train(_pretrain_config(text, 40, 1e6), fresh)
    assert not [d for d in os.listdir(os.path.join(fresh, "checkpoints")) if d.isdigit()]
    assert not os.path.exists(os.path.join(fresh, "results.json"))


def test_a_diverging_fine_tune_picks_no_nan_best_and_leaves_valid_json(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("eval", 32)):
        corpus.write_sentiment_csv(tmp_path / f"{split}.csv", n, rng)
    c = finetune_config()
    c.tokenizer = str(tmp_path / "spm.model")
    train_tokenizer(corpus.documents(300), 56, c.tokenizer)
    c.model.update(vocab_size=56, num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64, max_len=64)
    c.task.update(source="local", train_file=str(tmp_path / "train.csv"), eval_file=str(tmp_path / "eval.csv"),
                  seq_len=32)
    c.train.update(batch_size=16, epochs=2, lr=1e6, warmup_frac=0.0, log_every=2, async_checkpoints=False)
    with pytest.raises(NonFiniteError, match="at step"):
        train(c, str(tmp_path / "ft"))
    best = tmp_path / "ft" / "best"
    assert not best.exists() or not [d for d in os.listdir(best) if d.isdigit()]
    assert not [d for d in os.listdir(tmp_path / "ft" / "checkpoints") if d.isdigit()]


def test_results_json_has_no_bare_nan():
    out = finite_json({"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": 2})
    assert out == {"a": None, "b": [1.0, None, {"c": None}], "d": 2}
    json.dumps(out, allow_nan=False)
