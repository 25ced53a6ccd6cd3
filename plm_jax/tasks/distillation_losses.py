"""Knowledge-distillation losses: pure functions of student and teacher outputs, summed per example so that
the trainer's weighted sums add up over microbatches and hosts (train/task.py).

- `soft_cross_entropy_kl`: Hinton et al. (2015): KL(teacher || student) of the temperature-softened
  distributions, times T^2 so that its gradients keep their size as T changes. Used for class logits, QA start
  and end logits, and MLM vocabulary logits alike.
- `relation_kl`: MiniLM v2 (Wang et al., 2021): the self-attention relations (softmax(X_r X_r^T / sqrt(d_r))) of
  the queries, keys or values of one layer, split into the same number of relation heads for teacher and
  student, so that a student of another width or head count learns from them.
- `hidden_mse`: TinyBERT's hidden-state matching through a learned projection (the projection is the caller's).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_cross_entropy_kl(student_logits_BxC: jax.Array, teacher_logits_BxC: jax.Array,
                          temperature: float) -> jax.Array:
    """T^2 * KL(softmax(t / T) || softmax(s / T)) per row (over the last axis): B (or any leading shape)."""
    t = jnp.asarray(temperature, jnp.float32)
    logp_s = jax.nn.log_softmax(student_logits_BxC.astype(jnp.float32) / t, axis=-1)
    logp_t = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits_BxC).astype(jnp.float32) / t, axis=-1)
    p_t = jnp.exp(logp_t)
    return (t * t) * jnp.sum(p_t * (logp_t - logp_s), axis=-1)


def _same_segment(segment_ids_BxL: jax.Array) -> jax.Array:
    """BxLxL: key k is a valid relation of query q (same segment of a packed row; segment 0 is padding)."""
    return (segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]) & (segment_ids_BxL[:, None, :] > 0)


def relations(x_BxLxD: jax.Array, num_heads: int, segment_ids_BxL: jax.Array) -> jax.Array:
    """log softmax(X_r X_r^T / sqrt(D / R)) per relation head r: BxRxLxL, over the keys of the query's own
    segment (a 0/1 padding mask is one segment)."""
    b, length, d = x_BxLxD.shape
    if d % num_heads:
        raise ValueError(f"width {d} does not split into {num_heads} relation heads")
    dr = d // num_heads
    x_BxRxLxDr = x_BxLxD.astype(jnp.float32).reshape(b, length, num_heads, dr).transpose(0, 2, 1, 3)
    scores_BxRxLxL = jnp.einsum("brqd,brkd->brqk", x_BxRxLxDr, x_BxRxLxDr) / jnp.sqrt(jnp.float32(dr))
    scores_BxRxLxL = jnp.where(_same_segment(segment_ids_BxL)[:, None], scores_BxRxLxL, -1e9)
    return jax.nn.log_softmax(scores_BxRxLxL, axis=-1)


def relation_kl(student_BxLxDs: jax.Array, teacher_BxLxDt: jax.Array, num_heads: int,
                segment_ids_BxL: jax.Array) -> jax.Array:
    """KL(teacher relations || student relations) per example: summed over the real query positions and
    averaged over relation heads (MiniLM v2 averages over both; the caller normalizes)."""
    logp_s = relations(student_BxLxDs, num_heads, segment_ids_BxL)
    logp_t = relations(jax.lax.stop_gradient(teacher_BxLxDt), num_heads, segment_ids_BxL)
    valid_keys = _same_segment(segment_ids_BxL)[:, None]
    kl_BxRxL = jnp.sum(jnp.where(valid_keys, jnp.exp(logp_t) * (logp_t - logp_s), 0.0), axis=-1)
    return jnp.sum(jnp.mean(kl_BxRxL, axis=1) * (segment_ids_BxL > 0).astype(jnp.float32), axis=-1)


def hidden_mse(projected_student_BxLxD: jax.Array, teacher_BxLxD: jax.Array, mask_BxL: jax.Array) -> jax.Array:
    """Squared error per example, summed over valid positions, averaged over the width."""
    err = jnp.mean(jnp.square(projected_student_BxLxD.astype(jnp.float32)
                              - jax.lax.stop_gradient(teacher_BxLxD).astype(jnp.float32)), axis=-1)
    return jnp.sum(err * mask_BxL.astype(jnp.float32), axis=-1)


def mixed_loss(label_loss_B: jax.Array, distill_loss_B: jax.Array, alpha: float) -> jax.Array:
    """(1 - alpha) * label loss + alpha * distillation loss: alpha=1 learns from the teacher alone (unlabeled
    text), alpha=0 is plain fine-tuning."""
    return (1.0 - alpha) * label_loss_B + alpha * distill_loss_B
