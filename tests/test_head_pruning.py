"""Head pruning (compress/head_pruning.py, tasks/pruning.py): Michel et al.'s importance checked against finite
differences of the plain model, a pruned model equal to the full one with those heads silenced, and the re-fine-tune
of a pruned fine-tune through the one trainer (model.json, results.json, evaluate, int8, one-line errors)."""

import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from plm_jax.compress.head_pruning import head_importance, heads_to_keep, prune_heads
from plm_jax.config_base import finetune_config
from plm_jax.data.tokenizer import train_tokenizer
from plm_jax.errors import UserError
from plm_jax.inference import evaluate
from plm_jax.models.config import TransformerConfig
from plm_jax.models.encoder import Encoder
from plm_jax.models.flops import encoder_flops_per_token
from plm_jax.run import build_task, train
from tests import corpus

CFG = TransformerConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=4, mlp_dim=32, max_len=12,
                        dropout_rate=0.0, attention_dropout_rate=0.0)


def _inputs(rng):
    ids_BxL = jnp.asarray(rng.integers(1, CFG.vocab_size, (3, CFG.max_len)), jnp.int32)
    segments_BxL = jnp.asarray(np.r_[[[1] * 12], [[1] * 7 + [0] * 5], [[1] * 5 + [2] * 7]], jnp.int32)
    return ids_BxL, segments_BxL, jnp.broadcast_to(jnp.arange(CFG.max_len), (3, CFG.max_len))


def _per_example_loss(model, params, inputs, readout_D):
    x_BxLxD = model.apply({"params": params}, *inputs)
    return jnp.sum(jnp.tanh(x_BxLxD @ readout_D) * (inputs[1] != 0), axis=1)  # B


def test_importance_equals_finite_differences_of_each_heads_output():
    with enable_x64():  # float64 but for the softmax (float32 in the model), so that differences are exact to 1e-4
        cfg = dataclasses.replace(CFG, dtype="float64", norm_dtype="compute")
        rng = np.random.default_rng(0)
        model, inputs = Encoder(cfg), _inputs(rng)
        params = jax.tree.map(lambda x: np.asarray(x, np.float64),
                              nn.meta.unbox(model.init(jax.random.key(1), *inputs)["params"]))
        readout_D = jnp.asarray(rng.normal(size=cfg.hidden_size))
        weights_B = np.array([1.0, 1.0, 0.0])  # the third example is padding: it adds nothing

        def loss_sums(p, batch):
            w_B = batch["example_weights"]
            return jnp.sum(_per_example_loss(model, p, inputs, readout_D) * w_B), jnp.sum(w_B)

        got_NxH = head_importance(loss_sums, params, [{"example_weights": weights_B}], cfg.num_layers,
                                  cfg.num_heads)

        # the reference: scale head h's rows of the output projection by 1 +- eps (a gate on its output)
        eps, want_NxH = 1e-2, np.zeros((cfg.num_layers, cfg.num_heads))
        for layer in range(cfg.num_layers):
            for head in range(cfg.num_heads):
                losses = []
                for sign in (1, -1):
                    scaled = jax.tree.map(np.array, params)
                    scaled[f"layer_{layer}"]["attention"]["out"]["kernel"][head] *= 1 + sign * eps
                    losses.append(np.asarray(_per_example_loss(model, scaled, inputs, readout_D)))
                derivative_B = (losses[0] - losses[1]) / (2 * eps)  # each example's own derivative
                want_NxH[layer, head] = np.sum(weights_B * np.abs(derivative_B)) / weights_B.sum()
    np.testing.assert_allclose(got_NxH, want_NxH, rtol=1e-4)
    assert got_NxH.min() > 0


