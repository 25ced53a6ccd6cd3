"""The device mesh and the map from logical axis names to mesh axes.

Parameters declare logical axes (`embed`, `mlp`, ...); a rule table in the config maps them onto the mesh axes
`data`, `fsdp` and `tensor`. Data parallelism = batch over (data, fsdp); FSDP = `embed` over fsdp (parameters
and optimizer state split, gathered per layer by XLA); tensor parallelism = heads, mlp and vocab over tensor.

Activations carry logical names too (`activation_batch`, `activation_heads`, ...): the model pins them with
`constrain`, which takes effect while a step is traced under `activation_sharding(mesh, rules)`, so the SPMD
partitioner keeps every layer's activations split the way the table says instead of guessing between layers.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from plm_jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("embed_out", None),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("length", None),
    ("type", None),
    ("layers", None),  # the stacked axis of scanned layers
    ("labels", None),  # classifier / span-head outputs
    # activations (model code: constrain(x, ("activation_batch", ...)))
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_mlp", "tensor"),
)


# Named parallelism strategies: the mesh axes each one uses. Axes a strategy does not name hold 1 device; of the
# named ones, sizes given in the config are kept and the first one left at -1 or 1 takes the remaining devices.
STRATEGIES = {
    "dp": ("data",),  # data parallel: parameters replicated, batch split
    "fsdp": ("fsdp",),  # ZeRO-3: parameters, gradients and optimizer state split over `embed`, gathered per layer
    "tp": ("tensor",),  # tensor parallel: heads, MLP and vocabulary split (Megatron-style)
    "dp+fsdp": ("data", "fsdp"),
    "dp+tp": ("data", "tensor"),
    "fsdp+tp": ("fsdp", "tensor"),
    "dp+fsdp+tp": ("data", "fsdp", "tensor"),
}


def strategy_dims(mesh_cfg: Any) -> list[int]:
    """The config's (data, fsdp, tensor), with `strategy` (if set) deciding which axes are used."""
    dims = [int(mesh_cfg[a]) for a in MESH_AXES]
    strategy = str(mesh_cfg.get("strategy", "") or "")
    if not strategy:
        return dims
    if strategy not in STRATEGIES:
        raise UserError(f"mesh.strategy={strategy!r}; expected one of {sorted(STRATEGIES)} or '' (the sizes as "
                         "given)")
    used = STRATEGIES[strategy]
    for axis, size in zip(MESH_AXES, dims):
        if axis not in used and size not in (1, -1):
            raise UserError(f"mesh.strategy={strategy!r} uses no {axis} axis, but mesh.{axis}={size}")
    dims = [d if a in used else 1 for a, d in zip(MESH_AXES, dims)]
    if -1 not in dims:  # the first used axis that has no size of its own takes the remaining devices
        free = [i for i, a in enumerate(MESH_AXES) if a in used and dims[i] == 1]
        if free:
            dims[free[0]] = -1
    return dims


def mesh_shape(mesh_cfg: Any, num_devices: int) -> tuple[int, int, int]:
    """Resolves the config's (data, fsdp, tensor); one of them may be -1 = all remaining devices."""
    dims = strategy_dims(mesh_cfg)
    if dims.count(-1) > 1 or any(d == 0 or d < -1 for d in dims):
        raise UserError(f"mesh {dict(zip(MESH_AXES, dims))}: each axis must be positive, at most one -1")
    if -1 in dims:
        rest = math.prod(d for d in dims if d != -1)
        if num_devices % rest:
            raise UserError(f"mesh {dict(zip(MESH_AXES, dims))} does not divide {num_devices} devices")
        dims[dims.index(-1)] = num_devices // rest
    if math.prod(dims) != num_devices:
        raise UserError(f"mesh {dict(zip(MESH_AXES, dims))} needs {math.prod(dims)} devices, "
                         f"but {num_devices} are available")
    return tuple(dims)  # type: ignore[return-value]


def make_mesh(mesh_cfg: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A Mesh with Auto axis types (an embedding gather from a vocab-sharded table needs them)."""
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(mesh_cfg, len(devices))
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def rules_from_config(rules: Any) -> tuple[tuple[str, Any], ...]:
    out = []
    for rule in rules:
        name, axes = rule
        axes = tuple(axes) if isinstance(axes, list) else axes
        if axes is not None and not all(a in MESH_AXES for a in (axes if isinstance(axes, tuple) else (axes,))):
            raise UserError(f"logical axis rule {name!r} -> {axes!r} names a mesh axis outside {MESH_AXES}")
        out.append((name, axes))
    return tuple(out)


def logical_to_shardings(boxed_tree: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Any:
    """NamedShardings for a tree of (abstract) boxed values; unannotated leaves are replicated."""
    specs = nn.get_partition_spec(boxed_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> NamedSharding:
    """Leading (batch) dimension over the mesh axes that the `batch` rule names."""
    axes = dict(rules).get("batch")
    return NamedSharding(mesh, PartitionSpec(axes))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def from_whole_batch(rows: np.ndarray, data_sharding: NamedSharding) -> jax.Array:
    """The global array of a batch every host holds whole; each host feeds only its own share of the rows."""
    pi, pc = jax.process_index(), jax.process_count()
    return jax.make_array_from_process_local_data(data_sharding, np.split(np.asarray(rows), pc)[pi])


_ACTIVATION_SHARDING: contextvars.ContextVar[tuple[Mesh, tuple] | None] = contextvars.ContextVar(
    "plm_jax_activation_sharding", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Iterator[None]:
    """While active (at trace time), `constrain` pins activations to `mesh` by `rules`."""
    token = _ACTIVATION_SHARDING.set((mesh, tuple(rules)))
    try:
        yield
    finally:
        _ACTIVATION_SHARDING.reset(token)


def constrain(x: jax.Array, logical_axes: tuple[str | None, ...]) -> jax.Array:
    """A sharding constraint by logical names; `x` unchanged outside `activation_sharding`, and when the rule
    table lacks any of these names (a table from before activations had names leaves the partitioner free)."""
    context = _ACTIVATION_SHARDING.get()
    if context is None:
        return x
    mesh, rules = context
    return nn.with_logical_constraint(x, logical_axes, rules=rules, mesh=mesh,
                                      fallback=nn.spmd.RulesFallback.NO_CONSTRAINT)


def traced_with_activation_sharding(fn: Callable, mesh: Mesh, rules: Sequence[tuple[str, Any]] | None) -> Callable:
    """`fn` whose tracing happens under `activation_sharding(mesh, rules)` (for jax.jit); `rules=None`: as is."""
    if rules is None:
        return fn

    def traced(*args: Any) -> Any:
        with activation_sharding(mesh, rules):
            return fn(*args)

    return traced
