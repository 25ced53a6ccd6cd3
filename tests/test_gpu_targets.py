"""`launch.py compile-only --target`: GPU descriptions, their parsing, and clear errors where they cannot work."""

import importlib.util
import os
import re
import subprocess
import sys

import jax.numpy as jnp
import pytest

from plm_jax.parallel import gpu_targets
from plm_jax.perf.peak_flops import table_bandwidth, table_peak_flops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_CUDA_PLUGIN = importlib.util.find_spec("jax_plugins") is not None and \
    importlib.util.find_spec("jax_plugins.xla_cuda12") is not None


def _one_layer_mlm(seq_len: int, batch_size: int, mesh: tuple[int, int, int], **model):
    """A 1-layer MLM pretraining config (hidden 64, 4 heads unless `model` says otherwise) to compile."""
    from plm_jax.config_base import mlm_pretrain_config

    config = mlm_pretrain_config()
    config.model.update(**{**dict(num_layers=1, hidden_size=64, num_heads=4, mlp_dim=128, max_len=seq_len), **model})
    config.data.seq_len = seq_len
    config.train.batch_size = batch_size
    config.mesh.update(data=mesh[0], fsdp=mesh[1], tensor=mesh[2])
    return config


def test_targets_parse_and_bad_ones_are_named():
    assert gpu_targets.parse_target("h100") == ("h100", 1)
    assert gpu_targets.parse_target("H200:16") == ("h200", 16)
    with pytest.raises(ValueError, match="known GPUs are a100, h100, h200"):
        gpu_targets.parse_target("h300")
    with pytest.raises(ValueError, match="positive integer"):
        gpu_targets.parse_target("h100:0")
    with pytest.raises(ValueError, match="whole hosts of 8"):
        gpu_targets.parse_target("a100:12")


@pytest.mark.parametrize("kind", sorted(gpu_targets.TARGETS))
def test_each_target_is_a_device_the_peak_table_knows(kind):
    """The name a target compiles for finds the MFU peak and the same memory bandwidth (within 1%) in
    peak_flops.py, so compile-only can give the roofline ceiling for it."""
    text = gpu_targets.TARGETS[kind]
    name = re.search(r'device_description_str: "([^"]+)"', text).group(1)
    bandwidth = float(re.search(r"memory_bandwidth: (\d+)", text).group(1))
    assert table_peak_flops(name, jnp.bfloat16) is not None
    assert bandwidth == pytest.approx(table_bandwidth(name), rel=0.01)


def test_compile_only_reports_the_roofline_on_this_host():
    from plm_jax.perf.compile_only import compile_only

    report = compile_only(_one_layer_mlm(32, 8, (-1, 1, 1), vocab_size=256, hidden_size=32, num_heads=2, mlp_dim=64))
    assert report["device_kind"] == "cpu" and report["estimated_peak_bytes_per_device"] > 0
    assert report["matmul_gb_per_step"] > 0 and report["other_gb_per_step"] > 0 and report["other_gb_top"]
    assert "mfu_ceiling_pct" not in report  # no spec-sheet peak for a CPU


@pytest.mark.skipif(HAS_CUDA_PLUGIN, reason="the CUDA plugin is installed here: the target would compile")
def test_a_gpu_target_without_the_cuda_plugin_says_what_to_install():
    out = subprocess.run([sys.executable, "launch.py", "compile-only", "--config", "configs/bench/bert_mini.py",
                          "--target=h100"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert 'needs JAX\'s CUDA plugin, but not a GPU: pip install "jax[cuda12]==' in out.stderr
    bad = subprocess.run([sys.executable, "launch.py", "compile-only", "--config", "configs/bench/bert_mini.py",
                          "--target=h300"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "known GPUs are a100, h100, h200" in bad.stderr


@pytest.mark.skipif(not HAS_CUDA_PLUGIN, reason="needs JAX's CUDA plugin (no GPU): pip install jax[cuda12]")
def test_compile_for_two_h100s_without_a_gpu():
    from plm_jax.perf.compile_only import compile_only

    config = _one_layer_mlm(32, 8, (1, 2, 1), vocab_size=256, dtype="bfloat16")
    report = compile_only(config, gpu_targets.target_devices("h100:2"))
    assert report["device_kind"] == "NVIDIA H100 80GB HBM3" and report["mesh"]["fsdp"] == 2
    assert 0 < report["mfu_ceiling_pct"] < 100 and report["estimated_peak_bytes_per_device"] > 0


@pytest.mark.skipif(not HAS_CUDA_PLUGIN, reason="needs JAX's CUDA plugin (no GPU): pip install jax[cuda12]")
def test_bf16_mlm_step_on_a_gpu_keeps_no_fp32_vocabulary_sized_tensor():
    """The MLM loss's backward pass recomputes the softmax from the bf16 logits: no fused kernel writes an fp32
    predictions x vocabulary tensor (with the head's bias added in fp32, XLA wrote exp(logits - max))."""
    from plm_jax.perf import roofline
    from plm_jax.tasks.pretraining import PretrainingTask
    from plm_jax.train.setup import build

    config = _one_layer_mlm(128, 16, (1, 1, 1), vocab_size=4096, dtype="bfloat16", attention="cudnn",
                            attention_dropout_rate=0.0)
    setup = build(PretrainingTask(config), gpu_targets.target_devices("h200"))
    batch = setup.abstract_batch(config.train.batch_size)
    hlo = setup.train_step.lower(setup.abstract_state, batch).compile().as_text()
    computations, _, entry = roofline._parse(hlo)
    written = [(name, shape) for name, shape, opcode, _ in computations[entry]
               if opcode == "fusion" and re.search(r"f32\[[\d,]*,4096\]", shape)]
    assert any(re.search(r"bf16\[[\d,]*,4096\]", shape) for _, shape, _, _ in computations[entry])  # the logits
    assert not written, written
