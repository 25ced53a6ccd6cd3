"""Scanned <-> unscanned layer layouts: `layer_0 … layer_{L-1}` subtrees versus one `layers/layer` subtree
whose arrays carry a leading L axis. Works on any tree that mirrors the parameters (AdamW's mu and nu too),
and on abstract trees (`jax.ShapeDtypeStruct` with shardings), so a checkpoint of one layout restores into the
other (train/checkpoint.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec


def _is_unscanned(x: Any) -> bool:
    return isinstance(x, dict) and "layer_0" in x


def _is_scanned(x: Any) -> bool:
    return isinstance(x, dict) and isinstance(x.get("layers"), dict) and "layer" in x["layers"]


def _stack_layers(tree: Any, stack: Callable[..., Any]) -> Any:
    def convert(d: dict) -> dict:
        n = sum(1 for k in d if k.startswith("layer_"))
        stacked = jax.tree.map(lambda *xs: stack(xs), *[d[f"layer_{i}"] for i in range(n)])
        return {**{k: v for k, v in d.items() if not k.startswith("layer_")}, "layers": {"layer": stacked}}

    return jax.tree.map(lambda x: convert(x) if _is_unscanned(x) else x, tree, is_leaf=_is_unscanned)


def _split_layers(tree: Any, take: Callable[[Any, int], Any]) -> Any:
    def convert(d: dict) -> dict:
        stacked = d["layers"]["layer"]
        n = jax.tree.leaves(stacked)[0].shape[0]
        layers = {f"layer_{i}": jax.tree.map(lambda x, i=i: take(x, i), stacked) for i in range(n)}
        return {**{k: v for k, v in d.items() if k != "layers"}, **layers}

    return jax.tree.map(lambda x: convert(x) if _is_scanned(x) else x, tree, is_leaf=_is_scanned)


def to_scanned(tree: Any) -> Any:
    return _stack_layers(tree, jnp.stack)


def to_unscanned(tree: Any) -> Any:
    return _split_layers(tree, lambda x, i: x[i])


def select_layers(tree: Any, keep: tuple[int, ...]) -> Any:
    """An unscanned tree with only layers `keep`, renumbered 0..len(keep)-1 (a DistilBERT-style student that
    starts from every other layer of its teacher)."""
    def convert(d: dict) -> dict:
        rest = {k: v for k, v in d.items() if not k.startswith("layer_")}
        return {**rest, **{f"layer_{new}": d[f"layer_{old}"] for new, old in enumerate(keep)}}

    return jax.tree.map(lambda x: convert(x) if _is_unscanned(x) else x, tree, is_leaf=_is_unscanned)


def _with_spec(x: jax.ShapeDtypeStruct, shape: tuple, spec: tuple) -> jax.ShapeDtypeStruct:
    sharding = x.sharding
    if isinstance(sharding, NamedSharding):
        sharding = NamedSharding(sharding.mesh, PartitionSpec(*spec))
    return jax.ShapeDtypeStruct(shape, x.dtype, sharding=sharding)


def _spec(x: jax.ShapeDtypeStruct) -> tuple:
    spec = tuple(x.sharding.spec) if isinstance(x.sharding, NamedSharding) else ()
    return spec + (None,) * (len(x.shape) - len(spec))


def abstract_to_scanned(tree: Any) -> Any:
    """Abstract arrays in the scanned layout; the new layer axis is unsharded, the rest keep their specs."""
    return _stack_layers(tree, lambda xs: _with_spec(xs[0], (len(xs), *xs[0].shape), (None, *_spec(xs[0]))))


def abstract_to_unscanned(tree: Any) -> Any:
    """Abstract arrays in the unscanned layout; each layer keeps the stacked array's spec minus the layer axis."""
    return _split_layers(tree, lambda x, i: _with_spec(x, x.shape[1:], _spec(x)[1:]))


def layout_of(names: set[str]) -> str | None:
    """'scanned' / 'unscanned' from flattened array names (`a/b/layer_0/...` or `.../layers/layer/...`)."""
    if any("/layers/layer/" in f"/{n}/" for n in names):
        return "scanned"
    if any("/layer_0/" in f"/{n}/" for n in names):
        return "unscanned"
    return None
