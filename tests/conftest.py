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


def pytest_sessionfinish(session, exitstatus):
    import shutil

    if os.environ.get("JAX_COMPILATION_CACHE_DIR") == _CACHE:
        shutil.rmtree(_CACHE, ignore_errors=True)
