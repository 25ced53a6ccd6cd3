"""`mesh.cpu_devices`: one CPU device per core, so that XLA:CPU's single-threaded ops still use every core."""

import json
import os
import subprocess
import sys
import types

import pytest

from plm_jax.parallel.distributed import cpu_device_count

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def clean_env(monkeypatch):
    """No device count in XLA_FLAGS (conftest sets 8 for the in-process tests) and the CPU as the platform."""
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")


@pytest.mark.parametrize("setting, batches, cores, expected", [
    (0, [32], 16, 0),  # JAX's default
    (3, [32], 16, 3),  # an explicit count is taken as given (a wrong one fails at the mesh, with its message)
    (-1, [32, 64], 2, 2),
    (-1, [32, 0], 3, 2),  # the largest count that divides the batch: 3 cores, batch 32 -> 2
    (-1, [32, 12], 8, 4),  # ... and every batch size
    (-1, [7], 8, 7),
    (-1, [32], 1, 1),
])
def test_cpu_device_count_resolves_the_setting(clean_env, setting, batches, cores, expected):
    assert cpu_device_count(setting, batches, cores) == expected


def test_cpu_device_count_leaves_an_explicit_xla_flag_and_accelerator_hosts_alone(clean_env, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert cpu_device_count(-1, [32], 4) == 0 and cpu_device_count(2, [32], 4) == 0
    monkeypatch.setenv("XLA_FLAGS", "")
    plugins = types.ModuleType("jax_plugins")
    plugins.__path__ = [os.path.join(ROOT, "plm_jax")]  # any folder with a module in it stands for a plugin
    monkeypatch.setitem(sys.modules, "jax_plugins", plugins)
    monkeypatch.delenv("JAX_PLATFORMS")
    assert cpu_device_count(-1, [32], 4) == 0  # a GPU/TPU host: the CPU is not the training device
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert cpu_device_count(-1, [32], 4) == 4  # ... unless the user asks for the CPU
    with pytest.raises(ValueError, match="mesh.cpu_devices=-2"):
        cpu_device_count(-2, [32], 4)


# a subprocess with no device count in XLA_FLAGS, so that launch.py decides it
CLEAN_ENV = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu", "PLM_JAX_HUGE_PAGES": "0"}
TINY_BENCH = ["launch.py", "bench", "--config", "configs/bench/bert_mini.py", "--config.model.num_layers=1",
              "--config.model.hidden_size=32", "--config.model.num_heads=2", "--config.model.mlp_dim=64",
              "--config.model.vocab_size=512", "--config.data.seq_len=32", "--config.train.batch_size=8",
              "--config.bench.steps=2"]


@pytest.mark.slow
def test_bench_splits_the_batch_over_one_cpu_device_per_core_and_counts_mfu_per_host():
    default = subprocess.run([sys.executable, *TINY_BENCH], cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True,
                             timeout=300)
    assert default.returncode == 0, default.stderr[-2000:]
    cores = len(os.sched_getaffinity(0))
    expected = max(n for n in range(1, cores + 1) if 8 % n == 0)  # one per core, dividing the batch of 8
    assert json.loads(default.stdout.strip().splitlines()[-1])["devices"] == f"{expected}xcpu"
    out = subprocess.run([sys.executable, *TINY_BENCH, "--config.mesh.cpu_devices=2"], cwd=ROOT, env=CLEAN_ENV,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["devices"] == "2xcpu"
    # the two CPU devices share the cores whose matmul rate is the measured peak: MFU is per host, not per device
    mfu = 100 * r["gflop_per_step"] / (r["median_step_ms"] / 1e3) / r["peak_gflops"]
    assert r["mfu_pct_median"] == pytest.approx(mfu, rel=1e-6)
    assert r["tokens_per_sec_per_device"] == pytest.approx(r["tokens_per_sec"] / 2)
    bad = subprocess.run([sys.executable, *TINY_BENCH, "--config.mesh.cpu_devices=-2"], cwd=ROOT, env=CLEAN_ENV,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "mesh.cpu_devices=-2" in bad.stderr, bad.stderr[-2000:]


def test_launch_sizes_the_cpu_devices_of_the_demo_from_all_its_configs(clean_env):
    """`demo` takes no --config: its quickstart and fine-tune configs decide (every batch size must divide)."""
    from plm_jax.demo import demo_configs

    batches = [c.train[k] for c in demo_configs() for k in ("batch_size", "eval_batch_size") if k in c.train]
    code = ("import launch; launch.flags.FLAGS(['launch.py']); "
            "print(launch.config_cpu_devices('demo'), launch.config_cpu_devices('evaluate'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    cores = len(os.sched_getaffinity(0))
    assert out.stdout.split() == [str(cpu_device_count(-1, batches, cores)), "0"]
