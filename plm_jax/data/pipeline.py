"""The MLM input pipeline the training loop calls: documents -> tokens -> packed rows -> masked batches.

Contract: the row stream is a deterministic function of (data_cfg, tokenizer, seed, split), and
`mlm_dataset(..., start_row=n)` yields exactly the rows after the first n rows of a fresh run, bit for bit, so a
run resumes by skipping `step * global_batch` rows. Masks are keyed by the global row index (see masking.py).

Importing this module hides GPUs from TensorFlow, so that tf.data never takes accelerator memory from JAX.
"""

from __future__ import annotations

import functools

import ml_collections
import tensorflow as tf

from plm_jax.data.masking import mask_example, resolve_max_predictions, validate_mlm_config
from plm_jax.data.packing import pack_token_blocks
from plm_jax.data.shuffle import stateless_window_shuffle
from plm_jax.data.sources import document_dataset
from plm_jax.data.tokenizer import Tokenizer

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
    if batch_size <= 0 or batch_size % process_count:
        raise ValueError(f"global batch_size={batch_size} must be a positive multiple of process_count={process_count}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, {process_count})")
    if start_row < 0:
        raise ValueError(f"start_row must be >= 0, got {start_row}")
    if tokenizer.vocab_size <= max(tokenizer.special_ids):
        raise ValueError(f"tokenizer special ids {tokenizer.special_ids} exceed its vocab_size {tokenizer.vocab_size}")

    per_host = batch_size // process_count
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
    # The global row index keys the mask; skipping before masking saves work and changes no mask.
    indexed = rows.enumerate().skip(start_row)
    if process_count > 1:
        lo = process_index * per_host
        # Whole global batches first, so every host drops the same incomplete batch at the end of a finite stream.
        indexed = indexed.batch(batch_size, drop_remainder=True).map(
            lambda i, row: (i[lo : lo + per_host], {k: v[lo : lo + per_host] for k, v in row.items()})
        ).unbatch()
    masked = indexed.map(lambda i, row: mask(row, i), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = masked.batch(per_host, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return batches.with_options(_deterministic_options())
