"""BERT masked-LM corruption as a pure function of (seed, example index).

Only stateless random ops are used, seeded by [seed, index], so the masks of row i do not depend on thread
count, shuffle buffers or how many rows were skipped: a resumed run sees exactly the masks of an uninterrupted
one. Exactly k = min(max_predictions, max(1, round(mask_rate * candidates))) candidates are selected per row;
the loss covers every selected token, whether it became [MASK], a random token or stayed unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from plm_jax.data.data_config import resolve_max_predictions
from plm_jax.errors import UserError

_RNG_ALG = "philox"  # explicit: "auto_select" may pick a different generator on another device


def validate_mlm_config(data_cfg: ml_collections.ConfigDict) -> None:
    """Raises ValueError, one clear line, for masking settings that cannot do what they say."""
    seq_len = int(data_cfg.seq_len)
    if seq_len < 2:
        raise UserError(f"data.seq_len must be at least 2, got {seq_len}")
    rate, mask_frac, rand_frac = float(data_cfg.mask_rate), float(data_cfg.mask_token_frac), float(
        data_cfg.random_token_frac
    )
    if not 0.0 < rate <= 1.0:
        raise UserError(f"data.mask_rate must be in (0, 1], got {rate}")
    for name, value in (("mask_token_frac", mask_frac), ("random_token_frac", rand_frac)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"data.{name} must be in [0, 1], got {value}")
    if mask_frac + rand_frac > 1.0 + 1e-9:
        raise UserError(f"data.mask_token_frac + data.random_token_frac must be <= 1, got {mask_frac + rand_frac}")
    if int(data_cfg.max_predictions) < 0:
        raise UserError(f"data.max_predictions must be >= 0 (0 = automatic), got {data_cfg.max_predictions}")
    needed = max(1, round(rate * seq_len))
    max_predictions = resolve_max_predictions(data_cfg)
    if not needed <= max_predictions <= seq_len:
        raise UserError(f"data.max_predictions={max_predictions} must be in [{needed}, {seq_len}] "
                         f"for mask_rate={rate} and seq_len={seq_len}")


def allowed_replacement_ids(vocab_size: int, special_ids: Sequence[int]) -> np.ndarray:
    """The ids a random replacement may take: the vocabulary minus the special ids."""
    allowed = np.setdiff1d(np.arange(vocab_size, dtype=np.int32), np.asarray(special_ids, dtype=np.int32))
    if allowed.size == 0:
        raise UserError(f"no replacement ids: all {vocab_size} ids are special")
    return allowed


def mask_example(
    example: dict[str, tf.Tensor],
    index: tf.Tensor,
    *,
    seed: int,
    vocab_size: int,
    special_ids: Sequence[int],
    mask_id: int,
    mask_rate: float,
    mask_token_frac: float,
    random_token_frac: float,
    max_predictions: int,
) -> dict[str, tf.Tensor]:
    """Masks one packed row; usable in `Dataset.enumerate().map(lambda i, ex: mask_example(ex, i, ...))`.

    Returns the row with corrupted `input_ids` (other fields kept) plus `masked_positions` (sorted, 0-padded),
    `masked_ids` (original ids, 0-padded), int32 [max_predictions], and `masked_weights` float32 (1 = real).
    """
    input_ids = tf.cast(example["input_ids"], tf.int32)
    seq_len = input_ids.shape[0]
    if seq_len is None or not 0 < max_predictions <= seq_len:
        raise UserError(f"need a static seq_len >= max_predictions={max_predictions}, got {seq_len}")
    is_special = np.zeros([vocab_size], dtype=bool)
    is_special[list(special_ids)] = True
    candidate = ~tf.gather(tf.constant(is_special), input_ids) & (example["segment_ids"] > 0)
    n_candidates = tf.reduce_sum(tf.cast(candidate, tf.int32))
    k = tf.minimum(max_predictions, tf.maximum(1, tf.cast(tf.round(mask_rate * tf.cast(n_candidates, tf.float64)),
                                                          tf.int32)))
    k = tf.where(n_candidates > 0, k, 0)

    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])
    select_key, action_key, token_key = tf.unstack(tf.random.experimental.stateless_split(key, 3, alg=_RNG_ALG))
    # Uniform selection of exactly k candidates: the k highest random scores (non-candidates score -1).
    scores = tf.random.stateless_uniform([seq_len], select_key, alg=_RNG_ALG)
    _, top = tf.math.top_k(tf.where(candidate, scores, -1.0), k=max_predictions, sorted=True)
    real = tf.range(max_predictions) < k
    positions = tf.sort(tf.where(real, top, seq_len))  # the k real positions first, ascending
    positions = tf.where(real, positions, 0)
    original = tf.where(real, tf.gather(input_ids, positions), 0)

    action = tf.random.stateless_uniform([max_predictions], action_key, alg=_RNG_ALG)
    allowed = allowed_replacement_ids(vocab_size, special_ids)
    random_tokens = tf.gather(allowed, tf.random.stateless_uniform(
        [max_predictions], token_key, minval=0, maxval=len(allowed), dtype=tf.int32, alg=_RNG_ALG))
    replaced = tf.where(action < mask_token_frac, tf.constant(mask_id, tf.int32),
                        tf.where(action < mask_token_frac + random_token_frac, random_tokens, original))
    # Padding slots write to a scratch position past the end, so they never clobber position 0.
    scatter_at = tf.where(real, positions, seq_len)[:, tf.newaxis]
    corrupted = tf.tensor_scatter_nd_update(tf.concat([input_ids, [0]], axis=0), scatter_at, replaced)[:seq_len]

    out = dict(example)
    out["input_ids"] = corrupted
    out["masked_positions"] = positions
    out["masked_ids"] = original
    out["masked_weights"] = tf.cast(real, tf.float32)
    return out
