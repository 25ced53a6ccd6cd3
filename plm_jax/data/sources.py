"""Text sources: documents as a deterministic tf.data.Dataset of scalar tf.string, from TFDS or local files.

Local files hold one document per line ("text") or one JSON object per line ("jsonl"). Unusable lines (empty,
not UTF-8, malformed JSON) are skipped and counted rather than fatal: one bad line should not stop a long run,
but the counts are reported so that a broken corpus is noticed.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import ml_collections
import tensorflow as tf

from plm_jax.errors import DataUnavailableError, UserError

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

SPLITS = ("train", "eval")
SOURCES = ("tfds", "text", "jsonl")


@dataclasses.dataclass(frozen=True)
class SourceStats:
    """Counts from one pass over local files; skipped lines are counted by reason."""

    files: int
    documents: int
    empty: int
    non_utf8: int
    malformed: int
    train_documents: int
    eval_documents: int

    def summary(self) -> str:
        """One line, e.g. "2 files, 10,233 documents (9,719 train, 514 eval) (skipped 3 empty lines)"."""
        skipped = [f"{n:,} {what}" for n, what in ((self.empty, "empty"), (self.non_utf8, "non-UTF-8"),
                                                   (self.malformed, "malformed")) if n]
        line = f"{self.files} file{'s' * (self.files != 1)}, {self.documents:,} documents"
        line += f" ({self.train_documents:,} train, {self.eval_documents:,} eval)"
        if skipped:
            n_skipped = self.empty + self.non_utf8 + self.malformed
            line += f" (skipped {', '.join(skipped)} line{'s' * (n_skipped > 1)})"
        return line

    __str__ = summary


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, got {split!r}")


def _check_local_config(data_cfg: ml_collections.ConfigDict) -> None:
    if data_cfg.source not in SOURCES:
        raise UserError(f"data.source must be one of {SOURCES}, got {data_cfg.source!r}")
    if data_cfg.source != "tfds" and int(data_cfg.eval_every_nth) < 2:
        every_nth = data_cfg.eval_every_nth
        raise UserError(f"data.eval_every_nth must be >= 2 (1 leaves no train data), got {every_nth}")


def expand_paths(paths: str | Sequence[str]) -> list[str]:
    """Files named by paths or glob patterns, in order, each pattern's matches sorted, duplicates dropped."""
    patterns = [paths] if isinstance(paths, str) else list(paths)
    if not patterns:
        raise UserError("data.paths is empty: give the local text/jsonl files to read")
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        if glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
            if not matches:
                raise FileNotFoundError(f"no data file matches {pattern}")
        elif os.path.isfile(pattern):
            matches = [pattern]
        else:
            raise FileNotFoundError(f"data file not found: {pattern}")
        files.extend(m for m in matches if m not in files)
    return files


def _parse_line(raw: bytes, source: str, field: str) -> tuple[str | None, str]:
    """(document, "") for a usable line, else (None, reason) with reason in empty/non_utf8/malformed."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "non_utf8"
    if not line.strip():
        return None, "empty"
    if source == "text":
        return line.rstrip("\r\n"), ""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None, "malformed"
    text = record.get(field) if isinstance(record, dict) else None
    if not isinstance(text, str):
        return None, "malformed"
    return (text, "") if text.strip() else (None, "empty")


def _iter_local(files: Sequence[str], source: str, field: str, counts: dict[str, int] | None = None):
    """Yields (document index, text) for every usable line of the files, counting skipped lines by reason."""
    index = 0
    for path in files:
        with open(path, "rb") as f:
            for raw in f:
                text, reason = _parse_line(raw, source, field)
                if text is None:
                    if counts is not None:
                        counts[reason] += 1
                    continue
                yield index, text
                index += 1


def _in_split(index: int, split: str, every_nth: int) -> bool:
    return (index % every_nth == 0) == (split == "eval")


def _local_reader(data_cfg: ml_collections.ConfigDict, split: str) -> Callable[[], Iterator[str]]:
    """A function that iterates the split's documents; files are expanded and settings read once, now."""
    files = expand_paths(data_cfg.paths)
    source, field, every_nth = data_cfg.source, data_cfg.jsonl_field, int(data_cfg.eval_every_nth)

    def read() -> Iterator[str]:
        for index, text in _iter_local(files, source, field):
            if _in_split(index, split, every_nth):
                yield text

    return read


def scan_local_files(data_cfg: ml_collections.ConfigDict) -> SourceStats:
    """One fast Python pass over local files: counts, and a clear ValueError if a split has no documents."""
    _check_local_config(data_cfg)
    if data_cfg.source == "tfds":
        raise UserError("scan_local_files needs data.source 'text' or 'jsonl', got 'tfds'")
    files = expand_paths(data_cfg.paths)
    counts = {"empty": 0, "non_utf8": 0, "malformed": 0}
    every_nth = int(data_cfg.eval_every_nth)
    documents = n_eval = 0
    for index, _ in _iter_local(files, data_cfg.source, data_cfg.jsonl_field, counts):
        documents += 1
        n_eval += _in_split(index, "eval", every_nth)
    stats = SourceStats(len(files), documents, counts["empty"], counts["non_utf8"], counts["malformed"],
                        documents - n_eval, n_eval)
    where = files[0] if len(files) == 1 else f"{len(files)} files ({files[0]}, ...)"
    if documents == 0:
        raise UserError(f"no usable documents in {where}: {stats.empty} empty, {stats.non_utf8} non-UTF-8, "
                         f"{stats.malformed} malformed lines")
    for split, n in (("train", stats.train_documents), ("eval", stats.eval_documents)):
        if n == 0:
            raise UserError(f"the {split} split of {where} is empty: {documents} usable documents with "
                             f"eval_every_nth={every_nth}")
    return stats