def test_a_pruned_model_equals_the_full_one_with_the_other_heads_silenced():
    rng = np.random.default_rng(1)
    model, inputs = Encoder(CFG), _inputs(rng)
    params = jax.device_get(nn.meta.unbox(model.init(jax.random.key(2), *inputs)["params"]))
    kept_NxK = np.array([[0, 3], [1, 2]])
    silenced = jax.tree.map(np.array, params)
    for layer, kept in enumerate(kept_NxK):
        dropped = [h for h in range(CFG.num_heads) if h not in kept]
        silenced[f"layer_{layer}"]["attention"]["out"]["kernel"][dropped] = 0.0
    pruned_cfg = TransformerConfig(**{**CFG.to_dict(), "num_heads": 2, "head_dim": CFG.kv_dim})
    pruned = prune_heads({"encoder": params}, kept_NxK)["encoder"]
    assert pruned["layer_0"]["attention"]["query"]["kernel"].shape == (16, 2, 4)
    assert pruned["layer_1"]["attention"]["out"]["kernel"].shape == (2, 4, 16)
    np.testing.assert_allclose(Encoder(pruned_cfg).apply({"params": pruned}, *inputs),
                               model.apply({"params": silenced}, *inputs), rtol=1e-5, atol=1e-5)
    # the attention matmuls shrink with the heads: 2 x 4 x d x (heads x head_dim) and 2 x 2 x L x (heads x head_dim)
    assert encoder_flops_per_token(CFG, 12) - encoder_flops_per_token(pruned_cfg, 12) == 2 * (
        2 * 4 * 16 * 8 + 2 * 2 * 12 * 8)


def test_each_layer_keeps_its_most_important_heads_in_their_order():
    importance_NxH = np.array([[0.1, 0.5, 0.3, 0.5], [4.0, 0.0, 1.0, 2.0]])
    np.testing.assert_array_equal(heads_to_keep(importance_NxH, 2), [[1, 3], [0, 3]])
    np.testing.assert_array_equal(heads_to_keep(importance_NxH, 1), [[1], [0]])  # a tie goes to the lower index


def test_head_dim_is_checked_and_defaults_to_the_width_over_the_heads():
    assert CFG.kv_dim == 4 and CFG.attention_dim == 16
    assert TransformerConfig(hidden_size=16, num_heads=3, head_dim=4).attention_dim == 12
    with pytest.raises(UserError, match="not divisible by model.num_heads=3"):
        TransformerConfig(hidden_size=16, num_heads=3)
    with pytest.raises(UserError, match="head_dim=-1"):
        TransformerConfig(head_dim=-1)


# ------------------------------------------------------------ through the trainer

VOCAB = 60


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    base = tmp_path_factory.mktemp("prune")
    train_tokenizer(corpus.documents(500), VOCAB, base / "spm.model")
    rng = np.random.default_rng(0)
    for split, n in (("train", 256), ("eval", 96)):
        corpus.write_sentiment_csv(base / f"{split}.csv", n, rng)
    workdir = str(base / "full")
    results = train(_config(base, epochs=6), workdir)
    return base, workdir, results


def _config(base, epochs, init="", **changes):
    c = finetune_config()
    c.init = init
    if not init:
        c.tokenizer = str(base / "spm.model")
        c.model.update(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_len=64)
    c.task.update(source="local", train_file=str(base / "train.csv"), eval_file=str(base / "eval.csv"), seq_len=60)
    c.train.update(batch_size=32, epochs=epochs, lr=3e-3, warmup_frac=0.1, log_every=4, async_checkpoints=False,
                   eval_at_start=True)
    c.update_from_flattened_dict(changes)
    return c


