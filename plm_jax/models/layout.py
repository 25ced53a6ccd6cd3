"""Scanned <-> unscanned layer layouts: `layer_0 … layer_{L-1}` subtrees versus one `layers/layer` subtree
whose arrays carry a leading L axis. Works on any tree that mirrors the parameters (AdamW's mu and nu too)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def _is_unscanned(x: Any) -> bool:
    return isinstance(x, dict) and "layer_0" in x


def _is_scanned(x: Any) -> bool:
    return isinstance(x, dict) and isinstance(x.get("layers"), dict) and "layer" in x["layers"]


def to_scanned(tree: Any) -> Any:
    def convert(d: dict) -> dict:
        n = sum(1 for k in d if k.startswith("layer_"))
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[d[f"layer_{i}"] for i in range(n)])
        return {**{k: v for k, v in d.items() if not k.startswith("layer_")}, "layers": {"layer": stacked}}

    return jax.tree.map(lambda x: convert(x) if _is_unscanned(x) else x, tree, is_leaf=_is_unscanned)


def to_unscanned(tree: Any) -> Any:
    def convert(d: dict) -> dict:
        stacked = d["layers"]["layer"]
        n = jax.tree.leaves(stacked)[0].shape[0]
        layers = {f"layer_{i}": jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(n)}
        return {**{k: v for k, v in d.items() if k != "layers"}, **layers}

    return jax.tree.map(lambda x: convert(x) if _is_scanned(x) else x, tree, is_leaf=_is_scanned)


def layout_of(names: set[str]) -> str | None:
    """'scanned' / 'unscanned' from flattened array names (`a/b/layer_0/...` or `.../layers/layer/...`)."""
    if any("/layers/layer/" in f"/{n}/" for n in names):
        return "scanned"
    if any("/layer_0/" in f"/{n}/" for n in names):
        return "unscanned"
    return None
