"""Pure losses and steps for fine-tuning: classification (cross-entropy), regression (squared error) and
extractive QA (start/end cross-entropy), with their jitted, sharded forms.

Losses are returned as sums over the batch's real examples (`example_weights`), so that padded eval batches,
microbatches and hosts combine exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from plm_jax.parallel.sharding import traced_with_activation_sharding
from plm_jax.train.state import TrainState
from plm_jax.train.step import Batch, accumulate_grads

TASK_KINDS = ("classification", "regression", "qa")
_NEG_INF = -1e9


def forward(model: nn.Module, params: Any, batch: Batch, deterministic: bool, rngs: dict | None = None):
    return model.apply({"params": params}, batch["input_ids"], batch["segment_ids"], batch["positions"],
                       batch["token_type_ids"], deterministic=deterministic, rngs=rngs)


def _cross_entropy(logits_BxC: jax.Array, labels_B: jax.Array) -> jax.Array:
    logp_BxC = jax.nn.log_softmax(logits_BxC, axis=-1)
    return -jnp.take_along_axis(logp_BxC, labels_B[:, None], axis=-1)[:, 0]


def span_logits(outputs: tuple[jax.Array, jax.Array], segment_ids_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Start/end logits with padding positions pushed to -inf (a span never starts in the padding)."""
    valid_BxL = segment_ids_BxL != 0
    return tuple(jnp.where(valid_BxL, x_BxL, _NEG_INF) for x_BxL in outputs)  # type: ignore[return-value]


def loss_sums(kind: str, outputs: Any, batch: Batch) -> dict[str, jax.Array]:
    """Summed loss (and correct predictions) over the real examples of the batch."""
    w_B = batch["example_weights"]
    if kind == "classification":
        logits_BxC = outputs
        nll_B = _cross_entropy(logits_BxC, batch["labels"])
        correct_B = (jnp.argmax(logits_BxC, axis=-1) == batch["labels"]).astype(jnp.float32)
        return {"loss_sum": jnp.sum(nll_B * w_B), "correct_sum": jnp.sum(correct_B * w_B), "weight_sum": jnp.sum(w_B)}
    if kind == "regression":
        err_B = outputs[:, 0] - batch["labels"]
        return {"loss_sum": jnp.sum(jnp.square(err_B) * w_B), "weight_sum": jnp.sum(w_B)}
    if kind == "qa":
        start_BxL, end_BxL = span_logits(outputs, batch["segment_ids"])
        nll_B = 0.5 * (_cross_entropy(start_BxL, batch["start_positions"])
                       + _cross_entropy(end_BxL, batch["end_positions"]))
        correct_B = ((jnp.argmax(start_BxL, -1) == batch["start_positions"])
                     & (jnp.argmax(end_BxL, -1) == batch["end_positions"])).astype(jnp.float32)
        return {"loss_sum": jnp.sum(nll_B * w_B), "correct_sum": jnp.sum(correct_B * w_B), "weight_sum": jnp.sum(w_B)}
    raise ValueError(f"task.kind={kind!r}; expected one of {TASK_KINDS}")


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    model: nn.Module,
    kind: str,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    dropout_key: jax.Array,
    accum_steps: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One AdamW update on the mean loss over the batch; dropout noise is a function of (key, step)."""
    def sums_fn(p: Any, micro: Batch, key: jax.Array):
        sums = loss_sums(kind, forward(model, p, micro, deterministic=False, rngs={"dropout": key}), micro)
        return sums["loss_sum"], sums

    rng = jax.random.fold_in(dropout_key, state.step)
    grad_sums, sums = accumulate_grads(sums_fn, state.params, batch, rng, accum_steps)
    weight = jnp.maximum(sums["weight_sum"], 1.0)
    grads = jax.tree.map(lambda g: g / weight, grad_sums)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": sums["loss_sum"] / weight, "grad_norm": optax.global_norm(grads),
               "learning_rate": schedule(state.step)}
    if "correct_sum" in sums:
        metrics["accuracy"] = sums["correct_sum"] / weight
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def predict_step(params: Any, batch: Batch, *, model: nn.Module, kind: str) -> dict[str, jax.Array]:
    """The model's outputs for host-side metrics, and the loss sums."""
    outputs = forward(model, params, batch, deterministic=True)
    out = dict(loss_sums(kind, outputs, batch)) if "labels" in batch or "start_positions" in batch else {}
    if kind == "qa":
        out["start_logits"], out["end_logits"] = span_logits(outputs, batch["segment_ids"])
    else:
        out["logits"] = outputs
    return out


def jit_steps(
    model: nn.Module,
    kind: str,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    state_shardings: TrainState,
    batch_sharding: jax.sharding.NamedSharding,
    dropout_key: jax.Array,
    accum_steps: int = 1,
    rules: Sequence[tuple[str, Any]] | None = None,
) -> tuple[Callable, Callable]:
    """The train step with explicit shardings and donated state, and the predict step. With `rules`, activations
    are pinned by their logical names as well (parallel/sharding.py `constrain`)."""
    replicated = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
    train = jax.jit(
        traced_with_activation_sharding(
            lambda s, b: train_step(s, b, model=model, kind=kind, tx=tx, schedule=schedule,
                                    dropout_key=dropout_key, accum_steps=accum_steps),
            batch_sharding.mesh, rules),
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
    return train, jit_predict(model, kind, state_shardings.params, batch_sharding, rules)


def jit_predict(model: nn.Module, kind: str, param_shardings: Any, batch_sharding: jax.sharding.NamedSharding,
                rules: Sequence[tuple[str, Any]] | None = None):
    """The predict step; outputs replicated, so that every host can compute metrics and write predictions."""
    replicated = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
    return jax.jit(traced_with_activation_sharding(lambda p, b: predict_step(p, b, model=model, kind=kind),
                                                   batch_sharding.mesh, rules),
                   in_shardings=(param_shardings, batch_sharding), out_shardings=replicated)
