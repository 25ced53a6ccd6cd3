"""A document shuffle that is a pure function of (seed, epoch): stateless windows instead of tf.data's buffer.

`Dataset.shuffle(seed=s)` also mixes in TF's global seed (`tf.random.set_seed`), so a call to it anywhere in the
process would silently change the data order and break resume-by-skip. Here each epoch is cut into windows of
`window` elements at a random offset and every window is permuted with `stateless_shuffle`, keyed by
(seed, epoch, window). Like a shuffle buffer it is local (elements move less than two windows), and it holds one
window in memory; unlike it, the order depends on nothing but the seed.
"""

from __future__ import annotations

import tensorflow as tf

from plm_jax.errors import UserError

_RNG_ALG = "philox"


def _epoch_order(dataset: tf.data.Dataset, window: int, seed: int, epoch: tf.Tensor) -> tf.data.Dataset:
    key = tf.stack([tf.constant(seed, tf.int64), epoch])
    offset_key, window_key = tf.unstack(tf.random.experimental.stateless_split(key, 2, alg=_RNG_ALG))
    # A random first-window size moves the window boundaries from epoch to epoch.
    offset = tf.random.stateless_uniform([], offset_key, minval=0, maxval=window, dtype=tf.int64, alg=_RNG_ALG)
    windows = dataset.take(offset).batch(window).concatenate(dataset.skip(offset).batch(window))

    def permute(i: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
        per_window = tf.random.experimental.stateless_fold_in(window_key, i, alg=_RNG_ALG)
        return tf.random.experimental.stateless_shuffle(batch, per_window, alg=_RNG_ALG)

    return windows.enumerate().map(permute).unbatch()


def stateless_window_shuffle(
    dataset: tf.data.Dataset, *, window: int, seed: int, repeat: bool
) -> tf.data.Dataset:
    """Shuffles dataset (scalar elements) within windows; with repeat, each epoch gets its own order."""
    if window < 1:
        raise UserError(f"shuffle window must be >= 1, got {window}")
    epochs = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)
    return epochs.flat_map(lambda epoch: _epoch_order(dataset, window, seed, tf.cast(epoch, tf.int64)))
