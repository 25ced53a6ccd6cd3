"""Local text/jsonl sources: skipped lines counted by reason, deterministic splits, clear errors."""

import json

import pytest
import tensorflow as tf

from plm_jax.data.data_config import default_data_config
from plm_jax.data.sources import document_dataset, iter_documents, scan_local_files


def local_cfg(paths, source="text", every_nth=3):
    cfg = default_data_config()
    cfg.update(source=source, paths=tuple(str(p) for p in paths), eval_every_nth=every_nth)
    return cfg


def read(cfg, split):
    return [t.decode("utf-8") for t in document_dataset(cfg, split).as_numpy_iterator()]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(
        b"doc zero\n"
        b"\n"  # empty
        b"   \t \n"  # whitespace only
        b"doc one \xc3\xa9\r\n"
        b"bad \xff\xfe bytes\n"  # not UTF-8
        b"doc two\n"
        b"doc three\n"
        b"doc four"  # no final newline
    )
    return path


def test_text_lines_skipped_and_counted(text_file):
    cfg = local_cfg([text_file])
    stats = scan_local_files(cfg)
    assert (stats.files, stats.documents, stats.empty, stats.non_utf8, stats.malformed) == (1, 5, 2, 1, 0)
    assert (stats.train_documents, stats.eval_documents) == (3, 2)
    assert str(stats) == "1 file, 5 documents (3 train, 2 eval) (skipped 2 empty, 1 non-UTF-8 lines)"
    # Usable document i is in eval iff i % 3 == 0.
    assert read(cfg, "eval") == ["doc zero", "doc three"]
    assert read(cfg, "train") == ["doc one é", "doc two", "doc four"]
    assert list(iter_documents(cfg, "train")) == read(cfg, "train")
    assert list(iter_documents(cfg, "train", limit=2)) == ["doc one é", "doc two"]


def test_jsonl_lines_skipped_and_counted(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = [
        json.dumps({"text": "first", "id": 1}),
        "{not json",
        json.dumps({"other": "no text field"}),
        json.dumps({"text": 42}),
        json.dumps(["a", "list"]),
        json.dumps({"text": "  "}),
        "",
        json.dumps({"text": "second ünïcode\nwith newline"}),
        json.dumps({"text": "third"}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = local_cfg([path], source="jsonl", every_nth=2)
    stats = scan_local_files(cfg)
    assert (stats.documents, stats.empty, stats.non_utf8, stats.malformed) == (3, 2, 0, 4)
    assert read(cfg, "eval") == ["first", "third"]
    assert read(cfg, "train") == ["second ünïcode\nwith newline"]


def test_globs_are_sorted_and_splits_disjoint(tmp_path):
    for name, docs in (("b.txt", ["b0", "b1"]), ("a.txt", ["a0", "a1", "a2"]), ("c.md", ["c0"])):
        (tmp_path / name).write_text("\n".join(docs) + "\n")
    cfg = local_cfg([tmp_path / "*.txt"], every_nth=2)
    train, evaluation = read(cfg, "train"), read(cfg, "eval")
    assert evaluation == ["a0", "a2", "b1"] and train == ["a1", "b0"]
    assert scan_local_files(cfg).files == 2
    assert read(cfg, "train") == train, "not deterministic"


def test_missing_files_raise_with_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found: .*missing.txt"):
        document_dataset(local_cfg([tmp_path / "missing.txt"]), "train")
    with pytest.raises(FileNotFoundError, match=r"no data file matches .*\*.jsonl"):
        scan_local_files(local_cfg([tmp_path / "*.jsonl"]))
    with pytest.raises(ValueError, match="paths is empty"):
        scan_local_files(local_cfg([]))


def test_unusable_corpus_raises(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"\n  \n\xff\n")
    with pytest.raises(ValueError, match=r"no usable documents in .*empty.txt: 2 empty, 1 non-UTF-8"):
        scan_local_files(local_cfg([path]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="no usable documents"):
        read(local_cfg([path]), "train")  # the stream fails loudly instead of being silently empty
    one = tmp_path / "one.txt"
    one.write_text("only document\n")
    with pytest.raises(ValueError, match="the train split .* is empty"):
        scan_local_files(local_cfg([one]))


def test_bad_arguments(text_file):
    with pytest.raises(ValueError, match="split"):
        document_dataset(local_cfg([text_file]), "validation")
    with pytest.raises(ValueError, match="eval_every_nth"):
        document_dataset(local_cfg([text_file], every_nth=1), "train")
    with pytest.raises(ValueError, match="source"):
        document_dataset(local_cfg([text_file], source="csv"), "train")