def _first_eval(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return next(r for r in rows if r["split"] == "eval")


@pytest.mark.slow
def test_a_finetune_goes_on_from_a_finetune_and_a_pruned_one_retrains(finetuned):
    base, full_dir, full_results = finetuned
    assert full_results["best"]["metrics"]["accuracy"] >= 0.85, full_results["best"]

    # --init a fine-tune: its head comes along, so the first evaluation is the run's best
    goes_on = str(base / "goes_on")
    train(_config(base, epochs=1, init=full_dir, **{"train.lr": 1e-9}), goes_on)
    first = _first_eval(goes_on)
    assert (first["step"], first["loss"]) == (0, pytest.approx(full_results["best"]["metrics"]["loss"])), first

    pruned_dir = str(base / "pruned")
    results = train(_config(base, epochs=2, init=full_dir, **{"prune.heads": 1, "prune.examples": 100}), pruned_dir)
    record = results["head_pruning"]
    assert record["heads_kept"] == 1 and record["heads_before"] == 4 and record["examples"] == 100
    importance_NxH = np.array(record["importance"])
    np.testing.assert_array_equal(np.array(record["kept"])[:, 0], importance_NxH.argmax(axis=1))
    model = json.load(open(os.path.join(pruned_dir, "model.json")))["model"]
    assert (model["num_heads"], model["head_dim"], model["hidden_size"]) == (1, 8, 32)
    assert results["starting_point"]["source"] == f"{full_dir} (1 of 4 heads a layer)"
    assert results["best"]["metrics"]["accuracy"] >= 0.75, results["best"]
    # the pruned run stands alone: evaluate, int8
    assert evaluate(pruned_dir)["eval"]["accuracy"] == pytest.approx(results["best"]["metrics"]["accuracy"])
    assert evaluate(pruned_dir, int8=True)["eval"]["accuracy"] >= 0.7


@pytest.mark.slow
def test_pruning_and_a_finetune_start_refuse_what_they_cannot_use(finetuned, tmp_path):
    base, full_dir, _ = finetuned
    with pytest.raises(UserError, match="prune.heads=5: keep 1 to 4"):
        build_task(_config(base, epochs=1, init=full_dir, **{"prune.heads": 5}))
    with pytest.raises(UserError, match="prune.heads needs --init a fine-tune"):
        build_task(_config(base, epochs=1, **{"prune.heads": 1}))
    with pytest.raises(UserError, match="prune.examples=0"):
        build_task(_config(base, epochs=1, init=full_dir, **{"prune.heads": 1, "prune.examples": 0}))
    scores = tmp_path / "scores.csv"
    scores.write_text(open(base / "train.csv").read().replace(",pos", ",1.0").replace(",neg", ",0.0"))
    with pytest.raises(UserError, match="is a classification fine-tune; this run is regression"):
        build_task(_config(base, epochs=1, init=full_dir, **{"task.kind": "regression", "task.train_file": str(scores),
                                                             "task.eval_file": str(scores)}))
    with pytest.raises(UserError, match="classifies from task.pooling='cls'; this run has 'mean'"):
        build_task(_config(base, epochs=1, init=full_dir, **{"task.pooling": "mean"}))
    other_labels = tmp_path / "train.csv"
    other_labels.write_text(open(base / "train.csv").read().replace(",pos", ",good").replace(",neg", ",bad"))
    with pytest.raises(UserError, match=r"predicts the labels \['neg', 'pos'\]; this task's are \['bad', 'good'\]"):
        build_task(_config(base, epochs=1, init=full_dir, **{"task.train_file": str(other_labels)}))


@pytest.mark.slow
def test_a_scanned_model_prunes_the_same_heads(finetuned):
    base, full_dir, _ = finetuned
    plain = build_task(_config(base, epochs=1, init=full_dir, **{"prune.heads": 2, "prune.examples": 64}))
    scanned = build_task(_config(base, epochs=1, init=full_dir, **{"prune.heads": 2, "prune.examples": 64,
                                                                 "model_overrides.scan_layers": True}))
    assert scanned.model_cfg.scan_layers and scanned.model_cfg.num_heads == 2
    assert scanned.pruning["kept"] == plain.pruning["kept"]
    np.testing.assert_allclose(scanned.pruning["importance"], plain.pruning["importance"], rtol=1e-5)
    query = scanned.start.params["encoder"]["layers"]["layer"]["attention"]["query"]["kernel"]
    assert query.shape == (2, 32, 2, 8)  # layers x embed x heads x head_dim
