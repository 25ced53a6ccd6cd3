"""Joining a multi-host run through JAX's own runtime (`jax.distributed`), before any JAX computation.

Three ways in: explicit flags (coordinator address, process count and id: GPUs, CPUs, anything);
`auto` (JAX detects Cloud TPU VM pods, SLURM and other clusters from their environment); or nothing (one process).
"""

from __future__ import annotations

import logging

import jax

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
    if auto:
        jax.distributed.initialize(initialization_timeout=timeout_s)
    elif num_processes > 1:
        if not coordinator or process_id is None:
            raise ValueError("a multi-process run needs --coordinator=host:port and --process_id")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process_id={process_id} is outside [0, {num_processes})")
        jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=timeout_s,
                                   heartbeat_timeout_seconds=timeout_s)
    else:
        return
    log.info("process %d of %d; %d local and %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())
