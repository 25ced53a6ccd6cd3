"""Joining a multi-host run through JAX's own runtime (`jax.distributed`), before any JAX computation.

Three ways in: explicit flags (coordinator address, process count and id: GPUs, CPUs, anything);
`auto` (JAX detects Cloud TPU VM pods, SLURM and other clusters from their environment); or nothing (one process).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import pkgutil
from collections.abc import Mapping, Sequence
from typing import Any

import jax

from plm_jax.errors import UserError

log = logging.getLogger("plm_jax")


def initialize(
    coordinator: str | None = None,
    num_processes: int = 1,
    process_id: int | None = None,
    *,
    auto: bool = False,
    cpu_devices: int = 0,
    timeout_s: int = 100,
) -> None:
    """Must run before the first JAX operation. `cpu_devices` > 0 simulates that many devices per process.

    `timeout_s` bounds both the wait for all processes to join and how long the others keep going after one
    stops answering (the coordination service's heartbeat): a dead host ends the run, it does not hang it.
    """
    if cpu_devices:
        jax.config.update("jax_num_cpu_devices", cpu_devices)
        log.info("the CPU platform has %d devices (mesh.cpu_devices or --cpu_devices)", cpu_devices)
    if auto:
        jax.distributed.initialize(initialization_timeout=timeout_s)
    elif num_processes > 1:
        if not coordinator or process_id is None:
            raise UserError("a multi-process run needs --coordinator=host:port and --process_id")
        if not 0 <= process_id < num_processes:
            raise UserError(f"--process_id={process_id} is outside [0, {num_processes})")
        jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=timeout_s,
                                   heartbeat_timeout_seconds=timeout_s)
    else:
        return
    log.info("process %d of %d; %d local and %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())


def cpu_device_count(setting: int, batch_sizes: Sequence[int], cores: int | None = None) -> int:
    """The CPU device count to ask JAX for (`mesh.cpu_devices`), or 0 to leave JAX's default alone.

    Why several devices on one CPU: XLA:CPU runs each device's program on its own thread, and inside one program
    many ops (the batched attention dots, small fusions) run on a single core. One device per core with the batch
    split over them (data parallel) keeps every core busy. Measured on 2 cores against one device: the quickstart
    1.28x the tokens/s, BERT-mini 1.17x, BERT-small 1.07x (seq 128). Each device holds a replica of the state, so
    on a many-core host with little memory, set a small count or 0.

    `setting`: 0 = JAX's default (one device, or XLA_FLAGS' --xla_force_host_platform_device_count); N > 0 = N;
    -1 = one per core this process may use, lowered to the largest count that divides every batch size.
    An explicit count in XLA_FLAGS wins; -1 does nothing where an accelerator plugin is installed (the CPU is
    not the training device there) unless JAX_PLATFORMS asks for the CPU.
    """
    if setting < -1:
        raise UserError(f"mesh.cpu_devices={setting}: expected -1 (one per core), 0 (JAX's default) or a count")
    if setting == 0 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return 0
    if setting > 0:
        return setting
    if not os.environ.get("JAX_PLATFORMS", "").startswith("cpu") and _accelerator_plugin_installed():
        return 0
    cores = cores or len(os.sched_getaffinity(0))
    divisor = math.gcd(*[int(b) for b in batch_sizes if b]) or 1
    return max(n for n in range(1, cores + 1) if divisor % n == 0)


def config_cpu_device_count(configs: Sequence[Mapping[str, Any]], cores: int | None = None) -> int:
    """`cpu_device_count` for the configs one process runs (ConfigDicts or their JSON): the first one's
    `mesh.cpu_devices`, and every train and eval batch size."""
    configs = [c for c in configs if "mesh" in c]
    if not configs:
        return 0
    batches = [c["train"].get(key, 0) for c in configs if "train" in c for key in ("batch_size", "eval_batch_size")]
    return cpu_device_count(int(configs[0]["mesh"].get("cpu_devices", 0)), batches, cores)


def _accelerator_plugin_installed() -> bool:
    """A GPU or TPU runtime for JAX: a `jax_plugins` package (CUDA, ROCm, ...) or libtpu."""
    try:
        import jax_plugins  # a namespace package, present only when a plugin is installed
    except ImportError:
        plugin = False
    else:
        plugin = any(pkgutil.iter_modules(jax_plugins.__path__))
    return plugin or importlib.util.find_spec("libtpu") is not None
