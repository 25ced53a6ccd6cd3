"""T5 span corruption in the tf.data graph, as a pure function of (seed, row index).

As in masking.py, only stateless random ops (alg "philox") seeded by [seed, index] are used, so the corruption
of row i does not depend on thread count or on how many rows were skipped: a resumed run is bit-identical.

A packed row of raw_len tokens is treated as one sequence (as T5 does after concatenating documents). Noise is
placed only on the real tokens (segment_ids > 0): the zero padding of the final row of a finite stream is never
noise and is dropped, so no sentinel or target is ever emitted for padding; that row's encoder input and targets
are shorter and zero-padded. Full rows have exactly the lengths planned by `raw_length_for`, so batches have
static shapes with no padding outside the final row.
"""

from __future__ import annotations

import ml_collections
import tensorflow as tf

from plm_jax.errors import UserError

_RNG_ALG = "philox"  # explicit: "auto_select" may pick a different generator on another device


def span_lengths(
    raw_len: int | tf.Tensor, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int] | tuple[tf.Tensor, tf.Tensor]:
    """(num_noise_tokens, num_spans) for raw_len >= 2 tokens, by T5's rule with its degeneracy clips.

    Accepts a Python int (static planning) or an int scalar tensor (the shorter final row); both use float64
    round-half-to-even, so they agree exactly.
    """
    if isinstance(raw_len, (tf.Tensor, tf.Variable)):
        n = tf.cast(raw_len, tf.int32)
        noise = tf.cast(tf.round(tf.cast(n, tf.float64) * noise_density), tf.int32)
        noise = tf.minimum(tf.maximum(noise, 1), n - 1)
        spans = tf.cast(tf.round(tf.cast(noise, tf.float64) / mean_noise_span_length), tf.int32)
        spans = tf.minimum(tf.maximum(spans, 1), tf.minimum(noise, n - noise))
        return noise, spans
    n = int(raw_len)
    if n < 2:
        raise UserError(f"span corruption needs at least 2 tokens, got raw_len={n}")
    noise = min(max(round(n * noise_density), 1), n - 1)
    spans = min(max(round(noise / mean_noise_span_length), 1), noise, n - noise)
    return noise, spans


def _corrupted_lengths(n: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int, int]:
    """(encoder length, target length, spans) of a row with n real tokens, EOS included."""
    if n < 2:  # T5's mask starts with non-noise, so a single token is never noise
        return n + 1, 1, 0
    noise, spans = span_lengths(n, noise_density, mean_noise_span_length)
    return n - noise + spans + 1, noise + spans + 1, spans


def _check_span_settings(noise_density: float, mean_noise_span_length: float) -> None:
    if not 0.0 < noise_density < 1.0:
        raise UserError(f"data.noise_density must be in (0, 1), got {noise_density}")
    if not mean_noise_span_length >= 1.0:
        raise UserError(f"data.mean_noise_span_length must be >= 1, got {mean_noise_span_length}")


def _plan(inputs_len: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int, int]:
    """(raw_len, targets_len, max spans) such that every row of <= raw_len real tokens fits.

    Maxima are taken over all real lengths n <= raw_len (the final row is shorter), so the static shapes hold
    even where T5's clipping makes the lengths non-monotone in n.
    """
    _check_span_settings(noise_density, mean_noise_span_length)
    enc_max = tgt_max = spans_max = 0
    raw, plan = 1, None
    while True:
        enc, tgt, spans = _corrupted_lengths(raw + 1, noise_density, mean_noise_span_length)
        if max(enc_max, enc) > inputs_len:
            break
        raw += 1
        enc_max, tgt_max, spans_max = max(enc_max, enc), max(tgt_max, tgt), max(spans_max, spans)
        plan = (raw, tgt_max, spans_max)
    if plan is None:
        raise UserError(f"inputs_len={inputs_len} is too short to hold one noise span: it needs at least 3 "
                         f"(one token, one sentinel, EOS)")
    if noise_density == 0.5 and plan[1] > inputs_len and plan[0] > 2:
        # T5's hack: one token less makes the targets as long as the inputs (a round number) at density 0.5.
        return _plan_upto(plan[0] - 1, noise_density, mean_noise_span_length)
    return plan


