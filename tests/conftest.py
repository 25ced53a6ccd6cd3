"""Test setup shared by every test: 8 simulated CPU devices, quiet TensorFlow, tiny shared fixtures.

XLA_FLAGS must be set before JAX is imported anywhere, so it lives here at the top.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

