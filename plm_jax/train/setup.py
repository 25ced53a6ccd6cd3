"""Everything a run builds from its config before any data flows: model, optimizer, mesh, shardings, steps.

Shared by `pretrain`, `bench` and `compile-only`, so that all three compile the very same train step.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import optax
from jax.sharding import Mesh, NamedSharding

from plm_jax.models.config import TransformerConfig
from plm_jax.parallel.sharding import batch_sharding, make_mesh, rules_from_config
from plm_jax.train import state as state_lib
from plm_jax.train.objectives import Objective, get_objective
from plm_jax.train.optimizer import make_optimizer
from plm_jax.train.step import jit_steps


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
    model_cfg: TransformerConfig
    objective: Objective
    model: nn.Module
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    mesh: Mesh
    init_inputs: tuple[jax.Array, ...]
    abstract_state: state_lib.TrainState  # shapes + shardings, no memory
    state_shardings: state_lib.TrainState
    data_sharding: NamedSharding
    train_step: Callable
    eval_step: Callable

    def init_state(self, seed: int) -> state_lib.TrainState:
        return state_lib.init_state(self.model, self.tx, self.init_inputs, self.state_shardings,
                                    jax.random.key(seed))

    def abstract_batch(self, data_cfg: Any, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """The global batch's shapes, for ahead-of-time compilation."""
        return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=self.data_sharding)
                for k, (shape, dtype) in self.objective.batch_shapes(data_cfg, batch_size).items()}


def build(config: Any, devices: list[jax.Device] | None = None) -> TrainingSetup:
    model_cfg = TransformerConfig.from_config(config.model)
    mesh = make_mesh(config.mesh, devices)
    rules = rules_from_config(config.logical_axis_rules)
    objective = get_objective(config.get("objective", "mlm"), model_cfg)
    model = objective.model(model_cfg)
    tx, schedule = make_optimizer(config.train)
    init_inputs = objective.init_inputs(config.data)
    abstract, shardings = state_lib.state_shardings(model, tx, init_inputs, mesh, rules)
    data_sharding = batch_sharding(mesh, rules)
    dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    train_step, eval_step = jit_steps(model, objective, tx, schedule, shardings, data_sharding, dropout_key,
                                      accum_steps=config.train.grad_accum_steps, rules=rules)
    return TrainingSetup(model_cfg, objective, model, tx, schedule, mesh, init_inputs, abstract, shardings,
                         data_sharding, train_step, eval_step)


def compile_only(config: Any, devices: list[jax.Device] | None = None) -> dict[str, Any]:
    """Lowers and compiles the train step for the configured mesh without allocating the state, and reports
    XLA's per-device memory estimate, so an out-of-memory config shows up before a pod is reserved. `devices`
    may be compile-only ones (a GPU target: parallel/gpu_targets.py). Also the step's roofline (roofline.py)."""
    setup = build(config, devices)
    batch = setup.abstract_batch(config.data, config.train.batch_size)
    start = time.perf_counter()
    compiled = setup.train_step.lower(setup.abstract_state, batch).compile()
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
    from plm_jax.train import roofline
    from plm_jax.train.peak_flops import table_bandwidth, table_peak_flops

    traffic = roofline.memory_traffic(hlo_text)
    out = roofline.traffic_fields(traffic)
    peak, bandwidth = table_peak_flops(device_kind, setup.model_cfg.compute_dtype), table_bandwidth(device_kind)
    if config.get("objective", "mlm") == "mlm" and peak and bandwidth:
        flops = mlm_train_flops_per_step(setup.model_cfg, config.train.batch_size, config.data.seq_len,
                                         resolve_max_predictions(config.data))
        out["mfu_ceiling_pct"] = roofline.ceiling(flops / len(setup.mesh.devices.flat), peak,
                                                  traffic["other_bytes"], bandwidth)
    return out
