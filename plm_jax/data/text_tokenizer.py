"""One tokenizer interface for fine-tuning: our SentencePiece models and Hugging Face WordPiece vocabularies.

Fine-tuning sets are small, so they are tokenized in Python once (not in tf.data), with character offsets into
the original text: extractive QA maps predicted token spans back to characters through them.
"""

from __future__ import annotations

import os
from typing import Protocol

from plm_jax.data.tokenizer import load_tokenizer
from plm_jax.errors import UserError


class TextTokenizer(Protocol):
    kind: str  # "sentencepiece" | "wordpiece"
    path: str
    vocab_size: int
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int

    def encode(self, text: str) -> list[int]: ...

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and, per token, the [start, end) character span of `text` it covers (no leading space)."""
        ...

    def decode(self, ids: list[int]) -> str: ...


class SentencePieceTextTokenizer:
    """plm_jax's SentencePiece model ([PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4)."""

    kind = "sentencepiece"

    def __init__(self, path: str):
        self.path = path
        self._tok = load_tokenizer(path)
        self._sp = self._tok._sp
        self.vocab_size = self._tok.vocab_size
        self.pad_id, self.unk_id, self.cls_id = self._tok.pad_id, self._tok.unk_id, self._tok.cls_id
        self.sep_id, self.mask_id = self._tok.sep_id, self._tok.mask_id

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        # SentencePiece reports UTF-8 byte offsets into the original text; a piece's span includes the
        # whitespace it absorbed ("▁word" covers " word"), which is trimmed so answers start at the word.
        byte_to_char = [0] * (len(text.encode("utf-8")) + 1)
        pos = 0
        for i, ch in enumerate(text):
            n = len(ch.encode("utf-8"))
            for b in range(n):
                byte_to_char[pos + b] = i
            pos += n
        byte_to_char[pos] = len(text)
        ids, offsets = [], []
        for piece in self._sp.encode(text, return_type="proto").pieces:
            start, end = byte_to_char[piece.begin], byte_to_char[piece.end]
            while start < end and text[start].isspace():
                start += 1
            ids.append(piece.id)
            offsets.append((start, end))
        return ids, offsets

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


class WordPieceTextTokenizer:
    """A Hugging Face BERT vocabulary (tokenizer.json, or vocab.txt), run by the `tokenizers` library."""

    kind = "wordpiece"

    def __init__(self, path: str, *, lowercase: bool | None = None):
        from tokenizers import Tokenizer
        from tokenizers.implementations import BertWordPieceTokenizer

        self.path = path
        if os.path.basename(path) == "tokenizer.json":
            self._tok = Tokenizer.from_file(path)
        else:  # vocab.txt: BERT's basic + WordPiece tokenization; lowercase unless told (uncased models)
            self._tok = BertWordPieceTokenizer(path, lowercase=True if lowercase is None else lowercase)
        self._tok.no_truncation()
        self._tok.no_padding()
        vocab = self._tok.get_vocab()
        missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in vocab]
        if missing:
            raise UserError(f"WordPiece vocabulary {path} lacks the BERT special tokens {missing}")
        self.vocab_size = self._tok.get_vocab_size()
        self.pad_id, self.unk_id = vocab["[PAD]"], vocab["[UNK]"]
        self.cls_id, self.sep_id = vocab["[CLS]"], vocab["[SEP]"]
        self.mask_id = vocab.get("[MASK]", self.unk_id)

    def encode(self, text: str) -> list[int]:
        return self.encode_with_offsets(text)[0]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self._tok.encode(text, add_special_tokens=False)
        return list(enc.ids), [tuple(o) for o in enc.offsets]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode([int(i) for i in ids])


def load_text_tokenizer(path: str) -> TextTokenizer:
    """A SentencePiece `.model` file, a Hugging Face `tokenizer.json` / `vocab.txt`, or a directory holding one."""
    if os.path.isdir(path):
        for name in ("tokenizer.json", "vocab.txt", "tokenizer.model"):
            if os.path.isfile(os.path.join(path, name)):
                return load_text_tokenizer(os.path.join(path, name))
        raise FileNotFoundError(f"no tokenizer.json, vocab.txt or tokenizer.model in {path}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer not found: {path}")
    if os.path.basename(path) in ("tokenizer.json", "vocab.txt"):
        return WordPieceTextTokenizer(path)
    return SentencePieceTextTokenizer(path)
