"""SentencePiece tokenizer: one model, used in the tf.data graph (tf_text) and in Python (sentencepiece).

The special pieces sit at fixed ids so that packing and masking can rely on them, and [CLS]/[SEP]/[MASK] are
SentencePiece *control* symbols: plain text (even text containing the string "[MASK]") never encodes to them.
"""

from __future__ import annotations

import functools
import io
import logging
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import sentencepiece as spm

from plm_jax.errors import UserError
from plm_jax.files import write_atomic

if TYPE_CHECKING:
    import tensorflow as tf

SPECIAL_PIECES = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_PIECES))

# SentencePiece skips (does not crash on) sentences longer than max_sentence_length bytes. We cut long texts
# into chunks of at most _CHUNK_CHARS characters; a UTF-8 character is at most 4 bytes, so the limit holds.
_CHUNK_CHARS = 8192
_MAX_SENTENCE_BYTES = 4 * _CHUNK_CHARS

DEFAULT_CHARACTER_COVERAGE = 0.9995
# Byte fallback spells a character outside the vocabulary as its UTF-8 bytes (256 byte pieces) instead of [UNK].
# Below this many pieces the byte pieces would take over a quarter of the vocabulary, so tiny models go without.
MIN_BYTE_FALLBACK_VOCAB = 1024
UNKNOWN_SHARE_WARNING = 0.001  # of the training text's pieces

log = logging.getLogger(__name__)


