"""Next-token targets for causal LM on packed rows.

A token predicts the next token only inside its own segment: across a document boundary (or a row cut, where
the document continues in the next row as a new segment) there is nothing to predict from the segment's own
context, and padding predicts nothing. Pure and vectorised, so it works on one row or a batch of rows.
"""

from __future__ import annotations

import tensorflow as tf


def causal_targets(row: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The row plus target_ids (int32, input_ids[t + 1] or 0) and target_weights (float32, 1 where real).

    Works on [..., seq_len] rows: position t has a target when t + 1 is in the same nonzero segment.
    """
    ids = tf.cast(row["input_ids"], tf.int32)
    seg = tf.cast(row["segment_ids"], tf.int32)
    next_ids = tf.concat([ids[..., 1:], tf.zeros_like(ids[..., :1])], axis=-1)
    next_seg = tf.concat([seg[..., 1:], tf.zeros_like(seg[..., :1])], axis=-1)
    has_target = (seg > 0) & (next_seg == seg)
    out = dict(row)
    out["target_ids"] = tf.where(has_target, next_ids, 0)
    out["target_weights"] = tf.cast(has_target, tf.float32)
    return out
