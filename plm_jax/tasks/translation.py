"""Parallel text for machine-translation fine-tuning: loading (TFDS or local files) and seq2seq encoding.

Local files, by the extension of `task.<split>_file`:
  * `.tsv`: one pair a line, `source<TAB>target`, no quoting (quotes are text). A first line that is exactly
    `<source_lang><TAB><target_lang>` or `source<TAB>target` is taken as a header and skipped.
  * `.jsonl`: one object a line with text fields `task.source_field` / `task.target_field` (default: the language
    codes), or a Hugging Face style `{"translation": {"en": ..., "de": ...}}`. Blank lines are skipped.
  * `a.en::a.de`: two line-aligned plain text files; differing line counts are an error naming both.
Pairs are a fine-tuning set: read into Python lists once and tokenized in Python. In local files an empty source
or target is an error naming the file and line, not skipped, because in aligned data it means the alignment is
off from there on. TFDS corpora (WMT) cannot be fixed by the user, so there empty pairs are skipped and counted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence

import ml_collections
import numpy as np

from plm_jax.data.text_tokenizer import TextTokenizer
from plm_jax.errors import UserError
from plm_jax.files import json_objects, read_text
from plm_jax.tasks import subsets
from plm_jax.tasks.classification import SOURCES, SPLITS, encoding_of

ON_LONG = ("truncate", "error")
PAIR_SEPARATOR = "::"  # "a.en::a.de": two line-aligned text files
_FORMATS = {".tsv": "tsv", ".jsonl": "jsonl"}
_log = logging.getLogger(__name__)


def default_translation_config() -> ml_collections.ConfigDict:
    """Defaults for the `task` section of a translation config; see the module docstring for the file formats."""
    return ml_collections.ConfigDict({
        "kind": "translation",
        "source": "local",  # local | tfds
        "tfds_name": "", "tfds_data_dir": "",  # e.g. "wmt14_translate/de-en"
        "train_split": "train", "eval_split": "validation", "test_split": "test",  # TFDS split names
        "source_lang": "en", "target_lang": "de",  # TFDS feature keys; default JSONL field names
        "train_file": "", "eval_file": "", "test_file": "",  # local: .tsv / .jsonl / "a.en::a.de"
        "source_field": "", "target_field": "",  # JSONL field names; "" = source_lang / target_lang
        "max_source_len": 128, "max_target_len": 128,  # tokens, including EOS (source) / BOS or EOS (target)
        "on_long": "truncate",  # truncate (count and warn once per split) | error
        "max_train_examples": 0, "max_eval_examples": 0,  # 0 = all, else N drawn by the seed (subsets.py)
        "encoding": "utf-8",  # of local files (latin-1, cp1252, ...); a file that does not decode is named
        # `launch.py tokenizer` on this config: characters with pieces of their own; the rest spelled in bytes
        "character_coverage": 0.9995, "byte_fallback": True,
    })


@dataclasses.dataclass(frozen=True)
class TranslationPair:
    source: str
    target: str
    where: str  # "file:line" (or "tfds name:split example i"), for error messages


def validate_translation_config(cfg: ml_collections.ConfigDict) -> None:
    """Config errors that would otherwise surface late, as one line each."""
    if cfg.kind != "translation":
        raise UserError(f"task.kind must be 'translation' for the translation loader, got {cfg.kind!r}")
    if cfg.source not in SOURCES:
        raise UserError(f"task.source must be one of {SOURCES}, got {cfg.source!r}")
    if not cfg.source_lang or not cfg.target_lang:
        raise UserError(f"task.source_lang and task.target_lang must be set, got {cfg.source_lang!r} and "
                         f"{cfg.target_lang!r}")
    if cfg.source == "tfds" and cfg.source_lang == cfg.target_lang:
        raise UserError(f"task.source_lang and task.target_lang are both {cfg.source_lang!r}: TFDS features are "
                         f"keyed by language")
    for key in ("max_source_len", "max_target_len"):
        if int(cfg[key]) < 2:
            raise UserError(f"task.{key} must be >= 2 (BOS/EOS plus one token), got {cfg[key]}")
    if cfg.on_long not in ON_LONG:
        raise UserError(f"task.on_long must be one of {ON_LONG}, got {cfg.on_long!r}")
    for key in ("max_train_examples", "max_eval_examples"):
        if int(cfg[key]) < 0:
            raise UserError(f"task.{key} must be >= 0 (0 = all), got {cfg[key]}")


# ---------------------------------------------------------------------------------------------------- local files


def _lines(path: str, encoding: str = "utf-8") -> list[str]:
    """The lines of a text file without line ends; the empty string after a final newline is not a line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"translation file not found: {path}")
    lines = read_text(path, encoding).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _check_text(text: str, where: str, side: str) -> str:
    if not text.strip():
        raise UserError(f"{where}: empty {side} (an aligned corpus has no blank sides; is the alignment off?)")
    return text


