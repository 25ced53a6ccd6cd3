"""The one train step, for every task: pure, jitted with explicit shardings and a donated state.

The task gives the loss as sums (train/task.py); the step turns them into the gradient of the mean loss over the
whole batch, in sequential microbatches when `accum_steps` > 1, and applies one AdamW update. Dropout noise is a
function of (dropout_key, step), so a resumed run needs no saved RNG state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from plm_jax.errors import UserError
from plm_jax.parallel.sharding import traced_with_activation_sharding
from plm_jax.train.state import TrainState
from plm_jax.train.task import Task

Batch = dict[str, jax.Array]


def _microbatches(batch: Batch, n: int) -> Batch:
    """[B, ...] -> [n, B/n, ...] taking every n-th row, so each device's rows feed every microbatch evenly."""
    def split(x: jax.Array) -> jax.Array:
        if x.shape[0] % n:
            raise UserError(f"batch of {x.shape[0]} rows does not split into {n} microbatches")
        return jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def accumulate_grads(sums_fn: Callable, params: Any, batch: Batch, rng: jax.Array, accum_steps: int = 1):
    """Gradients of a *summed* loss, and its sums; microbatches add up to exactly the full batch.

    `sums_fn(params, microbatch, dropout_key) -> (loss_sum, {name: sum})`: any task that reports sums.
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


def train_step(
    state: TrainState,
    batch: Batch,
    frozen: Any = None,
    *,
    task: Task,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    dropout_key: jax.Array,
    accum_steps: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One AdamW update on the mean loss over the whole batch. `frozen`: parameters the loss reads but that are
    not trained (a teacher's); no gradient is taken with respect to them."""
    def loss_sum_fn(p: Any, micro: Batch, key: jax.Array):
        extra = {} if frozen is None else {"frozen": frozen}
        sums = task.loss_sums(p, micro, deterministic=False, rngs={"dropout": key}, **extra)
        return sums["loss_sum"], sums

    rng = jax.random.fold_in(dropout_key, state.step)
    grad_sums, sums = accumulate_grads(loss_sum_fn, state.params, batch, rng, accum_steps)
    weight = jnp.maximum(sums["weight_sum"], 1.0)
    grads = jax.tree.map(lambda g: g / weight, grad_sums)  # the gradient of the mean loss over the whole batch
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": sums["loss_sum"] / weight, "grad_norm": optax.global_norm(grads),
               "learning_rate": schedule(state.step)}
    if "correct_sum" in sums:
        metrics["accuracy"] = sums["correct_sum"] / jnp.maximum(sums.get("labeled_sum", weight), 1.0)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def jit_steps(
    task: Task,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    state_shardings: TrainState,
    batch_sharding: jax.sharding.NamedSharding,
    dropout_key: jax.Array,
    accum_steps: int = 1,
    rules: Sequence[tuple[str, Any]] | None = None,
    frozen_shardings: Any = None,
) -> tuple[Callable, Callable, Callable]:
    """(train, eval_sums, predict): the train step with explicit shardings and donated state; the evaluation
    steps with replicated outputs, so that every host can compute metrics. With `rules`, activations are pinned
    by their logical names as well (parallel/sharding.py `constrain`)."""
    def step(s: TrainState, b: Batch, *frozen: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        return train_step(s, b, *frozen, task=task, tx=tx, schedule=schedule, dropout_key=dropout_key,
                          accum_steps=accum_steps)

    frozen_in = () if frozen_shardings is None else (frozen_shardings,)  # a teacher: an argument, never donated
    train = jax.jit(
        _pinned(step, batch_sharding, rules),
        in_shardings=(state_shardings, batch_sharding, *frozen_in),
        out_shardings=(state_shardings, _replicated(batch_sharding)),
        donate_argnums=0,
    )
    eval_sums, predict = jit_eval_steps(task, state_shardings.params, batch_sharding, rules)
    return train, eval_sums, predict


def jit_eval_steps(task: Task, param_shardings: Any, batch_sharding: jax.sharding.NamedSharding,
                   rules: Sequence[tuple[str, Any]] | None = None, unpack: Callable | None = None
                   ) -> tuple[Callable, Callable]:
    """(eval_sums, predict) without an optimizer: what evaluation and inference need. `unpack` turns the
    parameters passed in (int8 weights: compress/int8.py) into the model's inside the jitted function."""
    unpack = unpack or (lambda p: p)

    def jit(fn: Callable) -> Callable:
        return jax.jit(_pinned(fn, batch_sharding, rules), in_shardings=(param_shardings, batch_sharding),
                       out_shardings=_replicated(batch_sharding))

    return (jit(lambda p, b: task.loss_sums(unpack(p), b, deterministic=True)),
            jit(lambda p, b: task.predict(unpack(p), b)))


def _pinned(fn: Callable, batch_sharding: jax.sharding.NamedSharding, rules: Any) -> Callable:
    return traced_with_activation_sharding(fn, batch_sharding.mesh, rules)


def _replicated(batch_sharding: jax.sharding.NamedSharding) -> jax.sharding.NamedSharding:
    return jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
