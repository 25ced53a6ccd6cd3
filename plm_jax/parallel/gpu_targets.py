"""Compile for NVIDIA GPUs this host does not have (`launch.py compile-only --target=h100:8`).

XLA compiles for a GPU from a description of it (a GpuTargetConfigProto) without the device: JAX's CUDA plugin
makes compile-only devices for a topology of hosts x GPUs. Nothing runs and nothing is autotuned, so the
memory estimate, the fused program and its bytes are the real compiler's, but kernel choices may differ a little
from a run on the device. It needs the plugin (`pip install "jax[cuda12]==<your jax version>"`), not a GPU.

The descriptions below keep the fields XLA's GPU compiler reads, with the values of XLA's own device specs
(xla/backends/gpu/target_config/specs, Apache-2.0).
"""

from __future__ import annotations

from typing import Any

from plm_jax.errors import UserError

_TEMPLATE = """gpu_device_info {{
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: {smem_per_core} threads_per_core_limit: 2048 core_count: {cores}
  fpus_per_core: {fpus} block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: {bandwidth} l2_cache_size: {l2} clock_rate_ghz: {ghz} device_memory_size: {memory}
  shared_memory_per_block_optin: {smem_optin} cuda_compute_capability {{ major: {major} }}
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 10 patch: 0 }}
device_description_str: "{name}"
"""
_HOPPER = dict(smem_per_core=233472, cores=132, fpus=128, l2=52428800, ghz=1.98, smem_optin=232448, major=9)
_AMPERE = dict(smem_per_core=167936, cores=108, fpus=64, l2=41943040, ghz=1.41, smem_optin=166912, major=8)

TARGETS: dict[str, str] = {
    "h100": _TEMPLATE.format(**_HOPPER, bandwidth=3352320000000, memory=84942979072, name="NVIDIA H100 80GB HBM3"),
    "h200": _TEMPLATE.format(**_HOPPER, bandwidth=4800000000000, memory=151397597184,
                             name="NVIDIA H200 141GB HBM3e"),
    "a100": _TEMPLATE.format(**_AMPERE, bandwidth=2039040000000, memory=85100068864, name="NVIDIA A100-SXM4-80GB"),
}
GPUS_PER_HOST = 8


def parse_target(target: str) -> tuple[str, int]:
    """'h100' -> ('h100', 1); 'h200:16' -> ('h200', 16): a GPU kind and how many of them."""
    kind, _, count = target.lower().partition(":")
    if kind not in TARGETS:
        raise UserError(f"--target={target!r}: known GPUs are {', '.join(sorted(TARGETS))} (add ':N' for N of them)")
    if count and not (count.isdigit() and int(count) > 0):
        raise UserError(f"--target={target!r}: the count after ':' must be a positive integer")
    n = int(count or 1)
    if n > GPUS_PER_HOST and n % GPUS_PER_HOST:
        raise UserError(f"--target={target!r}: more than {GPUS_PER_HOST} GPUs come as whole hosts of "
                         f"{GPUS_PER_HOST}")
    return kind, n


def target_devices(target: str) -> list[Any]:
    """Compile-only devices for `target`: one host of N GPUs, or N / 8 hosts of 8."""
    kind, n = parse_target(target)
    hosts, per_host = (1, n) if n <= GPUS_PER_HOST else (n // GPUS_PER_HOST, GPUS_PER_HOST)
    from jax.experimental import topologies

    try:
        topology = topologies.get_topology_desc("plm_jax", "cuda", target_config=TARGETS[kind],
                                                topology=f"1x{hosts}x{per_host}")
    except (NotImplementedError, RuntimeError, ValueError) as err:
        import jax

        raise RuntimeError(
            f"--target={target}: compiling for a GPU needs JAX's CUDA plugin, but not a GPU: "
            f'pip install "jax[cuda12]=={jax.__version__}" ({type(err).__name__}: {err})') from err
    return list(topology.devices)
