"""Packing against a straightforward Python reference: rows, segment ids, positions, padding, the token stream."""

import numpy as np
import pytest
import tensorflow as tf

from plm_jax.data.packing import pack_documents, pack_token_blocks

CLS, SEP = 2, 3


def reference_pack(docs: list[list[int]], seq_len: int) -> list[tuple[list[int], list[int], list[int]]]:
    """Row by row, token by token: what pack_documents must produce."""
    stream: list[tuple[int, bool]] = []  # (token, starts a document)
    for doc in docs:
        if doc:
            wrapped = [CLS, *doc, SEP]
            stream += [(t, j == 0) for j, t in enumerate(wrapped)]
    rows = []
    for start in range(0, len(stream), seq_len):
        chunk = stream[start : start + seq_len]
        ids, seg, pos = [], [], []
        segment, segment_start = 0, 0
        for col, (token, doc_start) in enumerate(chunk):
            if col == 0 or doc_start:
                segment, segment_start = segment + 1, col
            ids.append(token)
            seg.append(segment)
            pos.append(col - segment_start)
        pad = seq_len - len(chunk)
        rows.append((ids + [0] * pad, seg + [0] * pad, pos + [0] * pad))
    return rows


def random_docs(seed: int, n_docs: int, seq_len: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 2 * seq_len, size=n_docs).tolist()
    lengths[3] = 0  # empty documents are dropped
    lengths[5] = 5 * seq_len + 7  # one document spans several rows
    return [rng.integers(5, 500, size=n).tolist() for n in lengths]


def docs_dataset(docs: list[list[int]]) -> tf.data.Dataset:
    return tf.data.Dataset.from_generator(lambda: (np.array(d, np.int32) for d in docs),
                                          output_signature=tf.TensorSpec([None], tf.int32))


@pytest.mark.parametrize("seq_len, docs_per_block", [(16, 1), (16, 3), (32, 64), (7, 5)])
def test_matches_reference(seq_len, docs_per_block):
    docs = random_docs(seq_len + docs_per_block, 40, seq_len)
    ds = pack_documents(docs_dataset(docs), seq_len, cls_id=CLS, sep_id=SEP, docs_per_block=docs_per_block)
    assert ds.element_spec["input_ids"].shape == (seq_len,)
    rows = list(ds.as_numpy_iterator())
    expected = reference_pack(docs, seq_len)
    assert len(rows) == len(expected)
    for got, (ids, seg, pos) in zip(rows, expected, strict=True):
        np.testing.assert_array_equal(got["input_ids"], ids)
        np.testing.assert_array_equal(got["segment_ids"], seg)
        np.testing.assert_array_equal(got["positions"], pos)
        assert all(v.dtype == np.int32 and v.shape == (seq_len,) for v in got.values())


def test_token_stream_is_preserved_and_only_the_last_row_is_padded():
    seq_len = 24
    docs = random_docs(7, 60, seq_len)
    rows = list(pack_documents(docs_dataset(docs), seq_len, cls_id=CLS, sep_id=SEP, docs_per_block=8)
                .as_numpy_iterator())
    stream = [t for d in docs if d for t in (CLS, *d, SEP)]
    got = np.concatenate([r["input_ids"][r["segment_ids"] > 0] for r in rows])
    np.testing.assert_array_equal(got, stream)
    assert all((r["segment_ids"] > 0).all() for r in rows[:-1])
    assert (rows[-1]["segment_ids"] == 0).any() == (len(stream) % seq_len != 0)


def test_exact_multiple_has_no_padded_row():
    docs = [[7] * 6, [8] * 8]  # 8 + 10 = 18 tokens = 2 rows of 9
    rows = list(pack_documents(docs_dataset(docs), 9, cls_id=CLS, sep_id=SEP).as_numpy_iterator())
    assert len(rows) == 2
    np.testing.assert_array_equal(rows[1]["input_ids"], [8, 8, 8, 8, 8, 8, 8, 8, SEP])
    np.testing.assert_array_equal(rows[1]["segment_ids"], [1] * 9)
    np.testing.assert_array_equal(rows[1]["positions"], list(range(9)))


def test_blocks_from_ragged_batches_and_infinite_streams():
    docs = random_docs(3, 20, 16)
    blocks = tf.data.Dataset.from_tensors(tf.ragged.constant(docs, dtype=tf.int32)).repeat()
    rows = list(pack_token_blocks(blocks, 16, cls_id=CLS, sep_id=SEP).take(200).as_numpy_iterator())
    expected = reference_pack(docs * 20, 16)
    for got, (ids, seg, pos) in zip(rows, expected[:200], strict=True):
        np.testing.assert_array_equal(got["input_ids"], ids)
        np.testing.assert_array_equal(got["segment_ids"], seg)
        np.testing.assert_array_equal(got["positions"], pos)


def test_empty_input_gives_no_rows():
    assert list(pack_documents(docs_dataset([[], []]), 8, cls_id=CLS, sep_id=SEP).as_numpy_iterator()) == []
