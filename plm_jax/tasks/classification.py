"""Labeled text for sequence classification / regression: loading (TFDS or local CSV/TSV/JSONL) and BERT encoding.

Fine-tuning sets are small, so they are read into Python lists once and tokenized in Python. Bad input fails with
one line naming the file, the line and the value; only empty texts and excluded classes are skipped, and counted,
because those are expected in real data (blank rows, an "Uncategorized" class) while the rest point to a bug.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections
import numpy as np

from plm_jax.data.text_tokenizer import TextTokenizer
from plm_jax.errors import UserError
from plm_jax.files import json_objects, read_text
from plm_jax.tasks import subsets

KINDS = ("classification", "regression", "qa")
SOURCES = ("tfds", "local")
SPLITS = ("train", "eval", "test")
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}
_INT = re.compile(r"[+-]?\d+")


def default_task_config() -> ml_collections.ConfigDict:
    """Defaults for the `task` section of a fine-tuning config; see the module docstring."""
    return ml_collections.ConfigDict({
        "kind": "classification",  # classification | regression | qa (qa is loaded elsewhere)
        "source": "tfds",  # tfds | local
        "tfds_name": "", "tfds_data_dir": "",
        "train_split": "train", "eval_split": "validation", "test_split": "",  # TFDS split names
        "train_file": "", "eval_file": "", "test_file": "",  # local: .csv / .tsv / .jsonl (format from the extension)
        "text_a": "sentence", "text_b": "", "label": "label",  # feature / column names; text_b "" = single sentences
        "label_names": (),  # () = the TFDS ClassLabel names, else the sorted distinct labels of the train split
        "exclude_labels": (),  # classes dropped; their examples are skipped and counted
        "max_train_examples": 0, "max_eval_examples": 0,  # 0 = all, else N drawn by the seed, stratified (subsets.py)
        "encoding": "utf-8",  # of local files (latin-1, cp1252, ...); a file that does not decode is named
        "seq_len": 128,
        "doc_stride": 128, "max_query_len": 64, "max_answer_len": 30, "n_best": 20,  # qa only
        "version_2": False, "null_threshold": 0.0,  # qa only
    })


@dataclasses.dataclass
class TextExample:
    text_a: str
    text_b: str | None
    label: int | float  # class index, regression target, or -1 for an unlabeled test split


@dataclasses.dataclass
class LabeledSet:
    examples: list[TextExample]
    label_names: tuple[str, ...]  # empty for regression
    skipped: dict[str, int]  # reason -> count, e.g. {"empty_text": 3, "excluded:Uncategorized": 40}
    source: str  # where the examples came from, for logs


@dataclasses.dataclass
class _Row:
    """One raw record: label None = unlabeled (a GLUE test -1, or no label column in a test file)."""

    where: str
    text_a: str | None
    text_b: str | None
    label: str | int | float | None


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):  # a command-line override such as "neg,pos"
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v) for v in value)


def validate_task_config(task_cfg: ml_collections.ConfigDict) -> None:
    """Config errors that would otherwise surface late (or as a wrong label mapping)."""
    if task_cfg.kind == "qa":
        raise UserError("task.kind 'qa' is extractive QA, which has its own loader; load_split handles "
                         "classification and regression")
    if task_cfg.kind not in KINDS:
        raise UserError(f"task.kind must be one of {KINDS}, got {task_cfg.kind!r}")
    if task_cfg.source not in SOURCES:
        raise UserError(f"task.source must be one of {SOURCES}, got {task_cfg.source!r}")
    if not task_cfg.text_a:
        raise UserError("task.text_a is empty: name the text feature / column")
    if task_cfg.kind == "regression" and (_names(task_cfg.label_names) or _names(task_cfg.exclude_labels)):
        raise UserError("task.label_names and task.exclude_labels must be empty for regression")
    names = _names(task_cfg.label_names)
    if len(set(names)) != len(names):
        raise UserError(f"task.label_names has duplicates: {names}")
    minimum = 5 if task_cfg.text_b else 3
    if int(task_cfg.seq_len) < minimum:
        raise UserError(f"task.seq_len must be >= {minimum} ([CLS]/[SEP] plus text), got {task_cfg.seq_len}")


# ---------------------------------------------------------------------------------------------------- local files


def encoding_of(task_cfg: ml_collections.ConfigDict) -> str:
    """task.encoding of local files (utf-8 when a config predates the key)."""
    return str(task_cfg.get("encoding", "") or "utf-8")


def _columns(task_cfg: ml_collections.ConfigDict, need_label: bool) -> list[str]:
    return [task_cfg.text_a] + ([task_cfg.text_b] if task_cfg.text_b else []) + ([task_cfg.label] * need_label)


def _read_delimited(path: str, text: str, delimiter: str, task_cfg, split: str) -> Iterator[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise UserError(f"{path}: no header row (the file is empty)")
    has_label = task_cfg.label in header
    for column in _columns(task_cfg, need_label=split != "test" or has_label):
        if column not in header:
            raise UserError(f"{path} line 1: no column {column!r}; available: {header}")
    index = {name: i for i, name in enumerate(header)}
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num
        where = f"{path} line {start}"
        if not row:
            continue  # a blank line
        if len(row) != len(header):
            raise UserError(f"{where}: {len(row)} fields, the header has {len(header)} (unbalanced quotes?)")
        text_b = row[index[task_cfg.text_b]] if task_cfg.text_b else None
        label = row[index[task_cfg.label]] if has_label else None
        yield _Row(where, row[index[task_cfg.text_a]], text_b, label)


def _read_jsonl(path: str, text: str, task_cfg, split: str) -> Iterator[_Row]:
    for where, record in json_objects(text.split("\n"), lambda number: f"{path} line {number}"):
        has_label = task_cfg.label in record
        for column in _columns(task_cfg, need_label=split != "test"):
            if column not in record:
                raise UserError(f"{where}: no field {column!r}; available: {sorted(record)}")
        texts = []
        for column in _columns(task_cfg, need_label=False):
            value = record[column]
            if value is not None and not isinstance(value, str):
                raise UserError(f"{where}: field {column!r} is not text: {value!r}")
            texts.append(value or "")  # null counts as empty text
        label = record[task_cfg.label] if has_label else None
        yield _Row(where, texts[0], texts[1] if task_cfg.text_b else None, label)


def _local_rows(task_cfg: ml_collections.ConfigDict, split: str) -> tuple[Iterator[_Row], str]:
    path = os.path.expanduser(str(task_cfg[f"{split}_file"]))
    if not path:
        raise UserError(f"task.{split}_file is empty: give the {split} .csv/.tsv/.jsonl file")
    fmt = _FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise UserError(f"{path}: unknown format; the extension must be one of {sorted(_FORMATS)}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"task.{split}_file not found: {path}")
    text = read_text(path, encoding_of(task_cfg))
    if fmt == "jsonl":
        return _read_jsonl(path, text, task_cfg, split), path
    return _read_delimited(path, text, "," if fmt == "csv" else "\t", task_cfg, split), path


# ----------------------------------------------------------------------------------------------------------- TFDS


def task_tfds_builder(task_cfg: ml_collections.ConfigDict, split: str) -> tuple[Any, str]:
    """The TFDS builder of a task's dataset and the TFDS name of its `split` ("train"/"eval"/"test"), checked."""
    from plm_jax.data.data_config import default_data_config
    from plm_jax.data.sources import tfds_builder

    if not task_cfg.tfds_name:
        raise UserError("task.tfds_name is empty: name the TFDS dataset (or set task.source='local')")
    split_name = task_cfg[f"{split}_split"]
    if not split_name:
        raise UserError(f"task.{split}_split is empty: name the TFDS split to use for {split}")
    data_cfg = default_data_config()
    data_cfg.update({"source": "tfds", "tfds_name": task_cfg.tfds_name, "tfds_data_dir": task_cfg.tfds_data_dir})
    builder = tfds_builder(data_cfg)
    if re.fullmatch(r"\w+", split_name) and split_name not in builder.info.splits:
        raise UserError(f"TFDS dataset {task_cfg.tfds_name!r} has no split {split_name!r}; "
                         f"available: {sorted(builder.info.splits.keys())}")
    return builder, split_name


