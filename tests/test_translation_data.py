"""Parallel text for translation: TSV/JSONL/two-file and TFDS loading, one-line errors, seq2seq encoding."""

import json
import logging
from typing import ClassVar

import numpy as np
import pytest
import tensorflow_datasets as tfds

from plm_jax.data.text_tokenizer import SentencePieceTextTokenizer
from plm_jax.data.tokenizer import train_tokenizer
from plm_jax.tasks.translation import (
    TranslationPair,
    default_translation_config,
    encode_pairs,
    iter_tokenizer_text,
    load_pairs,
    validate_translation_config,
)
from tests import corpus


def to_de(text: str) -> str:
    """A toy "German": every word reversed, so target tokens differ from source tokens."""
    return " ".join(w[::-1] for w in text.split())


def synthetic_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(s, to_de(s)) for s in (corpus.sentence(rng) for _ in range(n))]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [t for pair in synthetic_pairs(600) for t in pair]
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    train_tokenizer(texts, 80, path)
    return SentencePieceTextTokenizer(str(path))


def cfg_with(**overrides):
    cfg = default_translation_config()
    cfg.update(overrides)
    return cfg


def write(path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8"))
    return str(path)


def test_default_config_keys():
    cfg = default_translation_config()
    assert sorted(cfg.keys()) == sorted(
        ["kind", "source", "tfds_name", "tfds_data_dir", "train_split", "eval_split", "test_split", "source_lang",
         "target_lang", "train_file", "eval_file", "test_file", "source_field", "target_field", "max_source_len",
         "max_target_len", "on_long", "max_train_examples", "max_eval_examples", "encoding", "character_coverage",
         "byte_fallback"])
    assert (cfg.kind, cfg.source, cfg.on_long, cfg.max_source_len, cfg.max_target_len) == (
        "translation", "local", "truncate", 128, 128)
    validate_translation_config(cfg)


@pytest.mark.parametrize("overrides, message", [
    ({"kind": "classification"}, "task.kind must be 'translation'"),
    ({"source": "hub"}, "task.source must be one of"),
    ({"target_lang": ""}, "task.source_lang and task.target_lang must be set"),
    ({"source": "tfds", "target_lang": "en"}, "both 'en': TFDS features are keyed by language"),
    ({"max_source_len": 1}, r"task.max_source_len must be >= 2"),
    ({"max_target_len": 0}, r"task.max_target_len must be >= 2"),
    ({"on_long": "drop"}, "task.on_long must be one of"),
    ({"max_eval_examples": -1}, "task.max_eval_examples must be >= 0"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        validate_translation_config(cfg_with(**overrides))


# ---------------------------------------------------------------------------------------------------- local files


def test_tsv(tmp_path):
    path = write(tmp_path / "train.tsv", 'en\tde\r\nHe said "hi".\tEr sagte "hallo".\r\na b\tc d\n\n\n')
    pairs = load_pairs(cfg_with(train_file=path), "train")
    assert pairs == [TranslationPair('He said "hi".', 'Er sagte "hallo".', f"{path}:2"),
                     TranslationPair("a b", "c d", f"{path}:3")]
    plain = write(tmp_path / "plain.tsv", "x\ty\nsource\ttarget\n")  # a header only counts on line 1
    assert [(p.source, p.target) for p in load_pairs(cfg_with(eval_file=plain), "eval")] == [
        ("x", "y"), ("source", "target")]
    assert len(load_pairs(cfg_with(eval_file=plain, max_eval_examples=1), "eval")) == 1


def test_jsonl(tmp_path):
    records = [{"en": "one", "de": "eins", "id": 1}, {"translation": {"en": "two", "de": "zwei"}}]
    path = write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in records[:1]) + "\n\n"
                 + json.dumps(records[1]) + "\n")
    assert load_pairs(cfg_with(test_file=path), "test") == [TranslationPair("one", "eins", f"{path}:1"),
                                                            TranslationPair("two", "zwei", f"{path}:3")]
    named = write(tmp_path / "b.jsonl", json.dumps({"src": "drei", "tgt": "three"}) + "\n")
    cfg = cfg_with(train_file=named, source_lang="de", target_lang="en", source_field="src", target_field="tgt")
    assert [(p.source, p.target) for p in load_pairs(cfg, "train")] == [("drei", "three")]


def test_two_files(tmp_path):
    src = write(tmp_path / "a.en", "one\ntwo\nthree\n")
    tgt = write(tmp_path / "a.de", "eins\nzwei\ndrei")  # no final newline: still three lines
    pairs = load_pairs(cfg_with(train_file=f"{src}::{tgt}"), "train")
    assert [(p.source, p.target) for p in pairs] == [("one", "eins"), ("two", "zwei"), ("three", "drei")]
    assert pairs[2].where == f"{src}::{tgt}:3"


def test_local_errors(tmp_path):
    def error(file: str, message: str, **overrides) -> None:
        with pytest.raises(ValueError, match=message):
            load_pairs(cfg_with(train_file=file, **overrides), "train")

    tsv = tmp_path / "t.tsv"
    error(write(tsv, "a\tb\n \tc\n"), rf"^{tsv}:2: empty source")
    error(write(tsv, "a\tb\nc\t  \n"), rf"^{tsv}:2: empty target")
    error(write(tsv, "a\tb\n\nc\td\n"), rf"^{tsv}:2: 1 tab-separated fields, expected 2")
    error(write(tsv, "a\tb\tc\n"), rf"^{tsv}:1: 3 tab-separated fields")
    error(write(tsv, "a\tb\nc\td\xe9\n".encode("latin-1")), rf"^{tsv} line 2: not UTF-8 .* at offset 7\)")
    jsonl = tmp_path / "j.jsonl"
    error(write(jsonl, '{"en": "a", "de": ""}\n'), rf"^{jsonl}:1: empty target \('de'\)")
    error(write(jsonl, '{"en": "a", "de": null}\n'), rf"^{jsonl}:1: empty target")
    error(write(jsonl, '{"en": "a", "fr": "b"}\n'), rf"^{jsonl}:1: no target field 'de'; available: \['en', 'fr'\]")
    error(write(jsonl, '{"en": "a", "de": 3}\n'), rf"^{jsonl}:1: target field 'de' is not text: 3")
    error(write(jsonl, '{"en": "a"\n'), rf"^{jsonl}:1: malformed JSON")
    error(str(jsonl), "fields are both 'x'", source_field="x", target_field="x")
    src, tgt = write(tmp_path / "a.en", "one\ntwo\nthree\n"), write(tmp_path / "a.de", "eins\nzwei\n")
    error(f"{src}::{tgt}", rf"^line counts differ: {src} has 3 lines, {tgt} has 2; the files must be line-aligned")
    write(tmp_path / "a.de", "eins\n\ndrei\n")
    error(f"{src}::{tgt}", rf"^{tgt}:2: empty target line")
    error(write(tmp_path / "x.csv", "a,b\n"), r"x.csv: unknown format")
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        load_pairs(cfg_with(train_file=str(tmp_path / "missing.tsv")), "train")
    with pytest.raises(ValueError, match="task.eval_file is empty"):
        load_pairs(cfg_with(train_file=str(tsv)), "eval")
    error(write(tmp_path / "e.tsv", "\n\n"), "no translation pairs in the train split")
    with pytest.raises(ValueError, match="split must be one of"):
        load_pairs(cfg_with(train_file=str(tsv)), "dev")


def test_iter_tokenizer_text(tmp_path):
    pairs = synthetic_pairs(5)
    path = write(tmp_path / "train.tsv", "".join(f"{s}\t{t}\n" for s, t in pairs))
    texts = list(iter_tokenizer_text(cfg_with(train_file=path)))
    assert texts == [t for pair in pairs for t in pair]
    assert len(list(iter_tokenizer_text(cfg_with(train_file=path, max_train_examples=2)))) == 4


# ------------------------------------------------------------------------------------------------------- encoding


def test_encode_pairs_by_hand(tokenizer):
    pairs = [TranslationPair("the cat sees the dog .", to_de("the cat sees the dog ."), "f:1"),
             TranslationPair("the old king", to_de("the old king"), "f:2")]
    cfg = cfg_with(max_source_len=16, max_target_len=20)
    out = encode_pairs(pairs, tokenizer, cfg, "train")
    assert {k: v.shape for k, v in out.items()} == {
        "encoder_input_ids": (2, 16), "encoder_segment_ids": (2, 16), "encoder_positions": (2, 16),
        "decoder_input_ids": (2, 20), "decoder_target_ids": (2, 20), "decoder_segment_ids": (2, 20),
        "decoder_positions": (2, 20), "decoder_weights": (2, 20), "truncated": (2,)}
    assert out["decoder_weights"].dtype == np.float32 and out["encoder_input_ids"].dtype == np.int32
    for i, pair in enumerate(pairs):
        src, tgt = tokenizer.encode(pair.source), tokenizer.encode(pair.target)
        assert 3 < len(src) < 15 and 3 < len(tgt) < 19 and tokenizer.sep_id not in src + tgt
        n, m = len(src) + 1, len(tgt) + 1
        assert out["encoder_input_ids"][i].tolist() == src + [3] + [0] * (16 - n)
        assert out["encoder_segment_ids"][i].tolist() == [1] * n + [0] * (16 - n)
        assert out["encoder_positions"][i].tolist() == list(range(n)) + [0] * (16 - n)
        assert out["decoder_input_ids"][i].tolist() == [2] + tgt + [0] * (20 - m)
        assert out["decoder_target_ids"][i].tolist() == tgt + [3] + [0] * (20 - m)
        assert out["decoder_segment_ids"][i].tolist() == [1] * m + [0] * (20 - m)
        assert out["decoder_positions"][i].tolist() == list(range(m)) + [0] * (20 - m)
        assert out["decoder_weights"][i].tolist() == [1.0] * m + [0.0] * (20 - m)
        assert tokenizer.decode(out["decoder_target_ids"][i, : m - 1].tolist()) == pair.target
    assert out["truncated"].tolist() == [0, 0]


def test_over_long_pairs(tokenizer, tmp_path, caplog):
    long = "the small cat sees the old dog near the river because the cat is happy ."
    path = write(tmp_path / "train.tsv", f"the dog\t{to_de('the dog')}\n{long}\t{to_de('the dog')}\n"
                 f"the cat\t{to_de(long)}\n")
    cfg = cfg_with(train_file=path, max_source_len=8, max_target_len=8, on_long="error")
    pairs = load_pairs(cfg, "train")
    n_long = len(tokenizer.encode(long)) + 1
    with pytest.raises(ValueError, match=rf"^{path}:2: source is {n_long} tokens with EOS, longer than "
                                         rf"task.max_source_len=8 \(set task.on_long='truncate'"):
        encode_pairs(pairs, tokenizer, cfg, "train")
    with pytest.raises(ValueError, match=rf"^{path}:3: target is \d+ tokens with BOS, longer than "
                                         rf"task.max_target_len=8"):
        encode_pairs(pairs[2:], tokenizer, cfg, "train")
    cfg.on_long = "truncate"
    with caplog.at_level(logging.WARNING, logger="plm_jax.tasks.translation"):
        out = encode_pairs(pairs, tokenizer, cfg, "eval")
    assert out["truncated"].tolist() == [0, 1, 1]
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert warnings == ["eval split: truncated 2 of 3 translation pairs to max_source_len=8 / max_target_len=8"]
    assert out["encoder_input_ids"][1].tolist() == tokenizer.encode(long)[:7] + [3]
    assert out["decoder_input_ids"][2].tolist() == [2] + tokenizer.encode(to_de(long))[:7]
    assert out["decoder_target_ids"][2].tolist() == tokenizer.encode(to_de(long))[:7] + [3]
    assert out["decoder_weights"][2].sum() == 8


# ----------------------------------------------------------------------------------------------------------- TFDS

TFDS_TRAIN = [("one", "eins"), ("two", "zwei"), ("three", "drei"), ("", "leer")]
TFDS_VALIDATION = [("four", "vier")]


class PlmTestTinyTranslation(tfds.core.GeneratorBasedBuilder):
    """A de-en dataset shaped like wmt14_translate (a Translation feature keyed by language)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "test data"}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.Translation(languages=("de", "en")))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(TFDS_TRAIN), "validation": self._generate_examples(TFDS_VALIDATION)}

    def _generate_examples(self, pairs):
        for i, (en, de) in enumerate(pairs):
            yield i, {"en": en, "de": de}


def test_tfds(tmp_path, caplog):
    cfg = cfg_with(source="tfds", tfds_name="plm_test_tiny_translation", tfds_data_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="plm_jax.tasks.translation"):
        train = load_pairs(cfg, "train")
    assert sorted((p.source, p.target) for p in train) == sorted(TFDS_TRAIN[:3])  # TFDS orders by key hash
    assert all(p.where.startswith("plm_test_tiny_translation:train example ") for p in train)
    assert any("skipped 1 of 4 pairs with an empty side" in r.getMessage() for r in caplog.records)
    assert [(p.source, p.target) for p in load_pairs(cfg, "eval")] == TFDS_VALIDATION
    reverse = cfg_with(**{**cfg.to_dict(), "source_lang": "de", "target_lang": "en"})
    assert [(p.source, p.target) for p in load_pairs(reverse, "eval")] == [("vier", "four")]
    with pytest.raises(ValueError, match=r"has no feature 'fr' .*available: \['de', 'en'\]"):
        load_pairs(cfg_with(**{**cfg.to_dict(), "target_lang": "fr"}), "train")
    with pytest.raises(ValueError, match=r"has no split 'test'"):
        load_pairs(cfg, "test")
