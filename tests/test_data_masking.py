"""MLM masking: exact selection counts, 80/10/10 statistics, special tokens untouched, pure in (seed, index)."""

import functools

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from plm_jax.data.data_config import resolve_max_predictions
from plm_jax.data.masking import mask_example, validate_mlm_config

VOCAB, SEQ_LEN, PAD, CLS, SEP, MASK = 1000, 128, 0, 2, 3, 4
SPECIAL = (PAD, CLS, SEP, MASK)
MAX_PRED = 20  # ceil(0.15 * 128)


def synthetic_rows(n_rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Packed-looking rows: documents `[CLS] tokens [SEP]` of random length, some rows padded at the end."""
    rng = np.random.default_rng(seed)
    ids = np.zeros([n_rows, SEQ_LEN], np.int32)
    seg = np.zeros([n_rows, SEQ_LEN], np.int32)
    for r in range(n_rows):
        length = SEQ_LEN if r % 3 else int(rng.integers(0, SEQ_LEN + 1))
        col, s = 0, 0
        while col < length:
            s += 1
            doc = [CLS, *rng.integers(1, VOCAB, size=int(rng.integers(1, 60))).tolist(), SEP]  # 1 = [UNK] allowed
            doc = doc[: length - col]
            ids[r, col : col + len(doc)] = doc
            seg[r, col : col + len(doc)] = s
            col += len(doc)
    # Stray special ids inside documents must never be candidates either.
    stray = (rng.random(ids.shape) < 0.01) & (seg > 0)
    ids[stray] = MASK
    return {"input_ids": ids, "segment_ids": seg, "positions": np.zeros_like(ids)}


def run_masking(rows, *, seed=0, mask_token_frac=0.8, random_token_frac=0.1, vocab=VOCAB, max_pred=MAX_PRED):
    mask = functools.partial(mask_example, seed=seed, vocab_size=vocab, special_ids=SPECIAL, mask_id=MASK,
                             mask_rate=0.15, mask_token_frac=mask_token_frac, random_token_frac=random_token_frac,
                             max_predictions=max_pred)
    ds = tf.data.Dataset.from_tensor_slices(rows).enumerate().map(lambda i, ex: mask(ex, i))
    out = next(iter(ds.batch(len(rows["input_ids"]))))
    return {k: v.numpy() for k, v in out.items()}


def expected_k(ids: np.ndarray, seg: np.ndarray, max_pred: int = MAX_PRED) -> np.ndarray:
    n = ((seg > 0) & ~np.isin(ids, SPECIAL)).sum(axis=1)
    return np.where(n > 0, np.minimum(max_pred, np.maximum(1, np.round(0.15 * n))), 0).astype(int)


@pytest.fixture(scope="module")
def masked():
    rows = synthetic_rows(1500)  # 192k tokens
    return rows, run_masking(rows)


def test_exact_selection_count_and_rate(masked):
    rows, out = masked
    k = expected_k(rows["input_ids"], rows["segment_ids"])
    np.testing.assert_array_equal(out["masked_weights"].sum(axis=1), k)
    n_candidates = ((rows["segment_ids"] > 0) & ~np.isin(rows["input_ids"], SPECIAL)).sum()
    assert k.sum() / n_candidates == pytest.approx(0.15, abs=0.005)


def test_selected_positions_are_sorted_candidates_and_padding_is_zero(masked):
    rows, out = masked
    for r in range(len(out["masked_weights"])):
        real = out["masked_weights"][r] > 0
        pos = out["masked_positions"][r][real]
        assert real[: real.sum()].all(), "real slots come first"
        assert (np.diff(pos) > 0).all(), "positions strictly ascending"
        assert (rows["segment_ids"][r][pos] > 0).all(), "padding selected"
        assert not np.isin(rows["input_ids"][r][pos], SPECIAL).any(), "special token selected"
        np.testing.assert_array_equal(out["masked_ids"][r][real], rows["input_ids"][r][pos])
        assert not out["masked_positions"][r][~real].any() and not out["masked_ids"][r][~real].any()
        unselected = np.ones(SEQ_LEN, bool)
        unselected[pos] = False
        np.testing.assert_array_equal(out["input_ids"][r][unselected], rows["input_ids"][r][unselected])
    np.testing.assert_array_equal(out["segment_ids"], rows["segment_ids"])
    assert out["masked_weights"].dtype == np.float32 and out["masked_positions"].dtype == np.int32


def test_80_10_10_split_of_selected_tokens(masked):
    rows, out = masked
    real = out["masked_weights"] > 0
    new = np.take_along_axis(out["input_ids"], out["masked_positions"], axis=1)[real]
    original = out["masked_ids"][real]
    n = real.sum()
    assert n > 20_000
    as_mask = (new == MASK).mean()
    unchanged = (new == original).mean()
    random = ((new != MASK) & (new != original)).mean()
    assert as_mask == pytest.approx(0.8, abs=0.012)
    assert unchanged == pytest.approx(0.1, abs=0.01)
    assert random == pytest.approx(0.1, abs=0.01)
    assert not np.isin(new[(new != MASK)], SPECIAL).any(), "a random replacement drew a special id"


def test_random_replacements_are_uniform_over_non_special_vocabulary():
    vocab = 40
    rows = synthetic_rows(300, seed=1)
    rows["input_ids"] = np.where(np.isin(rows["input_ids"], SPECIAL), rows["input_ids"], rows["input_ids"] % vocab)
    rows["input_ids"] = np.where(rows["input_ids"] == MASK, 5, rows["input_ids"])
    out = run_masking(rows, mask_token_frac=0.0, random_token_frac=1.0, vocab=vocab)
    drawn = np.take_along_axis(out["input_ids"], out["masked_positions"], axis=1)[out["masked_weights"] > 0]
    counts = np.bincount(drawn, minlength=vocab)
    assert counts[list(SPECIAL)].sum() == 0
    allowed = counts[[i for i in range(vocab) if i not in SPECIAL]]
    expected = drawn.size / allowed.size
    assert allowed.min() > 0.7 * expected and allowed.max() < 1.3 * expected, counts


def test_selection_is_uniform_over_positions():
    rows = {"input_ids": np.full([2000, SEQ_LEN], 7, np.int32), "segment_ids": np.ones([2000, SEQ_LEN], np.int32),
            "positions": np.zeros([2000, SEQ_LEN], np.int32)}
    out = run_masking(rows)
    counts = np.bincount(out["masked_positions"][out["masked_weights"] > 0], minlength=SEQ_LEN)
    expected = 2000 * 19 / SEQ_LEN  # round(0.15 * 128) = 19 per row
    assert counts.min() > 0.7 * expected and counts.max() < 1.3 * expected, counts


def test_pure_function_of_seed_and_index():
    rows = synthetic_rows(4, seed=2)
    row = {k: tf.constant(v[1]) for k, v in rows.items()}
    kwargs = dict(vocab_size=VOCAB, special_ids=SPECIAL, mask_id=MASK, mask_rate=0.15, mask_token_frac=0.8,
                  random_token_frac=0.1, max_predictions=MAX_PRED)
    a = mask_example(row, tf.constant(5, tf.int64), seed=3, **kwargs)
    b = mask_example(row, tf.constant(5, tf.int64), seed=3, **kwargs)
    other_index = mask_example(row, tf.constant(6, tf.int64), seed=3, **kwargs)
    other_seed = mask_example(row, tf.constant(5, tf.int64), seed=4, **kwargs)
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    assert not np.array_equal(a["masked_positions"].numpy(), other_index["masked_positions"].numpy())
    assert not np.array_equal(a["masked_positions"].numpy(), other_seed["masked_positions"].numpy())
    # Inside tf.data, after enumerate() and skip(), row 1 keyed by index 1 gets the same mask as eagerly.
    mask = functools.partial(mask_example, seed=3, **kwargs)
    ds = tf.data.Dataset.from_tensor_slices(rows).enumerate().skip(1).map(lambda i, ex: mask(ex, i))
    eager = mask_example(row, tf.constant(1, tf.int64), seed=3, **kwargs)
    first = next(iter(ds))
    for k in eager:
        np.testing.assert_array_equal(first[k].numpy(), eager[k].numpy())


def test_row_without_candidates_is_left_alone():
    ids = np.zeros([SEQ_LEN], np.int32)
    ids[:2] = [CLS, SEP]
    seg = np.zeros([SEQ_LEN], np.int32)
    seg[:2] = 1
    row = {"input_ids": tf.constant(ids), "segment_ids": tf.constant(seg), "positions": tf.constant(seg * 0)}
    out = mask_example(row, tf.constant(0, tf.int64), seed=0, vocab_size=VOCAB, special_ids=SPECIAL, mask_id=MASK,
                       mask_rate=0.15, mask_token_frac=0.8, random_token_frac=0.1, max_predictions=MAX_PRED)
    np.testing.assert_array_equal(out["input_ids"].numpy(), ids)
    assert out["masked_weights"].numpy().sum() == 0
    # Padding is segment 0, whatever id it holds.
    row = {"input_ids": tf.fill([SEQ_LEN], 7), "segment_ids": tf.zeros([SEQ_LEN], tf.int32),
           "positions": tf.zeros([SEQ_LEN], tf.int32)}
    out = mask_example(row, tf.constant(0, tf.int64), seed=0, vocab_size=VOCAB, special_ids=SPECIAL, mask_id=MASK,
                       mask_rate=0.15, mask_token_frac=0.8, random_token_frac=0.1, max_predictions=MAX_PRED)
    assert out["masked_weights"].numpy().sum() == 0 and (out["input_ids"].numpy() == 7).all()


def cfg(**overrides) -> ml_collections.ConfigDict:
    base = dict(seq_len=128, mask_rate=0.15, mask_token_frac=0.8, random_token_frac=0.1, max_predictions=0)
    return ml_collections.ConfigDict({**base, **overrides})


def test_resolve_max_predictions():
    assert resolve_max_predictions(cfg()) == 20
    assert resolve_max_predictions(cfg(seq_len=100)) == 15  # not 16 from float noise in 0.15 * 100
    assert resolve_max_predictions(cfg(max_predictions=32)) == 32


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(mask_rate=1.5), "mask_rate"),
        (dict(mask_rate=0.0), "mask_rate"),
        (dict(mask_token_frac=-0.1), "mask_token_frac"),
        (dict(mask_token_frac=0.8, random_token_frac=0.3), "must be <= 1"),
        (dict(max_predictions=10), "max_predictions=10"),
        (dict(max_predictions=200), "max_predictions=200"),
    ],
)
def test_validate_mlm_config_rejects(overrides, message):
    with pytest.raises(ValueError, match=message):
        validate_mlm_config(cfg(**overrides))
    validate_mlm_config(cfg())