def _read_tsv(path: str, cfg: ml_collections.ConfigDict) -> Iterator[TranslationPair]:
    lines = _lines(path, encoding_of(cfg))
    while lines and not lines[-1].strip():  # trailing blank lines only; blank lines inside are errors
        lines.pop()
    headers = {(cfg.source_lang, cfg.target_lang), ("source", "target")}
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        fields = line.split("\t")
        if len(fields) != 2:
            raise UserError(f"{where}: {len(fields)} tab-separated fields, expected 2 (source<TAB>target): "
                             f"{line[:80]!r}")
        if number == 1 and (fields[0].strip(), fields[1].strip()) in headers:
            continue
        yield TranslationPair(_check_text(fields[0], where, "source"), _check_text(fields[1], where, "target"),
                              where)


def _json_fields(cfg: ml_collections.ConfigDict) -> tuple[str, str]:
    fields = cfg.source_field or cfg.source_lang, cfg.target_field or cfg.target_lang
    if fields[0] == fields[1]:
        raise UserError(f"the JSONL source and target fields are both {fields[0]!r}: set task.source_field and "
                         f"task.target_field")
    return fields


def _read_jsonl(path: str, cfg: ml_collections.ConfigDict) -> Iterator[TranslationPair]:
    source_field, target_field = _json_fields(cfg)
    nested_ok = not cfg.source_field and not cfg.target_field  # {"translation": {lang: text}} keyed by language
    for where, record in json_objects(_lines(path, encoding_of(cfg)), lambda number: f"{path}:{number}"):
        if nested_ok and source_field not in record and isinstance(record.get("translation"), dict):
            record = record["translation"]
        texts = []
        for side, field in (("source", source_field), ("target", target_field)):
            if field not in record:
                raise UserError(f"{where}: no {side} field {field!r}; available: {sorted(record)}")
            value = record[field]
            if value is not None and not isinstance(value, str):
                raise UserError(f"{where}: {side} field {field!r} is not text: {value!r}")
            texts.append(_check_text(value or "", where, f"{side} ({field!r})"))
        yield TranslationPair(texts[0], texts[1], where)


def _read_two_files(spec: str, encoding: str = "utf-8") -> Iterator[TranslationPair]:
    source_path, target_path = (os.path.expanduser(p.strip()) for p in spec.split(PAIR_SEPARATOR, 1))
    if not source_path or not target_path or PAIR_SEPARATOR in target_path:
        raise UserError(f"{spec!r}: expected two files as 'source_path{PAIR_SEPARATOR}target_path'")
    sources, targets = _lines(source_path, encoding), _lines(target_path, encoding)
    if len(sources) != len(targets):
        raise UserError(f"line counts differ: {source_path} has {len(sources)} lines, {target_path} has "
                         f"{len(targets)}; the files must be line-aligned")
    for number, (source, target) in enumerate(zip(sources, targets), start=1):
        _check_text(source, f"{source_path}:{number}", "source line")
        _check_text(target, f"{target_path}:{number}", "target line")
        yield TranslationPair(source, target, f"{source_path}{PAIR_SEPARATOR}{target_path}:{number}")


def _local_pairs(cfg: ml_collections.ConfigDict, split: str) -> Iterator[TranslationPair]:
    spec = str(cfg[f"{split}_file"]).strip()
    if not spec:
        raise UserError(f"task.{split}_file is empty: give the {split} .tsv/.jsonl file or 'a.src{PAIR_SEPARATOR}"
                         f"a.tgt'")
    if PAIR_SEPARATOR in spec:
        return _read_two_files(spec, encoding_of(cfg))
    path = os.path.expanduser(spec)
    fmt = _FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise UserError(f"{path}: unknown format; the extension must be one of {sorted(_FORMATS)}, or give two "
                         f"line-aligned files as 'a.src{PAIR_SEPARATOR}a.tgt'")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"task.{split}_file not found: {path}")
    return _read_jsonl(path, cfg) if fmt == "jsonl" else _read_tsv(path, cfg)


# ----------------------------------------------------------------------------------------------------------- TFDS


