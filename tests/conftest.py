"""Test setup shared by every test: 8 simulated CPU devices, quiet TensorFlow, tiny shared fixtures.

XLA_FLAGS must be set before JAX is imported anywhere, so it lives here at the top.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent XLA compilation cache per test session: the many small runs of the suite (a run, its interrupted
# twin, its resume) compile the same programs. A fresh directory each session, so nothing carries over.
_CACHE = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"plm_jax_test_xla_cache_{os.getpid()}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


# The heaviest files first (measured: per-file seconds of a full run, 2026-12-07). pytest-xdist's `--dist loadfile`
# hands whole files to its workers in collection order when given `--no-loadscope-reorder` (by default it orders
# them by their number of tests, which put the few-test, heavy files last and left one worker idle at the end):
# longest first lets the workers finish together. The other files follow in their usual order.
HEAVY_FIRST = (
    "test_every_task.py", "test_translate.py", "test_sweep.py", "test_pretrain_processes.py", "test_pretrain.py",
    "test_configs_and_bench.py", "test_readme.py", "test_train_features.py", "test_finetune_init.py",
    "test_sharding.py", "test_pretrain_objectives.py", "test_decoder_models.py", "test_decoding.py", "test_finetune.py",
    "test_interop_hf.py", "test_curve.py", "test_tagging.py", "test_finetune_decoder.py", "test_distill.py",
    "test_mlm_distillation.py",
    "test_damaged_checkpoints.py", "test_cpu_devices.py", "test_save_failure.py", "test_nonfinite.py",
    "test_data_pipeline.py", "test_data_objectives.py", "test_interop_gpt2.py", "test_model.py", "test_int8.py",
    "test_checkpoint.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.path)), len(HEAVY_FIRST)))  # stable


def pytest_sessionfinish(session, exitstatus):
    import shutil

    if os.environ.get("JAX_COMPILATION_CACHE_DIR") == _CACHE:
        shutil.rmtree(_CACHE, ignore_errors=True)
