"""Gradient accumulation and rematerialisation change memory, not the update."""

import jax
import numpy as np
import pytest

from plm_jax.models.config import TransformerConfig
from plm_jax.models.encoder import BertForMaskedLM, dummy_inputs
from plm_jax.parallel import sharding
from plm_jax.train import optimizer
from plm_jax.train import state as state_lib
from plm_jax.train import step as step_lib
from tests.test_sharding import CFG, TRAIN, _batch, make_train


def _one_step(cfg: TransformerConfig, accum_steps: int, mesh_shape=(1, 1, 1)):
    state, train, data_sharding = make_train(cfg, mesh_shape, accum_steps)
    batch = _batch()
    batch["masked_weights"][::3, -1] = 0.0  # uneven weights across microbatches: the mean must still be exact
    state, metrics = train(state, {k: jax.device_put(v, data_sharding) for k, v in batch.items()})
    return metrics, state


@pytest.mark.slow
@pytest.mark.parametrize("accum_steps,mesh_shape", [(4, (1, 1, 1)), (2, (2, 2, 2))])
def test_gradient_accumulation_equals_one_big_batch(accum_steps, mesh_shape):
    cfg = TransformerConfig(**{**CFG.to_dict(), "dropout_rate": 0.0, "attention_dropout_rate": 0.0})
    ref_metrics, ref_state = _one_step(cfg, 1)
    metrics, state = _one_step(cfg, accum_steps, mesh_shape)
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], ref_metrics["grad_norm"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def no_remat_step():
    return _one_step(CFG, 1)  # dropout on: remat must replay the same masks


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch"])
def test_remat_policies_give_the_same_update(policy, no_remat_step):
    ref_metrics, ref_state = no_remat_step
    metrics, state = _one_step(TransformerConfig(**{**CFG.to_dict(), "remat": policy}), 1)
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-5)


def test_bad_accumulation_and_policy_are_named():
    with pytest.raises(ValueError, match="model.remat='some'"):
        TransformerConfig(**{**CFG.to_dict(), "remat": "some"})
    with pytest.raises(ValueError, match="does not split into 3 microbatches"):
        step_lib._microbatches({"x": np.zeros((16, 2))}, 3)
    from plm_jax.config_base import mlm_pretrain_config
    from plm_jax.tasks.pretraining import validate

    config = mlm_pretrain_config()
    config.train.grad_accum_steps = 0  # named, not a ZeroDivisionError
    with pytest.raises(ValueError, match="train.grad_accum_steps must be positive"):
        validate(config)
    config.train.grad_accum_steps = 3
    with pytest.raises(ValueError, match=r"batch_size=32 does not split into 1 processes x train.grad_accum_steps=3"):
        validate(config)


@pytest.mark.slow
def test_bf16_compute_keeps_fp32_parameters_and_loss():
    cfg = TransformerConfig(**{**CFG.to_dict(), "dropout_rate": 0.0, "attention_dropout_rate": 0.0})
    ref_metrics, _ = _one_step(cfg, 1)
    metrics, state = _one_step(TransformerConfig(**{**cfg.to_dict(), "dtype": "bfloat16"}), 1)
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype("float32")}
    assert metrics["loss"].dtype == np.float32
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=2e-2)


def _per_device_bytes(abstract_state) -> int:
    return sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize
               for x in jax.tree.leaves(abstract_state))


