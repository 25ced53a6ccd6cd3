"""The pretraining input pipelines the training loop calls: documents -> tokens -> packed rows -> batches.

Three objectives share one row stream and one batching path: "mlm" (BERT masking), "causal_lm" (next-token
targets) and "span_corruption" (T5). Contract: the row stream is a deterministic function of (data_cfg,
tokenizer, seed, split), and `*_dataset(..., start_row=n)` yields exactly the rows after the first n rows of a
fresh run, bit for bit, so a run resumes by skipping `step * global_batch` rows. Random corruption is keyed by the
global row index (see masking.py and span_corruption.py), so it does not depend on skipping or host slicing.

Importing this module hides GPUs from TensorFlow, so that tf.data never takes accelerator memory from JAX.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import ml_collections
import tensorflow as tf

from plm_jax.data.causal_lm import causal_targets
from plm_jax.data.data_config import resolve_max_predictions
from plm_jax.data.masking import mask_example, validate_mlm_config
from plm_jax.data.packing import pack_token_blocks
from plm_jax.data.shuffle import stateless_window_shuffle
from plm_jax.data.sources import document_dataset
from plm_jax.data.span_corruption import corrupt_row, raw_length_for, validate_span_config
from plm_jax.data.tokenizer import Tokenizer
from plm_jax.errors import UserError

OBJECTIVES = ("mlm", "causal_lm", "span_corruption")
DOCS_PER_BLOCK = 64  # documents tokenized and packed together; larger blocks amortize per-op overhead


def hide_gpus_from_tf() -> None:
    """Keeps TF off the GPUs; a no-op once TF has initialized its devices (then it is too late to change)."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):
        pass


hide_gpus_from_tf()


def _deterministic_options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    return options


