"""Tokenizer: special ids, control symbols never produced from text, TF == Python, safe writes, clear load errors."""

import io
import os
import random

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf

from plm_jax.data.tokenizer import SPECIAL_PIECES, Tokenizer, load_tokenizer, train_tokenizer


def synthetic_corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyzé") for _ in range(rng.randint(2, 9))) for _ in range(400)]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 25))).capitalize() + "." for _ in range(n)]
    lines[::50] = [line + " [MASK] [CLS] [SEP] [PAD] [UNK]" for line in lines[::50]]
    return lines


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    return train_tokenizer(synthetic_corpus(3000), 320, path), path


def test_special_ids(trained):
    tok, _ = trained
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.vocab_size == 320
    assert set(tok.special_ids) == {0, 2, 3, 4}
    sp = spm.SentencePieceProcessor(model_proto=tok.model_bytes)
    assert [sp.IdToPiece(i) for i in range(5)] == list(SPECIAL_PIECES)


def test_text_never_encodes_to_control_symbols(trained):
    tok, _ = trained
    texts = ["[MASK]", "the [CLS] and [SEP] of [MASK] [PAD]", "[[MASK]]", "x[MASK]y"] + synthetic_corpus(200, seed=1)
    for text in texts:
        ids = tok.encode(text)
        assert ids and not set(ids) & {0, 2, 3, 4}, (text, ids)
    tf_ids = tok.tf_tokenize(tf.constant(texts))
    assert not np.isin(tf_ids.flat_values.numpy(), [0, 2, 3, 4]).any()


def test_tf_tokenize_matches_python(trained):
    tok, _ = trained
    texts = synthetic_corpus(50, seed=2) + ["", "Zürich ünïcode 東京", "  spaced   out  "]
    batch = tok.tf_tokenize(tf.constant(texts))
    assert batch.dtype == tf.int32
    assert batch.to_list() == [tok.encode(t) for t in texts]
    scalar = tok.tf_tokenize(tf.constant(texts[0]))
    assert scalar.shape.rank == 1 and scalar.numpy().tolist() == tok.encode(texts[0])
    mapped = tf.data.Dataset.from_tensor_slices(texts[:3]).map(tok.tf_tokenize, num_parallel_calls=2)
    assert [x.tolist() for x in mapped.as_numpy_iterator()] == [tok.encode(t) for t in texts[:3]]


def test_decode_round_trip(trained):
    tok, _ = trained
    text = synthetic_corpus(2, seed=3)[1]  # line 0 carries rare bracket characters
    assert tok.decode(tok.encode(text)) == text


def test_training_is_deterministic_and_handles_long_lines(tmp_path, trained):
    tok, _ = trained
    again = train_tokenizer(synthetic_corpus(3000), 320, tmp_path / "again.model")
    assert again.model_bytes == tok.model_bytes
    long_line = ["word " * 30_000 + "x" * 70_000] + synthetic_corpus(500)
    long_tok = train_tokenizer(long_line, 200, tmp_path / "long.model")
    assert long_tok.vocab_size == 200
    assert sorted(os.listdir(tmp_path)) == ["again.model", "long.model"], "temporary files left behind"


def test_refuses_to_overwrite(trained, tmp_path):
    tok, _ = trained
    path = tmp_path / "m.model"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match=str(path)):
        train_tokenizer(synthetic_corpus(500), 200, path)
    assert path.read_bytes() == b"keep me"
    replaced = train_tokenizer(synthetic_corpus(500), 200, path, overwrite=True)
    assert load_tokenizer(path).model_bytes == replaced.model_bytes


def test_load_round_trip(trained):
    tok, path = trained
    loaded = load_tokenizer(path)
    assert loaded.model_bytes == tok.model_bytes and loaded.special_ids == tok.special_ids


def test_load_errors_are_clear(tmp_path):
    missing = tmp_path / "nope.model"
    with pytest.raises(FileNotFoundError, match="nope.model"):
        load_tokenizer(missing)
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"this is not a protobuf \x00\xff")
    with pytest.raises(ValueError, match="garbage.model"):
        load_tokenizer(garbage)
    # A real SentencePiece model with the default layout (<unk>, <s>, </s>) is rejected, naming the file.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(synthetic_corpus(500)), model_writer=model,
                                   vocab_size=100, minloglevel=2)
    other = tmp_path / "other.model"
    other.write_bytes(model.getvalue())
    with pytest.raises(ValueError, match="other.model.*expected"):
        load_tokenizer(other)
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["a b c"], 5, tmp_path / "tiny.model")
    with pytest.raises(ValueError, match="no text"):
        train_tokenizer(["", "  "], 100, tmp_path / "empty.model")
    assert not (tmp_path / "empty.model").exists()


def test_tokenizer_from_bytes_checks_layout():
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        Tokenizer(b"\x01\x02")


RARE = "„Zitat“ #1 \\ {a} & $5 | ~ ^ é ’ « » ☃"  # characters the training text below never holds


def _german_like(n: int) -> list[str]:
    rng = random.Random(3)
    words = ["".join(rng.choice("abcdefghiklmnoprstuwzäöüß") for _ in range(rng.randint(2, 10))) for _ in range(3000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))).capitalize() + "." for _ in range(n)]


def test_byte_fallback_spells_unseen_characters(tmp_path, caplog):
    """From MIN_BYTE_FALLBACK_VOCAB pieces up, characters the vocabulary lacks become bytes, never [UNK]: the
    text round-trips exactly, in Python and in tf.data alike (issue 21: German „ and `# \\ { } & $` were [UNK])."""
    with caplog.at_level("INFO"):
        tok = train_tokenizer(_german_like(6000), 1100, tmp_path / "bytes.model")
    assert tok.byte_fallback
    assert any("0 of the training text's" in r.getMessage() for r in caplog.records)
    ids = tok.encode(RARE)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == RARE
    assert tok.tf_tokenize(tf.constant([RARE])).to_list() == [ids]
    off = train_tokenizer(_german_like(6000), 1100, tmp_path / "off.model", byte_fallback=False)
    assert not off.byte_fallback and off.unk_id in off.encode(RARE)


def test_small_vocabulary_goes_without_byte_fallback_and_unknowns_warn(tmp_path, caplog):
    text = [line + " ☃" * (i % 4 == 0) for i, line in enumerate(synthetic_corpus(400))]  # 100 rare ☃
    with caplog.at_level("INFO"):
        tok = train_tokenizer(text, 200, tmp_path / "small.model", character_coverage=0.98)
    assert not tok.byte_fallback
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert any(level == "WARNING" and "without byte fallback" in m for level, m in messages)
    unknown, total = tok.unknown_share(text)
    assert unknown >= 100 and total > unknown
    share_lines = [(level, m) for level, m in messages if "are [UNK]" in m]
    assert share_lines[0][0] == "WARNING" and f"{unknown} of the training text's {total} pieces" in share_lines[0][1]
    with pytest.raises(ValueError, match="character_coverage"):
        train_tokenizer(text, 200, tmp_path / "bad.model", character_coverage=1.5)
