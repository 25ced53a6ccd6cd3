"""Everything a run builds from its task before any data flows: optimizer, mesh, shardings, jitted steps.

One setup for training, `bench`, `compile-only` and inference, so that all of them compile the very same steps.
Inference (`build_for_inference`) builds no optimizer and no train step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import optax
from jax.sharding import Mesh, NamedSharding

from plm_jax.errors import UserError
from plm_jax.parallel.sharding import batch_sharding, from_whole_batch, make_mesh, rules_from_config
from plm_jax.train import state as state_lib
from plm_jax.train.optimizer import make_optimizer
from plm_jax.train.step import jit_eval_steps, jit_steps
from plm_jax.train.task import Steps, Task


@dataclasses.dataclass(frozen=True)
class Int8Layout:
    """Inference from int8 weights (compress/int8.py): their abstract tree and shardings, and the logical axis
    names that decide each weight's channels."""

    abstract: Any
    shardings: Any
    logical_names: Any


@dataclasses.dataclass(frozen=True)
class InferenceSetup:
    task: Task
    mesh: Mesh
    abstract_params: Any  # shapes + shardings, no memory
    param_shardings: Any
    data_sharding: NamedSharding
    eval_sums: Callable
    predict: Callable
    int8: Int8Layout | None = None  # set: eval_sums and predict take int8 weights

    @property
    def model_cfg(self):
        return self.task.model_cfg

    def steps(self) -> Steps:
        return Steps(self.eval_sums, self.predict, self.to_global, self.data_sharding)

    def to_global(self, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """Every host holds the same whole batch; each feeds only its own share of the rows."""
        return {k: from_whole_batch(v, self.data_sharding) for k, v in batch.items()}

    def to_global_local(self, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """Each host holds its own rows of the global batch."""
        return {k: jax.make_array_from_process_local_data(self.data_sharding, v) for k, v in batch.items()}


@dataclasses.dataclass(frozen=True)
class TrainingSetup(InferenceSetup):
    tx: optax.GradientTransformation = None
    schedule: optax.Schedule = None
    abstract_state: state_lib.TrainState = None
    state_shardings: state_lib.TrainState = None
    train_step: Callable = None  # (state, batch, *frozen_args) -> (state, metrics)
    frozen_args: tuple = ()  # (the task's frozen parameters,) when it has a teacher: the train step's 3rd argument

    def init_state(self, seed: int) -> state_lib.TrainState:
        """Each device computes its own shards of the fresh state; the task then grafts its starting point."""
        state = state_lib.init_state(self.task.model, self.tx, self.task.init_inputs, self.state_shardings,
                                     jax.random.key(seed))
        return state.replace(params=self.task.initial_params(state.params, self.state_shardings.params))

    def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """The global batch's shapes (a task with `batch_shapes`), for ahead-of-time compilation."""
        return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=self.data_sharding)
                for k, (shape, dtype) in self.task.batch_shapes(batch_size).items()}


def _mesh_and_rules(task: Task, devices: list[jax.Device] | None) -> tuple[Mesh, Any]:
    return make_mesh(task.config.mesh, devices), rules_from_config(task.config.logical_axis_rules)


def check_batch_splits(train_cfg: Any, mesh: Mesh, data_sharding: NamedSharding, training: bool = True) -> None:
    """A batch that the mesh's batch axes cannot split evenly is named here, not in XLA's sharding message."""
    axes = data_sharding.spec[0] if len(data_sharding.spec) else None
    names = tuple(axes) if isinstance(axes, tuple) else (axes,) if axes else ()
    shards = math.prod(mesh.shape[a] for a in names)
    sizes = {"train.batch_size": int(train_cfg.batch_size)} if training else {}
    eval_key = "eval_batch_size" if "eval_batch_size" in train_cfg else "batch_size"  # pretraining: one size
    sizes[f"train.{eval_key}"] = int(train_cfg[eval_key])
    for key, size in sizes.items():
        if shards > 1 and size % shards:
            raise UserError(f"{key} = {size} does not split over the {shards} devices of the batch axes {names} "
                            f"(mesh {dict(mesh.shape)}): make it a multiple of {shards}, or run on fewer devices "
                            "(--cpu_devices=N on a CPU host)")


def build(task: Task, devices: list[jax.Device] | None = None) -> TrainingSetup:
    """The optimizer (with layer-wise LR decay when train.layer_decay < 1), the sharded abstract state and the
    jitted steps of `task`. `devices` may be compile-only ones (a GPU target: parallel/gpu_targets.py)."""
    config, model_cfg = task.config, task.model_cfg
    tx, schedule = make_optimizer(task.optimizer_config, layer_decay=float(config.train.get("layer_decay", 1.0)),
                                  num_layers=model_cfg.num_layers)
    mesh, rules = _mesh_and_rules(task, devices)
    abstract, shardings = state_lib.state_shardings(task.model, tx, task.init_inputs, mesh, rules)
    data_sharding = batch_sharding(mesh, rules)
    check_batch_splits(config.train, mesh, data_sharding)
    dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    frozen_shardings, frozen_args = None, ()
    if task.frozen is not None:  # a teacher: its parameters on this mesh, by the same rules
        frozen_abstract, frozen_shardings = state_lib.abstract_params(task.frozen.model, task.frozen.init_inputs,
                                                                      mesh, rules)
        frozen_args = (task.frozen.load(frozen_abstract),)
    train_step, eval_sums, predict = jit_steps(task, tx, schedule, shardings, data_sharding, dropout_key,
                                               accum_steps=int(config.train.grad_accum_steps), rules=rules,
                                               frozen_shardings=frozen_shardings)
    return TrainingSetup(task, mesh, abstract.params, shardings.params, data_sharding, eval_sums, predict, tx=tx,
                         schedule=schedule, abstract_state=abstract, state_shardings=shardings, train_step=train_step,
                         frozen_args=frozen_args)


def build_for_inference(task: Task, devices: list[jax.Device] | None = None, int8: bool = False
                        ) -> InferenceSetup:
    """`int8`: the jitted steps take int8 weights (per output channel) and dequantize them inside."""
    mesh, rules = _mesh_and_rules(task, devices)
    abstract, shardings = state_lib.abstract_params(task.model, task.init_inputs, mesh, rules)
    data_sharding = batch_sharding(mesh, rules)
    check_batch_splits(task.config.train, mesh, data_sharding, training=False)
    layout, unpack = None, None
    if int8:
        from plm_jax.compress import int8 as int8_lib

        names = state_lib.logical_names(task.model, task.init_inputs)
        q_shardings = int8_lib.quantized_shardings(shardings, int8_lib.abstract_quantized(abstract, names))
        layout = Int8Layout(int8_lib.abstract_quantized(abstract, names, q_shardings), q_shardings, names)
        unpack = int8_lib.dequantize
    eval_sums, predict = jit_eval_steps(task, layout.shardings if layout else shardings, data_sharding, rules,
                                        unpack)
    return InferenceSetup(task, mesh, abstract, shardings, data_sharding, eval_sums, predict, layout)