def packed_rows(
    data_cfg: ml_collections.ConfigDict, tokenizer: Tokenizer, *, split: str, seed: int, repeat: bool
) -> tf.data.Dataset:
    """Unmasked packed rows (input_ids, segment_ids, positions) in their deterministic order."""
    docs = document_dataset(data_cfg, split)
    if split == "train":
        docs = stateless_window_shuffle(docs, window=int(data_cfg.shuffle_buffer), seed=seed, repeat=repeat)
    elif repeat:
        docs = docs.repeat()
    blocks = docs.batch(DOCS_PER_BLOCK).map(
        tokenizer.tf_tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    rows = pack_token_blocks(blocks, int(data_cfg.seq_len), cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id)
    return rows.with_options(_deterministic_options())


def _check_batch_args(*, batch_size: int, start_row: int, process_index: int, process_count: int) -> None:
    if batch_size <= 0 or batch_size % process_count:
        raise UserError(f"global batch_size={batch_size} must be a positive multiple of process_count={process_count}")
    if not 0 <= process_index < process_count:
        raise UserError(f"process_index={process_index} must be in [0, {process_count})")
    if start_row < 0:
        raise UserError(f"start_row must be >= 0, got {start_row}")


def _host_batches(
    rows: tf.data.Dataset,
    transform: Callable[[tf.Tensor, dict[str, tf.Tensor]], dict[str, tf.Tensor]],
    *,
    batch_size: int,
    start_row: int,
    process_index: int,
    process_count: int,
) -> tf.data.Dataset:
    """This host's batches of transform(global row index, row): the resume and host-slicing logic, once.

    batch_size is the global batch; host p gets the contiguous slice [p * b, (p + 1) * b) of each global batch,
    where b = batch_size // process_count.
    """
    per_host = batch_size // process_count
    # The global row index keys the corruption; skipping before transforming saves work and changes no row.
    indexed = rows.enumerate().skip(start_row)
    if process_count > 1:
        lo = process_index * per_host
        # Whole global batches first, so every host drops the same incomplete batch at the end of a finite stream.
        indexed = indexed.batch(batch_size, drop_remainder=True).map(
            lambda i, row: (i[lo : lo + per_host], {k: v[lo : lo + per_host] for k, v in row.items()})
        ).unbatch()
    transformed = indexed.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = transformed.batch(per_host, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return batches.with_options(_deterministic_options())


def mlm_dataset(
    data_cfg: ml_collections.ConfigDict,
    tokenizer: Tokenizer,
    *,
    split: str,
    batch_size: int,
    seed: int,
    start_row: int = 0,
    repeat: bool,
    process_index: int = 0,
    process_count: int = 1,
) -> tf.data.Dataset:
    """Masked MLM batches for this host: dicts of [batch_size // process_count, ...] arrays, static shapes.

    batch_size is the global batch; host p gets the contiguous slice [p * b, (p + 1) * b) of each global batch,
    where b = batch_size // process_count. Fields: input_ids, segment_ids, positions (int32 [b, seq_len]),
    masked_positions, masked_ids (int32 [b, max_predictions]), masked_weights (float32 [b, max_predictions]).
    """
    validate_mlm_config(data_cfg)
    _check_batch_args(batch_size=batch_size, start_row=start_row, process_index=process_index,
                      process_count=process_count)
    if tokenizer.vocab_size <= max(tokenizer.special_ids):
        raise UserError(f"tokenizer special ids {tokenizer.special_ids} exceed its vocab_size {tokenizer.vocab_size}")

    mask = functools.partial(
        mask_example,
        seed=seed,
        vocab_size=tokenizer.vocab_size,
        special_ids=tokenizer.special_ids,
        mask_id=tokenizer.mask_id,
        mask_rate=float(data_cfg.mask_rate),
        mask_token_frac=float(data_cfg.mask_token_frac),
        random_token_frac=float(data_cfg.random_token_frac),
        max_predictions=resolve_max_predictions(data_cfg),
    )
    rows = packed_rows(data_cfg, tokenizer, split=split, seed=seed, repeat=repeat)
    return _host_batches(rows, lambda i, row: mask(row, i), batch_size=batch_size, start_row=start_row,
                         process_index=process_index, process_count=process_count)


def causal_lm_dataset(
    data_cfg: ml_collections.ConfigDict,
    tokenizer: Tokenizer,
    *,
    split: str,
    batch_size: int,
    seed: int,
    start_row: int = 0,
    repeat: bool,
    process_index: int = 0,
    process_count: int = 1,
) -> tf.data.Dataset:
    """Causal-LM batches for this host, sliced and resumable as in mlm_dataset.

    Fields, b = batch_size // process_count: input_ids, segment_ids, positions, target_ids (int32 [b, seq_len]),
    target_weights (float32 [b, seq_len]); see causal_lm.py.
    """
    if int(data_cfg.seq_len) < 2:
        raise UserError(f"data.seq_len must be at least 2, got {data_cfg.seq_len}")
    _check_batch_args(batch_size=batch_size, start_row=start_row, process_index=process_index,
                      process_count=process_count)
    rows = packed_rows(data_cfg, tokenizer, split=split, seed=seed, repeat=repeat)
    return _host_batches(rows, lambda i, row: causal_targets(row), batch_size=batch_size, start_row=start_row,
                         process_index=process_index, process_count=process_count)


def span_corruption_dataset(
    data_cfg: ml_collections.ConfigDict,
    tokenizer: Tokenizer,
    *,
    split: str,
    batch_size: int,
    seed: int,
    start_row: int = 0,
    repeat: bool,
    process_index: int = 0,
    process_count: int = 1,
) -> tf.data.Dataset:
    """T5 span-corruption batches for this host, sliced and resumable as in mlm_dataset.

    Rows of raw_len tokens (raw_length_for(data.seq_len, ...)) corrupt to encoder inputs of exactly data.seq_len
    and targets of targets_len tokens. Sentinel k is tokenizer.vocab_size + k (the model vocabulary is
    vocab_size + data.num_sentinels); EOS is [SEP] and the decoder starts from [CLS]. Fields, b = batch_size //
    process_count: encoder_input_ids, encoder_segment_ids, encoder_positions (int32 [b, seq_len]),
    decoder_input_ids, decoder_target_ids, decoder_segment_ids, decoder_positions (int32 [b, targets_len]),
    decoder_weights (float32 [b, targets_len]).
    """
    validate_span_config(data_cfg)
    _check_batch_args(batch_size=batch_size, start_row=start_row, process_index=process_index,
                      process_count=process_count)
    inputs_len = int(data_cfg.seq_len)
    density, mean = float(data_cfg.noise_density), float(data_cfg.mean_noise_span_length)
    raw_len, targets_len = raw_length_for(inputs_len, density, mean)
    corrupt = functools.partial(
        corrupt_row,
        seed=seed,
        noise_density=density,
        mean_noise_span_length=mean,
        sentinel_start=tokenizer.vocab_size,
        eos_id=tokenizer.sep_id,
        bos_id=tokenizer.cls_id,
        inputs_len=inputs_len,
        targets_len=targets_len,
    )
    raw_cfg = data_cfg.copy_and_resolve_references()
    raw_cfg.seq_len = raw_len
    rows = packed_rows(raw_cfg, tokenizer, split=split, seed=seed, repeat=repeat)
    return _host_batches(rows, lambda i, row: corrupt(row, i), batch_size=batch_size, start_row=start_row,
                         process_index=process_index, process_count=process_count)


_BUILDERS: dict[str, Callable[..., tf.data.Dataset]] = {
    "mlm": mlm_dataset,
    "causal_lm": causal_lm_dataset,
    "span_corruption": span_corruption_dataset,
}


def pretrain_dataset(
    objective: str, data_cfg: ml_collections.ConfigDict, tokenizer: Tokenizer, **kwargs: Any
) -> tf.data.Dataset:
    """The batches of one objective in OBJECTIVES; kwargs as for mlm_dataset (split, batch_size, seed, ...)."""
    if objective not in _BUILDERS:
        raise UserError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return _BUILDERS[objective](data_cfg, tokenizer, **kwargs)