@pytest.mark.slow
def test_fsdp_divides_state_bytes_and_compile_only_reports_memory():
    from plm_jax.config_base import mlm_pretrain_config
    from plm_jax.perf.compile_only import compile_only
    from plm_jax.tasks.pretraining import PretrainingTask
    from plm_jax.train.setup import build

    config = mlm_pretrain_config()
    config.model.update(vocab_size=256, num_layers=2, hidden_size=64, num_heads=4, mlp_dim=256, max_len=32)
    config.data.seq_len = 32
    config.train.batch_size = 16
    config.mesh.update(data=8, fsdp=1, tensor=1)
    replicated = _per_device_bytes(build(PretrainingTask(config)).abstract_state)
    config.mesh.update(data=2, fsdp=4, tensor=1)
    sharded = _per_device_bytes(build(PretrainingTask(config)).abstract_state)
    # everything with an `embed` axis is split 4 ways; only a few small biases stay whole
    assert sharded < 0.3 * replicated, (sharded, replicated)
    report = compile_only(config)
    assert report["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert report["argument_size"] > 0 and report["estimated_peak_bytes_per_device"] > 0


@pytest.mark.slow
def test_scanned_layers_match_unscanned_and_checkpoints_restore_into_the_other_layout(tmp_path):
    from plm_jax.models import layout
    from plm_jax.train.checkpoint import Checkpointer

    cfg = TransformerConfig(**{**CFG.to_dict(), "dropout_rate": 0.0, "attention_dropout_rate": 0.0})
    scan_cfg = TransformerConfig(**{**cfg.to_dict(), "scan_layers": True})
    _, state = _one_step(cfg, 1)
    _, scan_state = _one_step(scan_cfg, 1)  # same init key, but scan draws per-layer keys differently
    assert "layers" in scan_state.params["encoder"] and "layer_0" not in scan_state.params["encoder"]
    # the same parameters give the same logits in either layout, and the conversion round-trips exactly
    scanned_params = layout.to_scanned(state.params)
    assert jax.tree.structure(scanned_params) == jax.tree.structure(scan_state.params)
    batch = _batch()
    args = (batch["input_ids"], batch["segment_ids"], batch["positions"], batch["masked_positions"])
    a = BertForMaskedLM(cfg).apply({"params": state.params}, *args)
    b = BertForMaskedLM(scan_cfg).apply({"params": scanned_params}, *args)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    assert jax.tree.all(jax.tree.map(lambda x, y: bool((x == y).all()), layout.to_unscanned(scanned_params),
                                     state.params))
    # a checkpoint of either layout restores into the other, optimizer moments included, onto an FSDP mesh
    mesh = sharding.make_mesh(dict(data=2, fsdp=4, tensor=1), jax.devices()[:8])
    tx = optimizer.make_optimizer(TRAIN)[0]
    for saved, want_cfg, convert in [(state, scan_cfg, layout.to_scanned), (scan_state, cfg, layout.to_unscanned)]:
        directory = str(tmp_path / f"saved_scan_{want_cfg.scan_layers is False}")
        ckpt = Checkpointer(directory)
        ckpt.save(1, saved, {"rows_consumed": 16})
        ckpt.close()
        abstract, _ = state_lib.state_shardings(BertForMaskedLM(want_cfg), tx, dummy_inputs(want_cfg), mesh,
                                                sharding.DEFAULT_RULES)
        restored, data = Checkpointer(directory).restore(1, abstract)
        assert data == {"rows_consumed": 16}
        expected = saved.replace(params=convert(saved.params), opt_state=convert(saved.opt_state))
        assert jax.tree.structure(restored) == jax.tree.structure(abstract)
        for got, want, target in zip(jax.tree.leaves(restored), jax.tree.leaves(expected), jax.tree.leaves(abstract)):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
            assert got.sharding == target.sharding


@pytest.mark.slow
def test_bf16_norm_outputs_carry_a_bf16_residual_stream_and_train_alike():
    from plm_jax.models.layers import EncoderLayer, attention_mask

    cfg = TransformerConfig(**{**CFG.to_dict(), "dropout_rate": 0.0, "attention_dropout_rate": 0.0})
    bf16 = TransformerConfig(**{**cfg.to_dict(), "dtype": "bfloat16"})
    bf16_norms = TransformerConfig(**{**bf16.to_dict(), "norm_dtype": "compute"})
    x = np.ones((2, 8, cfg.hidden_size), np.float32)
    mask = attention_mask(np.ones((2, 8), np.int32))
    for model_cfg, out_dtype in ((bf16, np.float32), (bf16_norms, jax.numpy.bfloat16)):
        layer = EncoderLayer(model_cfg)
        params = layer.init(jax.random.key(0), x, mask, True)
        assert layer.apply(params, x, mask, True).dtype == out_dtype
        assert {p.dtype for p in jax.tree.leaves(params)} == {np.dtype("float32")}
    ref_metrics, _ = _one_step(cfg, 1)
    metrics, _ = _one_step(bf16_norms, 1)
    assert metrics["loss"].dtype == np.float32
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=2e-2)
    with pytest.raises(ValueError, match="model.norm_dtype='bf16'"):
        TransformerConfig(**{**cfg.to_dict(), "norm_dtype": "bf16"})
