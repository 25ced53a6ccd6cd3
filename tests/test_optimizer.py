"""Schedule values and the weight-decay mask, against hand-computed numbers."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from plm_jax.train.optimizer import learning_rate_schedule, make_optimizer, weight_decay_mask


def _cfg(**kw):
    base = dict(steps=100, warmup_steps=10, lr=1e-3, end_lr_fraction=0.1, decay="linear", clip_norm=1.0,
                b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.1)
    return ml_collections.ConfigDict({**base, **kw})


def test_linear_warmup_then_linear_decay():
    s = learning_rate_schedule(_cfg())
    np.testing.assert_allclose([s(0), s(5), s(10), s(55), s(100)], [0, 5e-4, 1e-3, 5.5e-4, 1e-4], rtol=1e-5)


def test_cosine_decay_ends_at_fraction():
    s = learning_rate_schedule(_cfg(decay="cosine"))
    np.testing.assert_allclose([s(10), s(55), s(100)], [1e-3, 1e-4 + 0.5 * 9e-4, 1e-4], rtol=1e-5)


def test_bad_schedule_named():
    with pytest.raises(ValueError, match="train.decay='exp'"):
        learning_rate_schedule(_cfg(decay="exp"))
    with pytest.raises(ValueError, match="warmup_steps=200"):
        learning_rate_schedule(_cfg(warmup_steps=200))


def test_weight_decay_skips_bias_and_layer_norm():
    params = {"layer_0": {"mlp": {"wi": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}},
                          "attention_layer_norm": {"scale": jnp.ones(2), "bias": jnp.ones(2)}},
              "embeddings": {"word_embeddings": {"embedding": jnp.ones((3, 2))}}}
    mask = weight_decay_mask(params)
    assert mask["layer_0"]["mlp"]["wi"] == {"kernel": True, "bias": False}
    assert mask["layer_0"]["attention_layer_norm"] == {"scale": False, "bias": False}
    assert mask["embeddings"]["word_embeddings"]["embedding"]
    # with zero gradients, only decayed leaves move, by lr * wd * p (AdamW's decoupled decay)
    tx, _ = make_optimizer(_cfg(warmup_steps=0, clip_norm=0.0))
    updates, _ = tx.update(optax.tree_utils.tree_zeros_like(params), tx.init(params), params)
    np.testing.assert_allclose(updates["layer_0"]["mlp"]["wi"]["kernel"], -1e-3 * 0.1 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_array_equal(updates["layer_0"]["mlp"]["wi"]["bias"], 0.0)
    np.testing.assert_array_equal(updates["layer_0"]["attention_layer_norm"]["scale"], 0.0)