def _plan_upto(raw_len: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int, int]:
    lengths = [_corrupted_lengths(n, noise_density, mean_noise_span_length) for n in range(2, raw_len + 1)]
    return raw_len, max(t for _, t, _ in lengths), max(s for _, _, s in lengths)


def raw_length_for(inputs_len: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(raw_len, targets_len): T5's `random_spans_helper` with one sentinel per span on each side.

    raw_len is the largest number of raw tokens whose corrupted encoder input (non-noise tokens + one sentinel
    per span + EOS) fits in inputs_len; targets_len = noise tokens + one sentinel per span + EOS. E.g.
    (512, 0.15, 3.0) -> (568, 114). Unlike T5, targets_len is recomputed after T5's density-0.5 hack (which drops
    one raw token and assumes the targets shrink by one; they can shrink by two), so it is always exact.
    """
    raw, targets_len, _ = _plan(int(inputs_len), float(noise_density), float(mean_noise_span_length))
    return raw, targets_len


def validate_span_config(data_cfg: ml_collections.ConfigDict) -> None:
    """Raises ValueError, one clear line, for span-corruption settings that cannot do what they say."""
    density, mean = float(data_cfg.noise_density), float(data_cfg.mean_noise_span_length)
    seq_len, sentinels = int(data_cfg.seq_len), int(data_cfg.num_sentinels)
    _check_span_settings(density, mean)
    if _corrupted_lengths(2, density, mean)[0] > seq_len:
        raise UserError(f"data.seq_len={seq_len} is too short for span corruption: one span needs at least 3 "
                         f"encoder tokens (a token, a sentinel, EOS)")
    raw, _, spans = _plan(seq_len, density, mean)
    if sentinels < spans:
        raise UserError(f"data.num_sentinels={sentinels} is fewer than the {spans} noise spans a row of {raw} "
                         f"tokens needs (seq_len={seq_len}, noise_density={density}, mean_noise_span_length={mean})")


def _random_segmentation(num_items: tf.Tensor, num_segments: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Lengths of a uniformly random partition of num_items items into num_segments non-empty segments."""
    first_in_segment = tf.cast(tf.range(num_items - 1) < num_segments - 1, tf.int32)
    first_in_segment = tf.pad(tf.random.experimental.stateless_shuffle(first_in_segment, seed, alg=_RNG_ALG),
                              [[1, 0]])
    segment_id = tf.cumsum(first_in_segment)
    return tf.math.segment_sum(tf.ones_like(segment_id), segment_id)


def random_spans_noise_mask(
    raw_len: int | tf.Tensor, noise_density: float, mean_noise_span_length: float, seed_pair: tf.Tensor
) -> tf.Tensor:
    """bool [raw_len], True on noise: T5's spans, alternating non-noise/noise and starting with non-noise.

    Exactly span_lengths(raw_len) noise tokens in exactly that many non-empty spans (raw_len >= 2; a length 1
    gets no noise, as in T5). seed_pair: int [2], e.g. [seed, row index].
    """
    orig_len = tf.cast(raw_len, tf.int32)
    length = tf.maximum(orig_len, 2)
    num_noise, num_spans = span_lengths(length, noise_density, mean_noise_span_length)
    noise_seed, nonnoise_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed_pair, tf.int64), 2, alg=_RNG_ALG))
    noise_lengths = _random_segmentation(num_noise, num_spans, noise_seed)
    nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, nonnoise_seed)
    interleaved = tf.reshape(tf.stack([nonnoise_lengths, noise_lengths], axis=1), [-1])
    span_starts = tf.cumsum(interleaved)[:-1]
    start_indicator = tf.math.unsorted_segment_sum(tf.ones_like(span_starts), span_starts, length)
    is_noise = tf.equal(tf.cumsum(start_indicator) % 2, 1)[:orig_len]
    if isinstance(raw_len, int):
        is_noise = tf.ensure_shape(is_noise, [raw_len])
    return is_noise