def _tfds_rows(task_cfg: ml_collections.ConfigDict, split: str) -> tuple[Iterator[_Row], str, tuple[str, ...]]:
    """Rows of a TFDS split and the label feature's ClassLabel names (empty if it is not a ClassLabel)."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder, split_name = task_tfds_builder(task_cfg, split)
    features, name = builder.info.features, task_cfg.tfds_name
    for column in _columns(task_cfg, need_label=True):
        if column not in features:
            raise UserError(f"TFDS dataset {name!r} has no feature {column!r}; available: {sorted(features.keys())}")
    for column in _columns(task_cfg, need_label=False):
        if features[column].tf_dtype != tf.string or tuple(features[column].shape) != ():
            raise UserError(f"TFDS feature {name}/{column} is not scalar text ({features[column].tf_dtype.name})")
    label_feature = features[task_cfg.label]
    class_names = tuple(label_feature.names) if isinstance(label_feature, tfds.features.ClassLabel) else ()
    keys = _columns(task_cfg, need_label=True)
    read_config = tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1, try_autocache=False)
    ds = builder.as_dataset(split=split_name, shuffle_files=False, read_config=read_config)
    ds = ds.map(lambda ex: {k: ex[k] for k in keys}).batch(1024)

    def label_of(value) -> str | int | float | None:
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if class_names:  # GLUE test splits mark unlabeled examples with -1
            return None if int(value) < 0 else class_names[int(value)]
        value = value.item()
        return None if isinstance(value, int) and value < 0 else value

    def rows() -> Iterator[_Row]:
        i = 0
        for batch in ds.as_numpy_iterator():
            for j in range(len(batch[task_cfg.label])):
                text_b = batch[task_cfg.text_b][j].decode("utf-8") if task_cfg.text_b else None
                label = label_of(batch[task_cfg.label][j])
                yield _Row(f"{name}:{split_name} example {i}", batch[task_cfg.text_a][j].decode("utf-8"), text_b,
                           label)
                i += 1

    return rows(), f"tfds {name}:{split_name}", class_names


# -------------------------------------------------------------------------------------------------------- loading


def _rows(task_cfg, split: str) -> tuple[Iterator[_Row], str, tuple[str, ...]]:
    if task_cfg.source == "tfds":
        return _tfds_rows(task_cfg, split)
    rows, source = _local_rows(task_cfg, split)
    return rows, f"local {source}", ()


def _has_text(row: _Row) -> bool:
    return bool(row.text_a and row.text_a.strip()) and (row.text_b is None or bool(row.text_b.strip()))


def _train_label_names(task_cfg) -> tuple[str, ...]:
    """The sorted distinct labels of the train split (numerically if all are integers)."""
    rows, source, _ = _rows(task_cfg, "train")
    labels = {str(r.label).strip() for r in rows if r.label is not None and _has_text(r)}
    if not labels:
        raise UserError(f"cannot derive task.label_names: {source} has no labels; declare task.label_names")
    if all(_INT.fullmatch(x) for x in labels):
        return tuple(sorted(labels, key=int))
    return tuple(sorted(labels))


def _class_name(row: _Row, names: tuple[str, ...], declared: bool) -> str:
    """The class name of a raw label: a name, or (for declared classes) an integer index into them."""
    value = row.label.strip() if isinstance(row.label, str) else row.label
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise UserError(f"{row.where}: label {value!r} is not a class name or an integer index")
    if not declared or str(value) in names:
        if str(value) not in names:
            raise UserError(f"{row.where}: label {value!r} is not one of the classes of the train split {names}")
        return str(value)
    if isinstance(value, int) or _INT.fullmatch(value):
        index = int(value)
        if not 0 <= index < len(names):
            raise UserError(f"{row.where}: label index {value!r} is outside the {len(names)} classes {names}")
        return names[index]
    raise UserError(f"{row.where}: label {value!r} is not one of the declared classes {names}")


def _target(row: _Row) -> float:
    value = row.label
    try:
        if isinstance(value, bool):
            raise ValueError
        target = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{row.where}: regression label {value!r} is not a number") from None
    if not math.isfinite(target):
        raise UserError(f"{row.where}: regression label {value!r} is not finite")
    return target


def load_split(task_cfg: ml_collections.ConfigDict, split: str, seed: int = 0) -> LabeledSet:
    """The examples of split "train", "eval" or "test", labels as indices into label_names (or floats); with
    max_train_examples / max_eval_examples, a stratified subset drawn by `seed` (tasks/subsets.py)."""
    if split not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, got {split!r}")
    validate_task_config(task_cfg)
    regression = task_cfg.kind == "regression"
    rows, source, class_names = _rows(task_cfg, split)
    declared = _names(task_cfg.label_names) or class_names
    if regression and class_names:
        raise UserError(f"{source}: feature {task_cfg.label!r} is a ClassLabel {class_names}; "
                         f"task.kind='regression' needs numeric labels")
    all_names: tuple[str, ...] = ()
    if not regression:
        all_names = declared or _train_label_names(task_cfg)
    exclude = _names(task_cfg.exclude_labels)
    unknown = [x for x in exclude if x not in all_names]
    if unknown:
        raise UserError(f"task.exclude_labels {unknown} are not classes of {source}: {all_names}")
    label_names = tuple(x for x in all_names if x not in exclude)
    if not regression and not label_names:
        raise UserError(f"task.exclude_labels {exclude} leaves no classes of {all_names}")
    index = {x: i for i, x in enumerate(label_names)}
    limit = int(task_cfg.max_train_examples if split == "train" else task_cfg.max_eval_examples)
    kept: list[tuple[_Row, int | float | None]] = []
    skipped: Counter[str] = Counter()
    for row in rows:
        if not _has_text(row):
            skipped["empty_text"] += 1
            continue
        if row.label is None:
            kept.append((row, None))
        elif regression:
            kept.append((row, _target(row)))
        else:
            name = _class_name(row, all_names, declared=bool(declared))
            if name in exclude:
                skipped[f"excluded:{name}"] += 1
            else:
                kept.append((row, index[name]))
    if not kept:
        raise UserError(f"no examples in {source} (skipped: {dict(skipped) or 'none'})")
    unlabeled = [r for r, _ in kept if r.label is None]
    if len(unlabeled) == len(kept) or (regression and all(y == -1 for _, y in kept)):
        if split != "test":
            raise UserError(f"{source} is unlabeled (every label is -1 or missing): it cannot be the {split} split")
        examples = [TextExample(r.text_a, r.text_b, -1.0 if regression else -1) for r, _ in kept]
    elif unlabeled:
        raise UserError(f"{unlabeled[0].where}: no label (-1) in a labeled split; {len(unlabeled)} such examples")
    else:
        examples = [TextExample(r.text_a, r.text_b, y) for r, y in kept]
    labels = None if regression else [e.label for e in examples]
    examples = subsets.take(examples, limit, subsets.split_seed(split, seed), labels)
    return LabeledSet(examples, label_names, dict(skipped), source)


def label_counts(labeled_set: LabeledSet) -> dict[str, int]:
    """Examples per class name in label order (zeros included); regression or unlabeled sets give one total."""
    examples = labeled_set.examples
    if not labeled_set.label_names:
        return {"examples": len(examples)}
    counts = Counter(int(e.label) for e in examples)
    result = {name: counts.get(i, 0) for i, name in enumerate(labeled_set.label_names)}
    if counts.get(-1):
        result["unlabeled"] = counts[-1]
    return result


# ------------------------------------------------------------------------------------------------------- encoding


def _truncate_longest_first(a: list[int], b: list[int] | None, budget: int) -> tuple[list[int], list[int] | None]:
    """Hugging Face's longest_first: trim the longer side to equal length, then both (b loses the odd token)."""
    if b is None:
        return a[:budget], None
    remove = len(a) + len(b) - budget
    if remove <= 0:
        return a, b
    first = min(abs(len(a) - len(b)), remove)
    second = remove - first
    if len(a) > len(b):
        cut_a, cut_b = first + second // 2, second - second // 2
    else:
        cut_a, cut_b = second // 2, first + second - second // 2
    return a[: len(a) - cut_a], b[: len(b) - cut_b]


