"""Tagged words for token classification (NER, POS, chunking): loading (TFDS or local CoNLL/JSONL) and encoding.

Local files, by extension:
  * `.conll`, `.txt`, `.iob`, `.bio`, `.tsv`: one word a line, columns separated by whitespace; the word is the
    first column and the tag column `task.tag_column` (default -1, the last). A blank line ends a sentence;
    `-DOCSTART-` lines are skipped (CoNLL-2003).
  * `.jsonl`: one sentence a line, `{"tokens": [...], "tags": [...]}` (field names `task.tokens_field`,
    `task.tags_field`); tags are names, or indices into `task.label_names`.
Encoding follows Hugging Face's `run_ner`: each word is tokenized on its own, and only its first sub-token
carries the label (the others get weight 0); words past `task.seq_len` are cut and counted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from plm_jax.data.text_tokenizer import TextTokenizer
from plm_jax.errors import UserError
from plm_jax.files import json_objects, read_text
from plm_jax.tasks import subsets
from plm_jax.tasks.classification import encoding_of

log = logging.getLogger("plm_jax")
SOURCES = ("local", "tfds")
_CONLL = (".conll", ".txt", ".iob", ".bio", ".tsv")


def default_tagging_config() -> ml_collections.ConfigDict:
    """Defaults for the `task` section of a token-classification config."""
    return ml_collections.ConfigDict({
        "kind": "tagging",
        "source": "local",  # local | tfds
        "tfds_name": "", "tfds_data_dir": "",  # e.g. "conll2003" (splits train / dev / test)
        "train_split": "train", "eval_split": "dev", "test_split": "test",  # TFDS split names
        "train_file": "", "eval_file": "", "test_file": "",  # local: CoNLL columns or JSONL (see the docstring)
        "tokens_field": "tokens", "tags_field": "tags",  # JSONL field names; TFDS feature names
        "tag_column": -1,  # CoNLL: the column holding the tag
        "label_names": (),  # () = the TFDS ClassLabel names, else the sorted tags of the train split
        "max_train_examples": 0, "max_eval_examples": 0,  # 0 = all, else N sentences drawn by the seed
        "encoding": "utf-8",  # of local files (latin-1, cp1252, ...); a file that does not decode is named
        "seq_len": 128,
        "main_metric": "",  # "" = entity-level f1
        "classifier_dropout": -1.0,  # < 0: the model's dropout_rate, as Hugging Face
    })


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]  # names; empty for unlabeled input
    where: str


def validate_tagging_config(cfg: ml_collections.ConfigDict) -> None:
    if cfg.source not in SOURCES:
        raise UserError(f"task.source must be one of {SOURCES}, got {cfg.source!r}")
    if int(cfg.seq_len) < 3:
        raise UserError(f"task.seq_len must be >= 3 ([CLS], a word, [SEP]), got {cfg.seq_len}")
    names = tuple(cfg.label_names)
    if len(set(names)) != len(names):
        raise UserError(f"task.label_names has duplicates: {names}")


def read_conll(path: str, tag_column: int = -1, labeled: bool = True, encoding: str = "utf-8"
               ) -> list[TaggedSentence]:
    """Sentences of a CoNLL-style file; a line with too few columns is an error naming the file and line."""
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 1

    def flush(line_no: int) -> None:
        nonlocal words, tags, start
        if words:
            sentences.append(TaggedSentence(tuple(words), tuple(tags), f"{path}:{start}"))
        words, tags, start = [], [], line_no + 1

    for n, line in enumerate(read_text(path, encoding).splitlines(), start=1):
        columns = line.split()
        if not columns:
            flush(n)
            continue
        if columns[0] == "-DOCSTART-":
            flush(n)
            continue
        if labeled:
            if len(columns) < 2:
                raise UserError(f"{path}:{n}: expected a word and a tag, got {line!r}")
            try:
                tags.append(columns[tag_column])
            except IndexError:
                raise UserError(f"{path}:{n}: no column {tag_column} (task.tag_column) in {line!r}") from None
        words.append(columns[0])
    flush(0)
    return sentences


def read_jsonl(path: str, cfg: ml_collections.ConfigDict, labeled: bool = True) -> list[TaggedSentence]:
    sentences = []
    for where, obj in json_objects(read_text(path, encoding_of(cfg)).splitlines(), lambda n: f"{path}:{n}"):
        words = obj.get(cfg.tokens_field)
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise UserError(f"{where}: {cfg.tokens_field!r} must be a list of strings")
        tags: list[str] = []
        if labeled:
            raw = obj.get(cfg.tags_field)
            if not isinstance(raw, list) or len(raw) != len(words):
                raise UserError(f"{where}: {cfg.tags_field!r} must be a list with one tag per token "
                                f"({len(words)} tokens)")
            names = tuple(cfg.label_names)
            for tag in raw:
                if isinstance(tag, int) and not isinstance(tag, bool):
                    if not 0 <= tag < len(names):
                        raise UserError(f"{where}: tag index {tag} needs task.label_names (it has {len(names)})")
                    tag = names[tag]
                tags.append(str(tag))
        if words:
            sentences.append(TaggedSentence(tuple(words), tuple(tags), where))
    return sentences


def read_local(path: str, cfg: ml_collections.ConfigDict, labeled: bool = True) -> list[TaggedSentence]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tagging file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".jsonl":
        return read_jsonl(path, cfg, labeled)
    if ext in _CONLL:
        return read_conll(path, int(cfg.tag_column), labeled, encoding_of(cfg))
    raise UserError(f"{path}: unknown extension {ext!r}; expected .jsonl or CoNLL columns ({', '.join(_CONLL)})")


def _tfds_sentences(cfg: ml_collections.ConfigDict, split: str) -> tuple[list[TaggedSentence], tuple[str, ...]]:
    import tensorflow_datasets as tfds

    from plm_jax.tasks.classification import task_tfds_builder

    builder, split_name = task_tfds_builder(cfg, split)
    features = builder.info.features
    for key in (cfg.tokens_field, cfg.tags_field):
        if key not in features:
            raise UserError(f"TFDS dataset {cfg.tfds_name!r} has no feature {key!r}; available: "
                            f"{sorted(features.keys())} (set task.tokens_field / task.tags_field)")
    tag_feature = features[cfg.tags_field].feature
    names = tuple(tag_feature.names) if isinstance(tag_feature, tfds.features.ClassLabel) else ()
    read_config = tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1, try_autocache=False)
    ds = builder.as_dataset(split=split_name, shuffle_files=False, read_config=read_config)
    sentences = []
    for i, ex in enumerate(ds.as_numpy_iterator()):
        words = tuple(w.decode("utf-8") for w in ex[cfg.tokens_field])
        tags = tuple(names[int(t)] if names else t.decode("utf-8") for t in ex[cfg.tags_field])
        if words:
            sentences.append(TaggedSentence(words, tags, f"{cfg.tfds_name}:{split_name} example {i}"))
    return sentences, names


def load_sentences(cfg: ml_collections.ConfigDict, split: str, seed: int = 0
                   ) -> tuple[list[TaggedSentence], tuple[str, ...]]:
    """Sentences of split "train"/"eval"/"test" (a subset drawn by `seed` under max_*_examples) and the tag names:
    the TFDS ClassLabel's, or a local train split's over all its sentences (a rare tag missing from a small subset
    still gets its label), else empty."""
    validate_tagging_config(cfg)
    if cfg.source == "tfds":
        sentences, names = _tfds_sentences(cfg, split)
    else:
        path = cfg[f"{split}_file"]
        if not path:
            raise UserError(f"task.{split}_file is not set")
        sentences = read_local(path, cfg)
        names = label_names_of(cfg, sentences, ()) if split == "train" else ()
    if not sentences:
        raise UserError(f"task {split} split: no sentences")
    limit = int(cfg.max_train_examples if split == "train" else cfg.max_eval_examples)
    return subsets.take(sentences, limit, subsets.split_seed(split, seed)), names


def label_names_of(cfg: ml_collections.ConfigDict, train: Sequence[TaggedSentence],
                   tfds_names: tuple[str, ...]) -> tuple[str, ...]:
    """Declared names, else the TFDS ClassLabel's, else the train split's tags: "O" first, then by type and prefix."""
    if tuple(cfg.label_names):
        return tuple(cfg.label_names)
    if tfds_names:
        return tfds_names
    tags = {t for s in train for t in s.tags}
    return tuple(sorted(tags, key=lambda t: (t != "O", t[2:] if t[1:2] == "-" else t, t)))


def encode(sentences: Sequence[TaggedSentence], tokenizer: TextTokenizer, seq_len: int,
           label_names: Sequence[str]) -> dict[str, np.ndarray]:
    """[CLS] word pieces [SEP] padded to seq_len; `labels`/`label_weights` at each word's first sub-token,
    `word_starts` its position (0 for a word cut by seq_len), `truncated` the words cut per sentence."""
    n, index = len(sentences), {name: i for i, name in enumerate(label_names)}
    max_words = max(len(s.words) for s in sentences)
    arrays = {
        "input_ids": np.full((n, seq_len), tokenizer.pad_id, np.int32),
        "token_type_ids": np.zeros((n, seq_len), np.int32),
        "segment_ids": np.zeros((n, seq_len), np.int32),
        "positions": np.zeros((n, seq_len), np.int32),
        "labels": np.zeros((n, seq_len), np.int32),
        "label_weights": np.zeros((n, seq_len), np.float32),
        "word_starts": np.zeros((n, max_words), np.int32),
        "truncated": np.zeros((n,), np.int32),
    }
    for i, sentence in enumerate(sentences):
        ids = [tokenizer.cls_id]
        for j, word in enumerate(sentence.words):
            pieces = tokenizer.encode(word) or [tokenizer.unk_id]
            if len(ids) + len(pieces) > seq_len - 1:
                arrays["truncated"][i] = len(sentence.words) - j
                break
            arrays["word_starts"][i, j] = len(ids)
            if sentence.tags:
                tag = sentence.tags[j]
                if tag not in index:
                    raise UserError(f"{sentence.where}: tag {tag!r} is not one of the labels {tuple(label_names)}")
                arrays["labels"][i, len(ids)] = index[tag]
                arrays["label_weights"][i, len(ids)] = 1.0
            ids += pieces
        ids.append(tokenizer.sep_id)
        arrays["input_ids"][i, : len(ids)] = ids
        arrays["segment_ids"][i, : len(ids)] = 1
        arrays["positions"][i, : len(ids)] = np.arange(len(ids))
    cut = int((arrays["truncated"] > 0).sum())
    if cut:
        log.warning("%d of %d sentences are longer than task.seq_len=%d sub-tokens: %d words are cut and not "
                    "predicted", cut, n, seq_len, int(arrays["truncated"].sum()))
    return arrays


def word_tags(logits_NxLxC: np.ndarray, arrays: dict[str, np.ndarray], sentences: Sequence[TaggedSentence],
              label_names: Sequence[str]) -> list[list[str]]:
    """Each sentence's predicted tag per word, read at its first sub-token; a word cut by seq_len gets "O"."""
    out = []
    for i, sentence in enumerate(sentences):
        kept = len(sentence.words) - int(arrays["truncated"][i])
        best = np.argmax(logits_NxLxC[i, arrays["word_starts"][i, :kept]], axis=-1)
        out.append([label_names[int(k)] for k in best] + ["O"] * (len(sentence.words) - kept))
    return out

