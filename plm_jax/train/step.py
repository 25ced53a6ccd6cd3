"""Pure train and eval steps for any token objective (MLM, causal LM, span corruption, seq2seq), jitted and sharded."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from plm_jax.parallel.sharding import traced_with_activation_sharding
from plm_jax.train.objectives import Objective
from plm_jax.train.state import TrainState

Batch = dict[str, jax.Array]


def _microbatches(batch: Batch, n: int) -> Batch:
    """[B, ...] -> [n, B/n, ...] taking every n-th row, so each device's rows feed every microbatch evenly."""
    def split(x: jax.Array) -> jax.Array:
        if x.shape[0] % n:
            raise ValueError(f"batch of {x.shape[0]} rows does not split into {n} microbatches")
        return jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def accumulate_grads(sums_fn: Callable, params: Any, batch: Batch, rng: jax.Array, accum_steps: int = 1):
    """Gradients of a *summed* loss, and its sums; microbatches add up to exactly the full batch.

    `sums_fn(params, microbatch, dropout_key) -> (loss_sum, {name: sum})`: any objective that reports sums.
    """
    grad_fn = jax.grad(sums_fn, has_aux=True)
    if accum_steps == 1:
        return grad_fn(params, batch, rng)
    shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[: x.shape[0] // accum_steps], batch), rng)

    def body(carry, xs):
        i, micro = xs
        grads, sums = grad_fn(params, micro, jax.random.fold_in(rng, i))
        return jax.tree.map(jnp.add, carry, (grads, sums)), None

    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (grads, sums), _ = jax.lax.scan(body, zeros, (jnp.arange(accum_steps), _microbatches(batch, accum_steps)))
    return grads, sums


def summed_grads(model: nn.Module, objective: Objective, params: Any, batch: Batch, rng: jax.Array,
                 accum_steps: int = 1):
    """Gradients of the objective's summed token loss, and the sums."""
    def loss_sum_fn(p: Any, micro: Batch, key: jax.Array):
        sums = objective.loss_sums(model, p, micro, deterministic=False, rngs={"dropout": key})
        return sums["loss_sum"], sums

    return accumulate_grads(loss_sum_fn, params, batch, rng, accum_steps)


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    model: nn.Module,
    objective: Objective,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    dropout_key: jax.Array,
    accum_steps: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One AdamW update over the whole batch (in `accum_steps` sequential microbatches if > 1, to save memory).

    Dropout noise is a function of (dropout_key, step): resumable without saved RNG state.
    """
    rng = jax.random.fold_in(dropout_key, state.step)
    grad_sums, sums = summed_grads(model, objective, state.params, batch, rng, accum_steps)
    weight = jnp.maximum(sums["weight_sum"], 1.0)
    grads = jax.tree.map(lambda g: g / weight, grad_sums)  # the gradient of the mean loss over the whole batch
    loss = sums["loss_sum"] / weight
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "accuracy": sums["correct_sum"] / weight,
        "grad_norm": optax.global_norm(grads),
        "learning_rate": schedule(state.step),
    }
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params: Any, batch: Batch, *, model: nn.Module, objective: Objective) -> dict[str, jax.Array]:
    return objective.loss_sums(model, params, batch, deterministic=True)


def eval_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Token loss, accuracy and perplexity from summed eval statistics."""
    weight = max(float(sums["weight_sum"]), 1.0)
    loss = float(sums["loss_sum"]) / weight
    return {"loss": loss, "accuracy": float(sums["correct_sum"]) / weight,
            "perplexity": float(jnp.exp(jnp.minimum(loss, 50.0))), "tokens": float(sums["weight_sum"])}


def jit_steps(
    model: nn.Module,
    objective: Objective,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    state_shardings: TrainState,
    batch_sharding: jax.sharding.NamedSharding,
    dropout_key: jax.Array,
    accum_steps: int = 1,
    rules: Sequence[tuple[str, Any]] | None = None,
) -> tuple[Callable, Callable]:
    """The train step with explicit shardings and donated state, and the eval step. With `rules`, activations
    are pinned by their logical names as well (parallel/sharding.py `constrain`)."""
    mesh = batch_sharding.mesh
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    pinned = functools.partial(traced_with_activation_sharding, mesh=mesh, rules=rules)
    train = jax.jit(
        pinned(lambda s, b: train_step(s, b, model=model, objective=objective, tx=tx, schedule=schedule,
                                       dropout_key=dropout_key, accum_steps=accum_steps)),
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
    evaluate = jax.jit(
        pinned(lambda p, b: eval_step(p, b, model=model, objective=objective)),
        in_shardings=(state_shardings.params, batch_sharding),
        out_shardings=replicated,
    )
    return train, evaluate