def _emit(
    sentinels: tf.Tensor, sentinel_here: tf.Tensor, tokens: tf.Tensor, token_here: tf.Tensor, eos_id: int,
    out_len: int, what: str,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(ids, segment_ids, positions) [out_len]: per position, the sentinel then the token where kept, then EOS."""
    values = tf.reshape(tf.stack([sentinels, tokens], axis=1), [-1])
    keep = tf.reshape(tf.stack([sentinel_here, token_here], axis=1), [-1])
    ids = tf.concat([tf.boolean_mask(values, keep), tf.constant([eos_id], tf.int32)], axis=0)
    length = tf.shape(ids)[0]
    with tf.control_dependencies([tf.debugging.assert_less_equal(
            length, out_len, message=f"span corruption: {what} longer than planned")]):
        ids = tf.pad(ids, [[0, out_len - length]])
    ids = tf.ensure_shape(ids, [out_len])
    real = tf.range(out_len) < length
    return ids, tf.cast(real, tf.int32), tf.where(real, tf.range(out_len), 0)


def corrupt_row(
    row: dict[str, tf.Tensor],
    index: tf.Tensor,
    *,
    seed: int,
    noise_density: float,
    mean_noise_span_length: float,
    sentinel_start: int,
    eos_id: int,
    bos_id: int,
    inputs_len: int,
    targets_len: int,
) -> dict[str, tf.Tensor]:
    """Span-corrupts one packed row (input_ids, segment_ids); usable in `enumerate().map(lambda i, r: ...)`.

    Span k (left to right) becomes id sentinel_start + k in the encoder input; the targets are
    `sentinel_start + 0, span 0..., sentinel_start + 1, span 1..., eos_id`. Returns encoder_input_ids,
    encoder_segment_ids, encoder_positions (int32 [inputs_len]), decoder_input_ids (targets shifted right after
    bos_id), decoder_target_ids, decoder_segment_ids, decoder_positions (int32 [targets_len]) and
    decoder_weights (float32, 1 on real targets incl. EOS). Segment ids are 1 on real tokens, 0 on padding.
    """
    if row["input_ids"].shape.rank != 1:
        raise UserError(f"corrupt_row needs one 1-D row, got shape {row['input_ids'].shape}")
    tokens = tf.boolean_mask(tf.cast(row["input_ids"], tf.int32), row["segment_ids"] > 0)
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])
    noise = random_spans_noise_mask(tf.size(tokens), noise_density, mean_noise_span_length, key)
    span_start = noise & ~tf.pad(noise[:-1], [[1, 0]])
    sentinels = sentinel_start + tf.cumsum(tf.cast(span_start, tf.int32)) - 1
    enc_ids, enc_seg, enc_pos = _emit(sentinels, span_start, tokens, ~noise, eos_id, inputs_len, "encoder input")
    tgt_ids, dec_seg, dec_pos = _emit(sentinels, span_start, tokens, noise, eos_id, targets_len, "targets")
    dec_inputs = tf.concat([tf.constant([bos_id], tf.int32), tgt_ids[:-1]], axis=0)
    return {
        "encoder_input_ids": enc_ids,
        "encoder_segment_ids": enc_seg,
        "encoder_positions": enc_pos,
        "decoder_input_ids": tf.where(dec_seg > 0, dec_inputs, 0),
        "decoder_target_ids": tgt_ids,
        "decoder_segment_ids": dec_seg,
        "decoder_positions": dec_pos,
        "decoder_weights": tf.cast(dec_seg, tf.float32),
    }
