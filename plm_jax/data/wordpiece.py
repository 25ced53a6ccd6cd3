"""A Hugging Face BERT WordPiece vocabulary inside tf.data, beside our SentencePiece models (data/tokenizer.py).

A student that learns from a Hugging Face teacher (all-MiniLM-L6-v2, BERT) must read the teacher's tokens, so
pretraining on the offline corpus needs the teacher's vocabulary in the input pipeline. tf_text's BertTokenizer
runs BERT's basic tokenization (lower case and accent stripping for uncased vocabularies, punctuation and CJK
splits) and then WordPiece in the graph; tests/test_data_wordpiece.py checks it against the `tokenizers` library
that fine-tuning uses (data/text_tokenizer.py).

`data.tokenizer` names a `vocab.txt`, a `tokenizer.json` (its vocabulary and lower-case setting are read), or a
directory holding one.
"""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING

from plm_jax.errors import UserError

if TYPE_CHECKING:
    import tensorflow as tf

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_RESERVED = re.compile(r"\[unused\d+\]")  # BERT's reserved slots: never in text, never a random replacement


def is_wordpiece_path(path: str) -> bool:
    """A vocab.txt, a tokenizer.json, or a directory holding one (not a SentencePiece model)."""
    if os.path.isdir(path):
        return any(os.path.isfile(os.path.join(path, n)) for n in ("vocab.txt", "tokenizer.json"))
    return os.path.basename(path) in ("vocab.txt", "tokenizer.json")


class WordPieceTokenizer:
    """The pipeline's tokenizer interface (ids of the special tokens, `tf_tokenize`) over a BERT vocabulary."""

    kind = "wordpiece"

    def __init__(self, path: str):
        self.path, self.vocab, self.lower_case = _read_vocabulary(path)
        index = {token: i for i, token in enumerate(self.vocab)}
        missing = [t for t in SPECIAL_TOKENS if t not in index]
        if missing:
            raise UserError(f"WordPiece vocabulary {self.path} lacks the BERT special tokens {missing}")
        self.vocab_size = len(self.vocab)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (index[t] for t in SPECIAL_TOKENS)
        self.special_ids: tuple[int, ...] = tuple(sorted(
            i for i, token in enumerate(self.vocab) if token in SPECIAL_TOKENS or _RESERVED.fullmatch(token)))

    def __repr__(self) -> str:
        return f"WordPieceTokenizer({self.path!r}, vocab_size={self.vocab_size})"

    def tf_tokenize(self, texts: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
        """tf.string in the TF graph: scalar -> 1-D int32 tensor, [B] -> RaggedTensor [B, None]."""
        import tensorflow as tf
        import tensorflow_text as tf_text

        # Built per trace, as the SentencePiece tokenizer is: the lookup table lives with the dataset's function.
        table = tf.lookup.StaticVocabularyTable(
            tf.lookup.KeyValueTensorInitializer(list(self.vocab), tf.range(self.vocab_size, dtype=tf.int64)),
            num_oov_buckets=1)
        # Hugging Face's BertNormalizer, step by step (tf_text's own lower_case folds NFKC, "…" -> "...", and
        # disagrees with the teacher's tokens): every whitespace a space, control characters dropped; then for
        # uncased vocabularies NFD, accents (Mn) dropped, lower case.
        texts = tf.strings.regex_replace(tf.strings.regex_replace(texts, r"[\t\n\r\p{Zs}]", " "),
                                         r"[\x{0}\x{fffd}\p{Cc}\p{Cf}]", "")
        if self.lower_case:
            texts = tf.strings.lower(tf.strings.regex_replace(tf_text.normalize_utf8(texts, "NFD"), r"\p{Mn}", ""),
                                     encoding="utf-8")
        tokenizer = tf_text.BertTokenizer(table, token_out_type=tf.int64, unknown_token="[UNK]")
        pieces = tokenizer.tokenize(texts)  # [B, words, pieces]; a scalar text gets a batch of one
        return tf.cast(pieces.flat_values if texts.shape.rank == 0 else pieces.merge_dims(1, -1), tf.int32)


def _read_vocabulary(path: str) -> tuple[str, list[str], bool]:
    """(file, tokens in id order, lower case) from a tokenizer.json (its normalizer's setting) or a vocab.txt
    (uncased, as fine-tuning reads one); a directory's tokenizer.json wins over its vocab.txt."""
    if os.path.isdir(path):
        for name in ("tokenizer.json", "vocab.txt"):
            if os.path.isfile(os.path.join(path, name)):
                return _read_vocabulary(os.path.join(path, name))
        raise FileNotFoundError(f"no vocab.txt or tokenizer.json in {path}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer not found: {path}")
    if os.path.basename(path) == "tokenizer.json":
        try:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
            vocab_map = spec["model"]["vocab"]
            if spec["model"].get("type") != "WordPiece":
                raise UserError(f"{path} is a {spec['model'].get('type')} tokenizer; the pipeline reads WordPiece")
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}: not a Hugging Face tokenizer.json with a WordPiece vocabulary") from None
        normalizer = spec.get("normalizer") or {}
        return path, sorted(vocab_map, key=vocab_map.get), bool(normalizer.get("lowercase", True))
    try:
        with open(path, encoding="utf-8") as f:
            vocab = [line.rstrip("\n").rstrip("\r") for line in f]
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    while vocab and not vocab[-1]:
        vocab.pop()
    return path, vocab, True
