"""Int8 weight quantization: per-output-channel scales against numpy, the error bound, stacked layers keep one
scale per layer, and a quantized classifier's logits stay close to fp32."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plm_jax.compress.int8 import Int8Array, dequantize, input_axes, max_error, nbytes, quantize, quantize_array
from plm_jax.models.config import TransformerConfig
from plm_jax.models.heads import finetune_dummy_inputs, sequence_classifier


def test_quantize_array_matches_a_numpy_per_channel_formula_and_bounds_the_error():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 3, 5)).astype(np.float32)  # inputs 6, outputs (3, 5)
    w[:, 1, 2] = 0.0  # an all-zero channel
    q = quantize_array(w, (0,))
    scale = np.abs(w).max(0, keepdims=True) / 127
    scale[scale == 0] = 1.0
    np.testing.assert_allclose(np.asarray(q.scale), scale, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(q.values), np.clip(np.round(w / scale), -127, 127).astype(np.int8))
    assert q.values.dtype == jnp.int8 and q.scale.shape == (1, 3, 5)
    back = np.asarray(q.values, np.float32) * np.asarray(q.scale)
    assert np.all(np.abs(back - w) <= scale / 2 + 1e-7)
    assert np.asarray(quantize_array(-w, (0,)).values).tolist() == (-np.asarray(q.values)).tolist()  # symmetric


def test_which_axes_share_a_scale():
    assert input_axes("kernel", (32, 4, 8), ("embed", "heads", "kv"), bias_ndim=2) == (0,)  # query
    assert input_axes("kernel", (4, 8, 32), ("heads", "kv", "embed"), bias_ndim=1) == (0, 1)  # attention out
    assert input_axes("kernel", (2, 32, 64), ("layers", "embed", "mlp"), bias_ndim=2) == (1,)  # stacked
    assert input_axes("kernel", (32, 97), ("embed", "vocab"), bias_ndim=None) == (0,)  # no bias: last axis out
    assert input_axes("embedding", (97, 32), ("vocab", "embed"), bias_ndim=None) == (1,)  # a row per token
    assert input_axes("position_embeddings", (24, 32), ("pos", "embed"), bias_ndim=None) == (1,)
    assert input_axes("bias", (2, 64), ("layers", "mlp"), bias_ndim=None) is None
    assert input_axes("scale", (32,), ("embed",), bias_ndim=None) is None


@pytest.mark.parametrize("scan", [False, True])
def test_a_quantized_classifier_is_close_to_fp32_and_a_quarter_of_the_size(scan):
    cfg = TransformerConfig(vocab_size=500, hidden_size=64, num_layers=2, num_heads=4, mlp_dim=128, max_len=32,
                            scan_layers=scan)
    model = sequence_classifier(cfg, 3)
    inputs = finetune_dummy_inputs(cfg, 4, 16)
    inputs["input_ids_BxL"] = jax.random.randint(jax.random.key(1), (4, 16), 0, 500)
    boxed = jax.jit(lambda key: model.init(key, **inputs)["params"])(jax.random.key(0))
    params, names = nn.unbox(boxed), nn.get_partition_spec(boxed)
    qparams = quantize(params, names)
    assert max_error(params, qparams) <= 0.5 + 1e-4
    leaves = jax.tree.leaves(qparams, is_leaf=lambda x: isinstance(x, Int8Array))
    kernels = [x for x in leaves if isinstance(x, Int8Array)]
    assert kernels and all(x.values.dtype == jnp.int8 for x in kernels)
    if scan:  # one scale per layer and output channel: the stacked axis is never reduced over
        assert all(x.scale.shape[0] == 2 for x in kernels if x.values.ndim == 3 and x.values.shape[0] == 2)
    ratio = nbytes(params) / nbytes(qparams)
    assert ratio > 3.5, ratio
    logits = jax.jit(lambda p: model.apply({"params": p}, **inputs))(params)
    q_logits = jax.jit(lambda p: model.apply({"params": dequantize(p)}, **inputs))(qparams)
    assert np.max(np.abs(np.asarray(q_logits) - np.asarray(logits))) < 0.02 * max(1.0, np.abs(logits).max())
