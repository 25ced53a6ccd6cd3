"""Post-training int8 weight quantization: symmetric, one scale per output channel.

Weight-only int8 is what serving stacks do first (AQT's and TensorRT's weight-only modes, LLM.int8's baseline):
the weights are the model's size on disk and most of its memory, while the activations stay in the compute dtype.
Each matrix keeps int8 values and one fp32 scale per output channel (max |w| / 127 over the input axes), so
the error of every weight is at most half its channel's scale. Inference dequantizes inside the jitted function
(`dequantize`), so only the int8 values and the scales live in memory.

Which axes are the output channels comes from the parameter tree itself, not from module names:
- a Dense kernel's output axes are those of its bias, its trailing axes (`layers.dense` gives every bias the
  output part of the kernel's axes); a kernel without a bias has one output axis, its last;
- an embedding table is a row per token, and each row is a channel (it is also the output side of a tied
  decoder's `attend`);
- a stacked layer axis (logical name "layers", from `nn.scan`) is kept: every layer has its own scales.
Vectors (biases, LayerNorm) stay in their float dtype: they are a rounding error of the size.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

_LEVELS = 127.0  # symmetric: -127..127, so that -w quantizes to -q


@struct.dataclass
class Int8Array:
    """int8 `values` and fp32 `scale` broadcastable against them: w ~= values * scale."""

    values: jax.Array
    scale: jax.Array
    dtype: str = struct.field(pytree_node=False, default="float32")  # the float dtype it came from

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)


def _is_int8(x: Any) -> bool:
    return isinstance(x, Int8Array)


def quantize_array(w: jax.Array | np.ndarray, reduce_axes: tuple[int, ...]) -> Int8Array:
    """Symmetric int8 with one scale per index of the axes not in `reduce_axes` (the input axes)."""
    w32 = jnp.asarray(w, jnp.float32)
    amax = jnp.max(jnp.abs(w32), axis=reduce_axes, keepdims=True)
    scale = jnp.where(amax > 0, amax / _LEVELS, 1.0)  # an all-zero channel: any scale, the values are 0
    values = jnp.clip(jnp.round(w32 / scale), -_LEVELS, _LEVELS).astype(jnp.int8)
    return Int8Array(values, scale.astype(jnp.float32), str(jnp.asarray(w).dtype))


def dequantize_array(q: Int8Array) -> jax.Array:
    return (q.values.astype(jnp.float32) * q.scale).astype(q.dtype)


def _path_names(path: tuple) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def input_axes(name: str, shape: tuple[int, ...], logical: tuple[str | None, ...] | None,
               bias_ndim: int | None) -> tuple[int, ...] | None:
    """The axes one scale is shared over (None: keep this parameter in float).

    `logical` holds the parameter's logical axis names (None when unknown); `bias_ndim` the number of axes of the
    bias beside a kernel (None when it has none).
    """
    stacked = 1 if logical and logical[0] == "layers" else 0
    ndim = len(shape) - stacked
    if ndim < 2:
        return None
    if name == "embedding" or name.endswith("_embeddings"):  # a row per token (or position, or type)
        return (len(shape) - 1,)
    if name != "kernel":
        return None
    outputs = (bias_ndim - stacked) if bias_ndim is not None else 1
    if not 1 <= outputs < ndim:
        raise ValueError(f"a kernel of shape {shape} with a bias of {bias_ndim} axes has no input axes")
    return tuple(range(stacked, len(shape) - outputs))


def quantize(params: Any, logical_names: Any) -> Any:
    """`params` with every matrix replaced by an Int8Array. `logical_names` mirrors `params` with each leaf's
    logical axis names (`nn.get_partition_spec` of the boxed parameters): it tells a stacked layer axis apart."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
    names = flax.traverse_util.flatten_dict(flax.core.unfreeze(logical_names), sep="/")
    plan = {}
    for path, w in flat.items():
        parent, _, leaf = path.rpartition("/")
        bias = flat.get(f"{parent}/bias" if parent else "bias")
        logical = names.get(path)
        plan[path] = input_axes(leaf, tuple(w.shape), tuple(logical) if logical is not None else None,
                                None if bias is None else len(bias.shape))

    @jax.jit  # one program for the whole tree: op by op, each small array would be a dispatch per device
    def run(flat_params: dict[str, Any]) -> dict[str, Any]:
        return {p: w if plan[p] is None else quantize_array(w, plan[p]) for p, w in flat_params.items()}

    return flax.traverse_util.unflatten_dict(run(flat), sep="/")


def abstract_quantized(abstract_params: Any, logical_names: Any, shardings: Any = None) -> Any:
    """The shapes `quantize` gives (with `shardings` attached when given), computing nothing."""
    shapes = jax.eval_shape(lambda p: quantize(p, logical_names), abstract_params)
    if shardings is None:
        return shapes
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


def quantized_shardings(param_shardings: Any, abstract_qparams: Any) -> Any:
    """An int8 weight's values are laid out as the float weight was; its scales as well, except along the input
    axes, where they have one entry."""
    def one(sharding: NamedSharding, q: Any) -> Any:
        if not _is_int8(q):
            return sharding
        spec = tuple(sharding.spec) + (None,) * (len(q.values.shape) - len(sharding.spec))
        scale_spec = PartitionSpec(*(None if q.scale.shape[d] == 1 else spec[d] for d in range(len(spec))))
        return Int8Array(sharding, NamedSharding(sharding.mesh, scale_spec), q.dtype)

    return jax.tree.map(one, param_shardings, abstract_qparams)


def dequantize(qparams: Any) -> Any:
    """Float parameters again (inside jit: the int8 values are what is held in memory)."""
    return jax.tree.map(lambda x: dequantize_array(x) if _is_int8(x) else x, qparams, is_leaf=_is_int8)


def nbytes(params: Any) -> int:
    """Bytes of the arrays (int8 values and their scales counted as stored)."""
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(params))


def max_error(params: Any, qparams: Any) -> float:
    """The largest |w - dequantized w| over all parameters, in units of its channel's scale (at most 0.5)."""
    worst = 0.0
    for w, q in zip(jax.tree.leaves(params), jax.tree.leaves(qparams, is_leaf=_is_int8)):
        if _is_int8(q):
            scale = np.asarray(q.scale)
            err = np.abs(np.asarray(w, np.float32) - np.asarray(q.values, np.float32) * scale)
            worst = max(worst, float(np.max(err / scale)))
    return worst
