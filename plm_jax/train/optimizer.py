"""AdamW with warmup + decay, weight decay masked off biases and LayerNorm, global-norm clipping."""

from __future__ import annotations

from typing import Any

import jax
import optax

_DECAYS = ("linear", "cosine", "constant")


def learning_rate_schedule(train_cfg: Any) -> optax.Schedule:
    """Linear warmup from 0 to `lr`, then linear/cosine decay to `lr * end_lr_fraction` at `steps`."""
    steps, warmup = int(train_cfg.steps), int(train_cfg.warmup_steps)
    peak, end = float(train_cfg.lr), float(train_cfg.lr) * float(train_cfg.end_lr_fraction)
    if train_cfg.decay not in _DECAYS:
        raise ValueError(f"train.decay={train_cfg.decay!r}; expected one of {_DECAYS}")
    if not 0 <= warmup <= steps:
        raise ValueError(f"train.warmup_steps={warmup} must be in [0, train.steps={steps}]")
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


def make_optimizer(train_cfg: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
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
    return optax.chain(*chain), schedule