class Tokenizer:
    """A SentencePiece model with the project's special ids, usable both in Python and inside tf.data."""

    kind = "sentencepiece"

    def __init__(self, model_bytes: bytes, *, source: str = "<bytes>"):
        self.model_bytes = bytes(model_bytes)
        self._source = source
        self._sp = _load_processor(self.model_bytes, source)
        _check_special_pieces(self._sp, source)
        self.vocab_size: int = self._sp.GetPieceSize()
        self.pad_id, self.unk_id, self.cls_id = PAD_ID, UNK_ID, CLS_ID
        self.sep_id, self.mask_id = SEP_ID, MASK_ID
        controls = {i for i in range(self.vocab_size) if self._sp.IsControl(i)}
        self.special_ids: tuple[int, ...] = tuple(sorted(controls | {PAD_ID, CLS_ID, SEP_ID, MASK_ID}))

    def __repr__(self) -> str:
        return f"Tokenizer({self._source!r}, vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        return list(self._sp.EncodeAsIds(text))

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.DecodeIds([int(i) for i in ids])

    @functools.cached_property
    def byte_fallback(self) -> bool:
        """Whether characters outside the vocabulary become byte pieces, never [UNK]. Computed on first use:
        loading a model, on every run's start, does not need it."""
        return any(self._sp.IsByte(i) for i in range(self.vocab_size))

    def unknown_share(self, texts: Iterable[str]) -> tuple[int, int]:
        """(unknown pieces, all pieces) of the texts: how much of them the vocabulary cannot spell."""
        unknown = total = 0
        for ids in self._sp.encode(list(texts)):
            total += len(ids)
            unknown += ids.count(UNK_ID)
        return unknown, total

    def tf_tokenize(self, texts: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
        """Tokenizes tf.string in the TF graph: scalar -> 1-D int32 tensor, [B] -> RaggedTensor [B, None]."""
        import tensorflow as tf
        import tensorflow_text as tf_text

        # Built per call on purpose: tf_text's model is owned by the kernel that created it, and a flush of the
        # eager kernel cache (tf.random.set_seed does one) would delete a model created eagerly and cached here.
        # Inside a tf.data map this runs once per trace and the model lives with the dataset's function.
        return tf_text.SentencepieceTokenizer(model=self.model_bytes, out_type=tf.int32).tokenize(texts)


def _load_processor(model_bytes: bytes, source: str) -> spm.SentencePieceProcessor:
    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(model_bytes)
    except (RuntimeError, OSError, TypeError) as e:
        raise UserError(f"not a SentencePiece model: {source} ({str(e).strip().splitlines()[0]})") from None
    if sp.GetPieceSize() <= len(SPECIAL_PIECES):
        raise UserError(f"not a usable SentencePiece model (vocabulary of {sp.GetPieceSize()}): {source}")
    return sp


def _check_special_pieces(sp: spm.SentencePieceProcessor, source: str) -> None:
    found = tuple(sp.IdToPiece(i) for i in range(len(SPECIAL_PIECES)))
    if found != SPECIAL_PIECES:
        raise UserError(f"tokenizer {source} has pieces {found} at ids 0-4, expected {SPECIAL_PIECES}")
    not_control = [SPECIAL_PIECES[i] for i in (CLS_ID, SEP_ID, MASK_ID) if not sp.IsControl(i)]
    if not_control:
        raise UserError(f"tokenizer {source}: {not_control} must be control symbols (text encodes to them)")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Loads a SentencePiece model file, checking that it has the project's special ids; a Hugging Face WordPiece
    vocabulary (vocab.txt, tokenizer.json, or a directory with one) gives the pipeline's WordPieceTokenizer."""
    path = os.fspath(path)
    from plm_jax.data.wordpiece import WordPieceTokenizer, is_wordpiece_path

    if is_wordpiece_path(path):
        return WordPieceTokenizer(path)  # type: ignore[return-value]  # the same interface to the pipeline
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer model not found: {path}")
    with open(path, "rb") as f:
        return Tokenizer(f.read(), source=path)


def _training_sentences(texts: Iterable[str], max_sentences: int) -> Iterator[str]:
    """Lines of the texts cut to a length SentencePiece accepts, empty ones dropped, at most max_sentences."""
    n = 0
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            for start in range(0, len(line), _CHUNK_CHARS):
                if n >= max_sentences:
                    return
                yield line[start : start + _CHUNK_CHARS]
                n += 1


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_path: str | os.PathLike,
    *,
    max_sentences: int = 200_000,
    seed: int = 0,
    overwrite: bool = False,
    character_coverage: float = DEFAULT_CHARACTER_COVERAGE,
    byte_fallback: bool = True,
) -> Tokenizer:
    """Trains a unigram SentencePiece model in-process and writes it atomically to out_path.

    Deterministic: the first max_sentences lines are used (no reservoir sampling), one thread, fixed seed.
    `character_coverage` of the text's characters get pieces of their own; with `byte_fallback` (from
    MIN_BYTE_FALLBACK_VOCAB pieces up) the rest are spelled in bytes, else they become [UNK]. The share of
    unknown pieces in the training text is logged, with a warning above UNKNOWN_SHARE_WARNING.
    """
    out_path = os.fspath(out_path)
    if os.path.exists(out_path) and not overwrite:
        raise FileExistsError(f"tokenizer model exists (pass overwrite=True to replace it): {out_path}")
    if vocab_size <= len(SPECIAL_PIECES):
        raise UserError(f"vocab_size must exceed the {len(SPECIAL_PIECES)} special pieces, got {vocab_size}")
    if not 0.98 <= character_coverage <= 1.0:  # SentencePiece's unigram trainer's range
        raise UserError(f"character_coverage must be in [0.98, 1], got {character_coverage}")
    if byte_fallback and vocab_size < MIN_BYTE_FALLBACK_VOCAB:
        log.warning("a %d-piece vocabulary trains without byte fallback (it needs %d pieces or more): characters "
                    "outside it become [UNK]", vocab_size, MIN_BYTE_FALLBACK_VOCAB)
        byte_fallback = False
    sentences = list(_training_sentences(texts, max_sentences))
    if not sentences:
        raise UserError(f"no text to train the tokenizer for {out_path}")
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=float(character_coverage),
            byte_fallback=bool(byte_fallback),
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            eos_id=-1,
            pad_piece=SPECIAL_PIECES[PAD_ID],
            unk_piece=SPECIAL_PIECES[UNK_ID],
            control_symbols=list(SPECIAL_PIECES[CLS_ID:]),
            num_threads=1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            max_sentence_length=_MAX_SENTENCE_BYTES,
            minloglevel=2,
        )
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1]
        raise UserError(f"tokenizer training failed for {out_path}: {reason}") from None
    tokenizer = Tokenizer(model.getvalue(), source=out_path)
    write_atomic(out_path, tokenizer.model_bytes)
    _log_unknown_share(tokenizer, sentences, character_coverage)
    return tokenizer


def _log_unknown_share(tokenizer: Tokenizer, sentences: list[str], character_coverage: float) -> None:
    unknown, total = tokenizer.unknown_share(sentences)
    share = unknown / max(total, 1)
    line = (f"{tokenizer._source}: {unknown} of the training text's {total} pieces ({share:.3%}) are [UNK] "
            f"(byte fallback {'on' if tokenizer.byte_fallback else 'off'}, character_coverage={character_coverage})")
    if share > UNKNOWN_SHARE_WARNING:
        log.warning("%s; raise character_coverage or the vocabulary size, or turn on byte fallback", line)
    else:
        log.info(line)