def encode(examples: Sequence[TextExample], tokenizer: TextTokenizer, seq_len: int) -> dict[str, np.ndarray]:
    """BERT inputs [CLS] a [SEP] (b [SEP]) padded to seq_len; float labels (regression) stay float32."""
    pairs = any(e.text_b is not None for e in examples)
    if seq_len < (5 if pairs else 3):
        raise UserError(f"seq_len {seq_len} leaves no room for text besides [CLS]/[SEP]")
    n = len(examples)
    input_ids = np.full((n, seq_len), tokenizer.pad_id, np.int32)
    token_type_ids = np.zeros((n, seq_len), np.int32)
    segment_ids = np.zeros((n, seq_len), np.int32)
    positions = np.zeros((n, seq_len), np.int32)
    arange = np.arange(seq_len, dtype=np.int32)
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    for i, example in enumerate(examples):
        a = tokenizer.encode(example.text_a)
        b = tokenizer.encode(example.text_b) if example.text_b is not None else None
        a, b = _truncate_longest_first(a, b, seq_len - (2 if b is None else 3))
        ids = [cls, *a, sep] + ([] if b is None else [*b, sep])
        length, first = len(ids), len(a) + 2
        input_ids[i, :length] = ids
        token_type_ids[i, first:length] = 1
        segment_ids[i, :length] = 1
        positions[i, :length] = arange[:length]
    regression = any(isinstance(e.label, float) for e in examples)
    labels = np.array([e.label for e in examples], np.float32 if regression else np.int32).reshape(n)
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "segment_ids": segment_ids,
            "positions": positions, "labels": labels}
