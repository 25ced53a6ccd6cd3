"""The MFU denominator: dense matmul peak FLOP/s of one device, from a table for known accelerators (with the
memory bandwidth, for the roofline in roofline.py).

Figures are the vendors' dense (not sparsity) peaks per JAX device. TPU v2/v3 show each core as a device, so the
per-chip figure is halved; v4 and later show one device per chip. XLA's default matmul precision runs fp32
operands as one bf16 pass on TPUs and as TF32 on NVIDIA tensor cores, so fp32 takes those figures. CPUs have no
useful spec-sheet figure: bench.py measures one with a large matmul.
"""

from __future__ import annotations

import re
from typing import Any

import jax.numpy as jnp

# (words in jax.Device.device_kind, lowercase) -> per device: TFLOP/s for (bf16, fp32), and memory (HBM)
# bandwidth in GB/s; most specific first.
_TABLE: tuple[tuple[str, float, float, float], ...] = (
    ("tpu v6", 918.0, 918.0, 1640.0),  # Trillium (v6e)
    ("tpu v5 lite", 197.0, 197.0, 819.0),  # v5e
    ("tpu v5e", 197.0, 197.0, 819.0),
    ("tpu v5p", 459.0, 459.0, 2765.0),
    ("tpu v5", 459.0, 459.0, 2765.0),  # v5p reports "TPU v5"
    ("tpu v4", 275.0, 275.0, 1228.0),
    ("tpu v3", 61.5, 61.5, 450.0),  # 123 TFLOP/s and 900 GB/s per chip, two cores
    ("tpu v2", 22.5, 22.5, 350.0),  # 45 and 700 per chip, two cores
    ("h200", 989.0, 494.5, 4800.0),
    ("h100 pcie", 756.0, 378.0, 2000.0),
    ("h100", 989.0, 494.5, 3350.0),  # SXM
    ("a100 80gb pcie", 312.0, 156.0, 1935.0),
    ("a100-sxm4-80gb", 312.0, 156.0, 2039.0),
    ("a100", 312.0, 156.0, 1555.0),  # 40 GB
    ("l4", 121.0, 60.0, 300.0),
    ("a10g", 70.0, 35.0, 600.0),
    ("v100", 125.0, 15.7, 900.0),  # no TF32: fp32 runs on CUDA cores
)


def _row(device_kind: str) -> tuple[str, float, float, float] | None:
    kind = device_kind.lower()
    for row in _TABLE:
        if re.search(rf"\b{row[0]}\b", kind):  # whole words: "l4" is not the L40S
            return row
    return None


def table_peak_flops(device_kind: str, dtype: Any) -> float | None:
    """FLOP/s for a device kind and compute dtype, or None when the table does not know the device."""
    row = _row(device_kind)
    if row is None:
        return None
    return 1e12 * (row[1] if jnp.dtype(dtype).itemsize <= 2 else row[2])


def table_bandwidth(device_kind: str) -> float | None:
    """Memory bandwidth in bytes/s for a device kind (the roofline's other side), or None when unknown."""
    row = _row(device_kind)
    return None if row is None else 1e9 * row[3]