def _tfds_pairs(cfg: ml_collections.ConfigDict, split: str) -> Iterator[TranslationPair]:
    """Pairs of a TFDS translation split (features keyed by language, e.g. wmt14_translate/de-en)."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from plm_jax.tasks.classification import task_tfds_builder

    builder, split_name = task_tfds_builder(cfg, split)
    features, name = builder.info.features, cfg.tfds_name
    languages = (cfg.source_lang, cfg.target_lang)
    for lang in languages:
        if lang not in features:
            raise UserError(f"TFDS dataset {name!r} has no feature {lang!r} (task.source_lang/target_lang); "
                             f"available: {sorted(features.keys())}")
        if features[lang].tf_dtype != tf.string or tuple(features[lang].shape) != ():
            raise UserError(f"TFDS feature {name}/{lang} is not scalar text ({features[lang].tf_dtype.name})")
    read_config = tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1, try_autocache=False)
    ds = builder.as_dataset(split=split_name, shuffle_files=False, read_config=read_config)
    ds = ds.map(lambda ex: {lang: ex[lang] for lang in languages}).batch(1024)

    def pairs() -> Iterator[TranslationPair]:
        i = empty = 0
        for batch in ds.as_numpy_iterator():
            for source, target in zip(batch[cfg.source_lang], batch[cfg.target_lang]):
                source, target = source.decode("utf-8"), target.decode("utf-8")
                if source.strip() and target.strip():
                    yield TranslationPair(source, target, f"{name}:{split_name} example {i}")
                else:
                    empty += 1
                i += 1
        if empty:
            _log.warning("tfds %s:%s: skipped %d of %d pairs with an empty side", name, split_name, empty, i)

    return pairs()


# -------------------------------------------------------------------------------------------------------- loading


def load_pairs(cfg: ml_collections.ConfigDict, split: str, seed: int = 0) -> list[TranslationPair]:
    """The pairs of split "train", "eval" or "test"; under max_train_examples / max_eval_examples, that many drawn
    by `seed` from the stream (tasks/subsets.py), in O(N) memory."""
    if split not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, got {split!r}")
    validate_translation_config(cfg)
    pairs = _tfds_pairs(cfg, split) if cfg.source == "tfds" else _local_pairs(cfg, split)
    limit = int(cfg.max_train_examples if split == "train" else cfg.max_eval_examples)
    kept = subsets.take_stream(pairs, limit, subsets.split_seed(split, seed))
    if not kept:
        where = cfg.tfds_name if cfg.source == "tfds" else cfg[f"{split}_file"]
        raise UserError(f"no translation pairs in the {split} split ({where})")
    return kept


def iter_tokenizer_text(cfg: ml_collections.ConfigDict, seed: int = 0) -> Iterator[str]:
    """Source and target sentences of the train split, alternating, to train ONE vocabulary for both languages.

    Alternating keeps both languages equally represented when the tokenizer trainer reads only the first lines.
    """
    for pair in load_pairs(cfg, "train", seed):
        yield pair.source
        yield pair.target


# ------------------------------------------------------------------------------------------------------- encoding


def _fit(ids: list[int], budget: int, pair: TranslationPair, side: str, cfg_key: str, on_long: str) -> list[int]:
    if len(ids) <= budget:
        return ids
    if on_long == "error":
        raise UserError(f"{pair.where}: {side} is {len(ids) + 1} tokens with {'EOS' if side == 'source' else 'BOS'}"
                         f", longer than task.{cfg_key}={budget + 1} (set task.on_long='truncate' to cut it)")
    return ids[:budget]


def encode_pairs(pairs: Sequence[TranslationPair], tokenizer: TextTokenizer, cfg: ml_collections.ConfigDict,
                 split: str) -> dict[str, np.ndarray]:
    """Seq2seq arrays for N pairs: encoder `source EOS`, decoder input `BOS target`, decoder targets `target EOS`.

    EOS is the tokenizer's [SEP] and BOS (the decoder start) its [CLS]. Over-long texts are cut to leave room for
    EOS/BOS (on_long="truncate", one warning per split with the count) or rejected (on_long="error").
    `truncated` holds 1 for each pair that was cut, so callers can count them: int(arrays["truncated"].sum()).
    """
    validate_translation_config(cfg)
    n, src_len, tgt_len = len(pairs), int(cfg.max_source_len), int(cfg.max_target_len)
    pad, bos, eos = tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id
    arrays = {
        "encoder_input_ids": np.full((n, src_len), pad, np.int32),
        "encoder_segment_ids": np.zeros((n, src_len), np.int32),
        "encoder_positions": np.zeros((n, src_len), np.int32),
        "decoder_input_ids": np.full((n, tgt_len), pad, np.int32),
        "decoder_target_ids": np.full((n, tgt_len), pad, np.int32),
        "decoder_segment_ids": np.zeros((n, tgt_len), np.int32),
        "decoder_positions": np.zeros((n, tgt_len), np.int32),
        "decoder_weights": np.zeros((n, tgt_len), np.float32),
        "truncated": np.zeros((n,), np.int32),
    }
    for i, pair in enumerate(pairs):
        source_ids, target_ids = tokenizer.encode(pair.source), tokenizer.encode(pair.target)
        source = _fit(source_ids, src_len - 1, pair, "source", "max_source_len", cfg.on_long)
        target = _fit(target_ids, tgt_len - 1, pair, "target", "max_target_len", cfg.on_long)
        arrays["truncated"][i] = int(len(source) < len(source_ids) or len(target) < len(target_ids))
        m = len(source) + 1
        arrays["encoder_input_ids"][i, :m] = [*source, eos]
        arrays["encoder_segment_ids"][i, :m] = 1
        arrays["encoder_positions"][i, :m] = np.arange(m)
        m = len(target) + 1
        arrays["decoder_input_ids"][i, :m] = [bos, *target]
        arrays["decoder_target_ids"][i, :m] = [*target, eos]
        arrays["decoder_segment_ids"][i, :m] = 1
        arrays["decoder_positions"][i, :m] = np.arange(m)
        arrays["decoder_weights"][i, :m] = 1.0
    cut = int(arrays["truncated"].sum())
    if cut:
        _log.warning("%s split: truncated %d of %d translation pairs to max_source_len=%d / max_target_len=%d",
                     split, cut, n, src_len, tgt_len)
    return arrays
