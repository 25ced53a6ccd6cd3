"""The roofline's byte counts against array sizes worked out by hand, and against XLA's own cost analysis."""

import jax
import jax.numpy as jnp
import pytest

from plm_jax.perf import roofline
from plm_jax.perf.peak_flops import table_bandwidth

MiB = 2**20


def _traffic(fn, *args):
    compiled = jax.jit(fn).lower(*args).compile()
    return roofline.memory_traffic(compiled.as_text()), compiled


def test_elementwise_pass_moves_its_input_and_output_outside_the_matmuls():
    x = jnp.ones((1024, 1024), jnp.float32)  # 4 MiB
    traffic, _ = _traffic(lambda a: jnp.tanh(a) * 2.0, x)
    assert traffic["matmul_bytes"] == 0
    assert traffic["other_bytes"] == 8 * MiB  # read once, written once
    assert traffic["other_by_source"][0][1] == 8 * MiB


def test_matmul_bytes_are_its_operands_and_result():
    a, b = jnp.ones((512, 256), jnp.float32), jnp.ones((256, 128), jnp.float32)
    traffic, _ = _traffic(lambda x, y: x @ y, a, b)
    assert traffic["matmul_bytes"] == 4 * (512 * 256 + 256 * 128 + 512 * 128)
    assert traffic["other_bytes"] == 0


def test_a_loop_body_counts_once_per_trip():
    x = jnp.ones((1024, 1024), jnp.float32)
    one, _ = _traffic(lambda a: jnp.tanh(a) * 2.0, x)
    looped, _ = _traffic(lambda a: jax.lax.fori_loop(0, 5, lambda i, v: jnp.tanh(v) * 2.0, a), x)
    assert looped["other_bytes"] >= 5 * one["other_bytes"]
    assert looped["other_bytes"] < 7 * one["other_bytes"]  # the loop's own copies are small beside the body


def test_totals_agree_with_xla_cost_analysis_on_a_transformer_layer():
    from plm_jax.models.config import TransformerConfig
    from plm_jax.models.layers import EncoderLayer, attention_mask

    cfg = TransformerConfig(hidden_size=64, num_heads=4, mlp_dim=256, vocab_size=128)
    layer = EncoderLayer(cfg)
    x = jnp.ones((8, 32, 64), jnp.float32)
    mask = attention_mask(jnp.ones((8, 32), jnp.int32))
    params = layer.init(jax.random.key(0), x, mask, True)

    def loss(p, v):
        return jnp.sum(layer.apply(p, v, mask, False, rngs={"dropout": jax.random.key(1)}) ** 2)

    traffic, compiled = _traffic(jax.grad(loss), params, x)
    xla = roofline.xla_bytes_accessed(compiled)
    assert traffic["matmul_bytes"] > 0 and traffic["other_bytes"] > 0
    assert traffic["matmul_bytes"] + traffic["other_bytes"] == pytest.approx(xla, rel=0.1)
    assert any("mlp" in source or "layer_norm" in source for source, _ in traffic["other_by_source"][:10])


def test_ceiling_and_bandwidth_table():
    # 1 TFLOP at 1 PFLOP/s is 1 ms; 2 GB at 2 TB/s is 1 ms: half the step is matmul, so 50%.
    assert roofline.ceiling(1e12, 1e15, 2e9, 2e12) == pytest.approx(50.0)
    assert roofline.ceiling(1e12, 1e15, 0.0, 2e12) == pytest.approx(100.0)
    assert table_bandwidth("NVIDIA H200") == 4.8e12
    assert table_bandwidth("NVIDIA A100-SXM4-80GB") == 2.039e12
    assert table_bandwidth("NVIDIA A100-SXM4-40GB") == 1.555e12
    assert table_bandwidth("TPU v5 lite") == 819e9
    assert table_bandwidth("cpu") is None
    assert roofline.measure_bandwidth(megabytes=16, reps=1) > 1e8


def test_shape_bytes_reads_arrays_and_tuples():
    assert roofline.shape_bytes("bf16[4,8]{1,0}") == 64
    assert roofline.shape_bytes("(f32[2,3], s32[], pred[5])") == 24 + 4 + 5
    with pytest.raises(ValueError, match="ENTRY"):
        roofline.memory_traffic("%f (x: f32[]) -> f32[] {\n  ROOT %y = f32[] negate(%x)\n}")
