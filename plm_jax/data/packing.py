"""Packing: documents -> fixed-length rows of `[CLS] doc [SEP] [CLS] doc [SEP] ...` with segment ids and positions.

Rows are exactly seq_len long, so no compute is spent on padding (only the very last row of a finite stream is
padded). A document that crosses a row boundary continues in the next row as a new segment whose positions
restart at 0; attention masks built from segment_ids keep documents apart.

The work is vectorized per block of documents: a tf.data `scan` carries the tokens left over from the previous
block (fewer than seq_len) and emits all full rows of each block at once.
"""

from __future__ import annotations

import tensorflow as tf

from plm_jax.errors import UserError


def _block_stream(block: tf.RaggedTensor, cls_id: int, sep_id: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """A block of documents [B, None] -> (flat `[CLS] doc [SEP]...` tokens, position in document, final=False).

    Documents without tokens are dropped: `[CLS] [SEP]` alone carries nothing to learn.
    """
    block = tf.cast(block, tf.int32)
    block = tf.gather(block, tf.where(block.row_lengths() > 0)[:, 0])
    n_docs = block.nrows()
    cls_col = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([n_docs, 1]), tf.constant(cls_id, tf.int32)))
    sep_col = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([n_docs, 1]), tf.constant(sep_id, tf.int32)))
    wrapped = tf.concat([cls_col, block, sep_col], axis=1)
    pos_in_doc = tf.cast(tf.ragged.range(wrapped.row_lengths()).flat_values, tf.int32)
    return wrapped.flat_values, pos_in_doc, tf.constant(False)


def _rows(tokens: tf.Tensor, pos_in_doc: tf.Tensor, valid: tf.Tensor, seq_len: int) -> dict[str, tf.Tensor]:
    """Cuts flat streams (length a multiple of seq_len) into rows with segment ids and in-row positions."""
    tokens = tf.reshape(tokens, [-1, seq_len])
    pos_in_doc = tf.reshape(pos_in_doc, [-1, seq_len])
    valid = tf.reshape(valid, [-1, seq_len])
    col = tf.range(seq_len, dtype=tf.int32)[tf.newaxis, :]
    starts = valid & ((pos_in_doc == 0) | (col == 0))  # a segment starts at a document start or a row start
    segment_ids = tf.cumsum(tf.cast(starts, tf.int32), axis=1)
    # The first segment may continue a document from the previous row; its positions restart at 0 here.
    positions = tf.where(segment_ids == 1, pos_in_doc - pos_in_doc[:, :1], pos_in_doc)
    zeros = tf.zeros_like(tokens)
    return {
        "input_ids": tf.where(valid, tokens, zeros),
        "segment_ids": tf.where(valid, segment_ids, zeros),
        "positions": tf.where(valid, positions, zeros),
    }


def pack_token_blocks(block_ds: tf.data.Dataset, seq_len: int, *, cls_id: int, sep_id: int) -> tf.data.Dataset:
    """Packs a dataset of document blocks (int RaggedTensor [B, None], one row per document) into rows.

    Output elements: `input_ids`, `segment_ids`, `positions`, each int32 [seq_len]; see the module docstring.
    """
    if seq_len < 2:
        raise UserError(f"seq_len must be at least 2, got {seq_len}")
    streams = block_ds.map(lambda block: _block_stream(block, cls_id, sep_id))
    # A final sentinel flushes the leftover tokens as one padded row when a finite stream ends.
    sentinel = tf.data.Dataset.from_tensors((tf.zeros([0], tf.int32), tf.zeros([0], tf.int32), tf.constant(True)))
    streams = streams.concatenate(sentinel)

    def step(carry, element):
        carry_tokens, carry_pos = carry
        new_tokens, new_pos, final = element
        tokens = tf.concat([carry_tokens, new_tokens], axis=0)
        pos_in_doc = tf.concat([carry_pos, new_pos], axis=0)
        total = tf.size(tokens)
        full = (total // seq_len) * seq_len
        pad = tf.where(final & (total > full), full + seq_len - total, 0)
        emit = tf.where(final, total + pad, full)
        tokens_out = tf.concat([tokens, tf.zeros([pad], tf.int32)], axis=0)[:emit]
        pos_out = tf.concat([pos_in_doc, tf.zeros([pad], tf.int32)], axis=0)[:emit]
        valid = tf.range(emit) < total
        keep_from = tf.where(final, total, full)
        return (tokens[keep_from:], pos_in_doc[keep_from:]), _rows(tokens_out, pos_out, valid, seq_len)

    initial = (tf.zeros([0], tf.int32), tf.zeros([0], tf.int32))
    return streams.scan(initial, step).unbatch()


def pack_documents(
    token_ds: tf.data.Dataset, seq_len: int, *, cls_id: int, sep_id: int, docs_per_block: int = 64
) -> tf.data.Dataset:
    """Packs a dataset of 1-D int token tensors (one per document) into rows of exactly seq_len tokens.

    Each document becomes `[CLS] tokens [SEP]`; documents are concatenated and cut into rows. Output elements:
    `input_ids`, `segment_ids` (1, 2, ... per document piece in the row, 0 = padding) and `positions`
    (0-based within the segment in this row, 0 on padding), each int32 [seq_len]. Only the final row of a
    finite stream is padded (with 0). Empty documents are dropped.
    """
    return pack_token_blocks(token_ds.ragged_batch(docs_per_block), seq_len, cls_id=cls_id, sep_id=sep_id)
