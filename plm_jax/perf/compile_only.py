"""`launch.py compile-only`: the train step lowered and compiled without allocating the state, with XLA's memory
estimate per device and the step's roofline, so an out-of-memory config shows up before a pod is reserved."""

from __future__ import annotations

import time
from typing import Any

import jax

from plm_jax.tasks.pretraining import PretrainingTask
from plm_jax.train import state as state_lib
from plm_jax.train.setup import TrainingSetup, build


def compile_only(config: Any, devices: list[jax.Device] | None = None) -> dict[str, Any]:
    """Lowers and compiles the train step for the configured mesh without allocating the state, and reports
    XLA's per-device memory estimate, so an out-of-memory config shows up before a pod is reserved. `devices`
    may be compile-only ones (a GPU target: parallel/gpu_targets.py). Also the step's roofline (roofline.py)."""
    setup = build(PretrainingTask(config), devices)
    batch = setup.abstract_batch(config.train.batch_size)
    start = time.perf_counter()
    compiled = setup.train_step.lower(setup.abstract_state, batch, *setup.frozen_args).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
              "generated_code_size_in_bytes")
    report = {f.removesuffix("_in_bytes"): getattr(mem, f, 0) for f in fields} if mem is not None else {}
    # arguments (state + batch) and temporaries live at once; outputs alias the donated state
    peak = report.get("argument_size", 0) + report.get("temp_size", 0) + report.get("output_size", 0) \
        - report.get("alias_size", 0)
    device = setup.mesh.devices.flat[0]
    report.update(compile_s=round(compile_s, 2), devices=len(setup.mesh.devices.flat), mesh=dict(setup.mesh.shape),
                  device_kind=device.device_kind, params=state_lib.count_params(setup.abstract_state.params),
                  estimated_peak_bytes_per_device=peak)
    report.update(_roofline(config, setup, compiled.as_text(), device.device_kind))
    return report


def _roofline(config: Any, setup: TrainingSetup, hlo_text: str, device_kind: str) -> dict[str, Any]:
    """Bytes outside the matmuls per device and, for MLM on a device of the peak table, the MFU ceiling."""
    from plm_jax.data.data_config import resolve_max_predictions
    from plm_jax.models.flops import mlm_train_flops_per_step
    from plm_jax.perf import roofline
    from plm_jax.perf.peak_flops import table_bandwidth, table_peak_flops

    traffic = roofline.memory_traffic(hlo_text)
    out = roofline.traffic_fields(traffic)
    peak, bandwidth = table_peak_flops(device_kind, setup.model_cfg.compute_dtype), table_bandwidth(device_kind)
    if config.get("objective", "mlm") == "mlm" and peak and bandwidth:
        flops = mlm_train_flops_per_step(setup.model_cfg, config.train.batch_size, config.data.seq_len,
                                         resolve_max_predictions(config.data))
        out["mfu_ceiling_pct"] = roofline.ceiling(flops / len(setup.mesh.devices.flat), peak,
                                                  traffic["other_bytes"], bandwidth)
    return out
