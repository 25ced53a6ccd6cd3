"""The train state, and its sharded creation without a full copy of the parameters on any one device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from plm_jax.parallel.sharding import logical_to_shardings


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array  # int32 scalar: number of updates applied
    params: Any
    opt_state: Any


def _boxed_state_fn(model: nn.Module, tx: optax.GradientTransformation, init_inputs: dict | tuple) -> Callable:
    """init_inputs: keyword arguments (dict) or positional ones (tuple) of the model's __call__."""
    def boxed_state(key: jax.Array) -> TrainState:
        args, kwargs = (init_inputs, {}) if isinstance(init_inputs, tuple) else ((), init_inputs)
        params = model.init(key, *args, **kwargs)["params"]  # boxed: leaves carry logical axes
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return boxed_state


def state_shardings(
    model: nn.Module, tx: optax.GradientTransformation, init_inputs: dict | tuple, mesh: Mesh, rules: Any
) -> tuple[TrainState, TrainState]:
    """(abstract state with shardings attached, shardings) from shapes alone (`jax.eval_shape`)."""
    boxed = jax.eval_shape(_boxed_state_fn(model, tx, init_inputs), jax.random.key(0))
    shardings = logical_to_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed), shardings
    )
    return abstract, shardings


def init_state(
    model: nn.Module, tx: optax.GradientTransformation, init_inputs: dict | tuple, shardings: TrainState, key: jax.Array
) -> TrainState:
    """Each device computes only its own shards of the freshly initialised state."""
    boxed_state = _boxed_state_fn(model, tx, init_inputs)
    return jax.jit(lambda k: nn.unbox(boxed_state(k)), out_shardings=shardings)(key)


def count_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


def _boxed_params(model: nn.Module, init_inputs: dict | tuple) -> Any:
    args, kwargs = (init_inputs, {}) if isinstance(init_inputs, tuple) else ((), init_inputs)
    return jax.eval_shape(lambda key: model.init(key, *args, **kwargs)["params"], jax.random.key(0))


def logical_names(model: nn.Module, init_inputs: dict | tuple) -> Any:
    """Each parameter's logical axis names (a PartitionSpec of names), from shapes alone."""
    return nn.get_partition_spec(_boxed_params(model, init_inputs))


def abstract_params(model: nn.Module, init_inputs: dict | tuple, mesh: Mesh, rules: Any) -> tuple[Any, Any]:
    """(abstract parameters with shardings attached, their shardings): what restoring for inference needs, with
    no optimizer built."""
    boxed = _boxed_params(model, init_inputs)
    shardings = logical_to_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed),
                            shardings)
    return abstract, shardings
