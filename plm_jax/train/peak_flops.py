"""The MFU denominator: dense matmul peak FLOP/s of one device, from a table for known accelerators.

Figures are the vendors' dense (not sparsity) peaks per JAX device. TPU v2/v3 show each core as a device, so the
per-chip figure is halved; v4 and later show one device per chip. XLA's default matmul precision runs fp32
operands as one bf16 pass on TPUs and as TF32 on NVIDIA tensor cores, so fp32 takes those figures. CPUs have no
useful spec-sheet figure: bench.py measures one with a large matmul.
"""

from __future__ import annotations

import re
from typing import Any

import jax.numpy as jnp

# (words in jax.Device.device_kind, lowercase) -> TFLOP/s per device for (bf16, fp32); most specific first.
_TABLE: tuple[tuple[str, float, float], ...] = (
    ("tpu v6", 918.0, 918.0),  # Trillium (v6e)
    ("tpu v5 lite", 197.0, 197.0),  # v5e
    ("tpu v5e", 197.0, 197.0),
    ("tpu v5p", 459.0, 459.0),
    ("tpu v5", 459.0, 459.0),  # v5p reports "TPU v5"
    ("tpu v4", 275.0, 275.0),
    ("tpu v3", 61.5, 61.5),  # 123 per chip, two cores
    ("tpu v2", 22.5, 22.5),  # 45 per chip, two cores
    ("h200", 989.0, 494.5),
    ("h100 pcie", 756.0, 378.0),
    ("h100", 989.0, 494.5),  # SXM
    ("a100", 312.0, 156.0),
    ("l4", 121.0, 60.0),
    ("a10g", 70.0, 35.0),
    ("v100", 125.0, 15.7),  # no TF32: fp32 runs on CUDA cores
)


def table_peak_flops(device_kind: str, dtype: Any) -> float | None:
    """FLOP/s for a device kind and compute dtype, or None when the table does not know the device."""
    kind = device_kind.lower()
    half = jnp.dtype(dtype).itemsize <= 2
    for key, bf16, fp32 in _TABLE:
        if re.search(rf"\b{key}\b", kind):  # whole words: "l4" is not the L40S
            return 1e12 * (bf16 if half else fp32)
    return None