def _local_dataset(data_cfg: ml_collections.ConfigDict, split: str) -> tf.data.Dataset:
    read = _local_reader(data_cfg, split)

    def generate() -> Iterator[bytes]:
        empty = True
        for text in read():
            empty = False
            yield text.encode("utf-8")
        if empty:  # otherwise repeat() would turn an empty corpus into a silent empty stream
            raise UserError(f"no usable documents for split {split!r} in {data_cfg.paths}")

    return tf.data.Dataset.from_generator(generate, output_signature=tf.TensorSpec([], tf.string))


def _tfds_split(data_cfg: ml_collections.ConfigDict, split: str) -> str:
    return data_cfg.tfds_train_split if split == "train" else data_cfg.tfds_eval_split


def tfds_builder(data_cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """The TFDS builder named by the config, prepared if needed; clear errors instead of catalog hangs."""
    import tensorflow_datasets as tfds

    import plm_jax.data.corpora  # noqa: F401  (registers the packaged corpora with TFDS)

    name, data_dir = data_cfg.tfds_name, data_cfg.tfds_data_dir or None
    base = re.split(r"[/:]", name)[0]
    if ":" not in name and base not in tfds.list_builders(with_community_datasets=False):
        # Unknown code: only a dataset already prepared on disk can be read; never ask the community index.
        try:
            return tfds.builder(name, data_dir=data_dir)
        except Exception as e:  # TFDS raises several kinds; one clear line is what users need
            raise UserError(f"TFDS dataset {name!r} not found (no builder and no prepared files in "
                             f"{data_dir or 'the default data dir'}): {type(e).__name__}") from e
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:
        raise UserError(f"cannot construct TFDS dataset {name!r}: {e}") from e
    if not builder.is_prepared():
        logging.getLogger(__name__).info(
            "preparing TFDS dataset %s in %s (downloads its source; offline this can hang for minutes)",
            name, builder.data_dir)
        try:
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        except Exception as e:
            raise DataUnavailableError(f"cannot download and prepare TFDS dataset {name!r} in {builder.data_dir}: "
                               f"{type(e).__name__}: {e}") from e
    return builder


def _tfds_dataset(data_cfg: ml_collections.ConfigDict, split: str) -> tf.data.Dataset:
    import tensorflow_datasets as tfds

    builder = tfds_builder(data_cfg)
    feature = data_cfg.tfds_text_feature
    features = builder.info.features
    if feature not in features:
        raise UserError(f"TFDS dataset {data_cfg.tfds_name!r} has no feature {feature!r}; "
                         f"available: {sorted(features.keys())}")
    if features[feature].tf_dtype != tf.string or tuple(features[feature].shape) != ():
        raise UserError(f"TFDS feature {data_cfg.tfds_name}/{feature} is not scalar text "
                         f"({features[feature].tf_dtype.name}, shape {features[feature].shape})")
    tfds_split = _tfds_split(data_cfg, split)
    if re.fullmatch(r"\w+", tfds_split) and tfds_split not in builder.info.splits:
        raise UserError(f"TFDS dataset {data_cfg.tfds_name!r} has no split {tfds_split!r}; "
                         f"available: {sorted(builder.info.splits.keys())}")
    if tfds_split in builder.info.splits and builder.info.splits[tfds_split].num_examples == 0:
        raise UserError(f"TFDS dataset {data_cfg.tfds_name!r} split {tfds_split!r} is empty")
    read_config = tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1, try_autocache=False)
    ds = builder.as_dataset(split=tfds_split, shuffle_files=False, read_config=read_config)
    ds = ds.map(lambda example: example[feature], num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.filter(lambda text: tf.strings.length(tf.strings.strip(text)) > 0)


def document_dataset(data_cfg: ml_collections.ConfigDict, split: str) -> tf.data.Dataset:
    """Documents of a split ("train" or "eval") as scalar tf.string, always in the same order."""
    _check_split(split)
    _check_local_config(data_cfg)
    if data_cfg.source == "tfds":
        return _tfds_dataset(data_cfg, split)
    return _local_dataset(data_cfg, split)


def iter_documents(
    data_cfg: ml_collections.ConfigDict, split: str, limit: int | None = None
) -> Iterator[str]:
    """The documents of document_dataset as Python strings (for tokenizer training); at most limit of them."""
    _check_split(split)
    _check_local_config(data_cfg)
    if data_cfg.source == "tfds":
        texts = (t.decode("utf-8") for t in document_dataset(data_cfg, split).as_numpy_iterator())
    else:
        texts = _local_reader(data_cfg, split)()
    for n, text in enumerate(texts):
        if limit is not None and n >= limit:
            return
        yield text
