"""Structured pruning of attention heads by importance (Michel et al., 2019, "Are Sixteen Heads Really Better
than One?").

A head's importance is the expected absolute change of the loss when its output is scaled: with a gate xi_h on
head h's output (1 in the trained model),

    I_h = E_x | dL(x) / d xi_h |  =  E_x | sum over positions of  out_h(x) . dL(x)/d out_h(x) |

computed exactly, one gradient per batch: every example gets its own gates (B x layers x heads), so the gradient
of the summed loss holds each example's own derivative. The gates multiply the input of each attention layer's
output projection (`nn.intercept_methods`), so the model itself carries no pruning code.

Michel et al. rank heads globally; here every layer keeps its `keep` most important heads, so the pruned model is a
regular one (`num_heads=keep`, the same `head_dim`) whose attention matmuls really shrink. The query, key and value
kernels lose those heads' output columns and the output projection their input rows; nothing else changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from plm_jax.models.layers import Attention

_LAYER = re.compile(r"layer_(\d+)")
Batch = dict[str, Any]


def _gate_heads(gates_BxNxH: jax.Array) -> Callable:
    """An interceptor that scales each head's output, per example, before an attention layer's output projection."""

    def interceptor(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
        module = context.module
        if context.method_name != "__call__" or module.name != "out" or not isinstance(module.parent, Attention):
            return next_fun(*args, **kwargs)
        layer = _LAYER.fullmatch(str(module.parent.parent.name))
        if layer is None:
            raise ValueError(f"head gates need unscanned layers named layer_<i>; found {module.path}")
        heads_BxTxHxK = args[0]
        gate_BxH = gates_BxNxH[:, int(layer.group(1))].astype(heads_BxTxHxK.dtype)
        return next_fun(heads_BxTxHxK * gate_BxH[:, None, :, None], *args[1:], **kwargs)

    return interceptor


def head_importance(loss_sums: Callable[[Any, Batch], tuple[jax.Array, jax.Array]], params: Any,
                    batches: Iterable[Batch], num_layers: int, num_heads: int) -> np.ndarray:
    """I_h for every layer and head (num_layers x num_heads), averaged over the batches' weighted examples.

    `loss_sums(params, batch)` -> (the loss summed over the batch's examples, their weight) of an unscanned model.
    An example's loss depends on its own gates alone, so the gradient of the sum holds each one's derivative.
    """
    def gated_loss(gates_BxNxH: jax.Array, params: Any, batch: Batch) -> tuple[jax.Array, jax.Array]:
        with nn.intercept_methods(_gate_heads(gates_BxNxH)):
            return loss_sums(params, batch)

    grad_gates = jax.jit(jax.grad(gated_loss, has_aux=True))
    total_NxH, weight = np.zeros((num_layers, num_heads), np.float64), 0.0
    for batch in batches:
        rows = len(next(iter(batch.values())))
        g_BxNxH, weight_sum = grad_gates(jnp.ones((rows, num_layers, num_heads), jnp.float32), params, batch)
        total_NxH += np.abs(np.asarray(g_BxNxH, np.float64)).sum(axis=0)
        weight += float(weight_sum)
    if not weight:
        raise ValueError("head importance needs at least one weighted example")
    return total_NxH / weight


def heads_to_keep(importance_NxH: np.ndarray, keep: int) -> np.ndarray:
    """The `keep` most important heads of each layer, in their original order (num_layers x keep); ties go to the
    lower index."""
    order_NxH = np.argsort(-importance_NxH, axis=1, kind="stable")
    return np.sort(order_NxH[:, :keep], axis=1)


def prune_heads(params: Any, kept_NxK: np.ndarray, encoder: str = "encoder") -> Any:
    """Unscanned parameters with only the kept heads of each layer of `params[encoder]`."""
    out = dict(params)
    body = dict(out[encoder])
    for i, kept_K in enumerate(np.asarray(kept_NxK)):
        layer = dict(body[f"layer_{i}"])
        attention = dict(layer["attention"])
        for name in ("query", "key", "value"):  # kernel D x H x K, bias H x K
            dense = attention[name]
            attention[name] = {"kernel": np.asarray(dense["kernel"])[:, kept_K],
                               **({"bias": np.asarray(dense["bias"])[kept_K]} if "bias" in dense else {})}
        out_proj = dict(attention["out"])  # kernel H x K x D; its bias is per output channel and stays
        out_proj["kernel"] = np.asarray(out_proj["kernel"])[kept_K]
        attention["out"] = out_proj
        layer["attention"] = attention
        body[f"layer_{i}"] = layer
    out[encoder] = body
    return out
