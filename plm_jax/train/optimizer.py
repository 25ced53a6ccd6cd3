"""AdamW with warmup + decay, weight decay masked off biases and LayerNorm, global-norm clipping, and
(for fine-tuning) layer-wise learning-rate decay."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from plm_jax.errors import UserError

_DECAYS = ("linear", "cosine", "constant")


def learning_rate_schedule(train_cfg: Any) -> optax.Schedule:
    """Linear warmup from 0 to `lr`, then linear/cosine decay to `lr * end_lr_fraction` at `steps`."""
    steps, warmup = int(train_cfg.steps), int(train_cfg.warmup_steps)
    peak, end = float(train_cfg.lr), float(train_cfg.lr) * float(train_cfg.end_lr_fraction)
    if train_cfg.decay not in _DECAYS:
        raise UserError(f"train.decay={train_cfg.decay!r}; expected one of {_DECAYS}")
    if not 0 <= warmup <= steps:
        raise UserError(f"train.warmup_steps={warmup} must be in [0, train.steps={steps}]")
    decay_steps = max(steps - warmup, 1)
    if train_cfg.decay == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    elif train_cfg.decay == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
    else:
        decay = optax.constant_schedule(peak)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _path_names(path: tuple) -> list[str]:
    """Key names along a tree path, without the `value` field of flax's logical-partitioning boxes."""
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    return names[:-1] if names and names[-1] == "value" else names


def weight_decay_mask(params: Any) -> Any:
    """True where weight decay applies: kernels and embedding tables, not biases or LayerNorm (as BERT)."""

    def decays(path: tuple, _: Any) -> bool:
        names = _path_names(path)
        return not (names[-1] in ("bias", "scale") or any("layer_norm" in n for n in names))

    return jax.tree_util.tree_map_with_path(decays, params)


def layer_depth(names: list[str], num_layers: int) -> int | None:
    """0 for embeddings, i+1 for layer i, num_layers+1 above the encoder; None for a scanned stack (all layers)."""
    if any(n == "embeddings" for n in names):
        return 0
    for n in names:
        if n.startswith("layer_") and n[len("layer_"):].isdigit():
            return int(n[len("layer_"):]) + 1
    if "layers" in names:
        return None
    return num_layers + 1


def layerwise_lr_decay(decay: float, num_layers: int) -> optax.GradientTransformation:
    """Scales each update by decay ** (num_layers + 1 - depth) (ELECTRA's layer-wise LR decay): the head keeps
    the full learning rate, each layer below it a factor `decay` less, the embeddings the least.

    Applied after AdamW, it scales the whole step (Adam and weight decay alike), i.e. a per-layer learning rate.
    Scanned stacks get a per-layer vector along their leading `layers` axis."""

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params

        def scale(path: tuple, u: jax.Array) -> jax.Array:
            depth = layer_depth(_path_names(path), num_layers)
            if depth is None:
                factors = decay ** (num_layers - jnp.arange(num_layers, dtype=jnp.float32))
                return u * factors.reshape((num_layers,) + (1,) * (u.ndim - 1)).astype(u.dtype)
            return u * jnp.asarray(decay ** (num_layers + 1 - depth), u.dtype)

        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def make_optimizer(
    train_cfg: Any, *, layer_decay: float = 1.0, num_layers: int = 0
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = learning_rate_schedule(train_cfg)
    chain = []
    if train_cfg.clip_norm:
        chain.append(optax.clip_by_global_norm(float(train_cfg.clip_norm)))
    chain.append(
        optax.adamw(
            schedule,
            b1=float(train_cfg.b1),
            b2=float(train_cfg.b2),
            eps=float(train_cfg.eps),
            weight_decay=float(train_cfg.weight_decay),
            mask=weight_decay_mask,
        )
    )
    if not 0.0 < layer_decay <= 1.0:
        raise UserError(f"train.layer_decay={layer_decay} must be in (0, 1] (1 = off)")
    if layer_decay < 1.0:
        chain.append(layerwise_lr_decay(layer_decay, num_layers))
    return optax.chain(*chain), schedule
