"""Token classification end to end: CoNLL/JSONL loading, labels on each word's first sub-token, entity-level
metrics checked against the `seqeval` package, training on a small generated NER set, predict, resume."""

import json
import os
import random

import numpy as np
import pytest

from plm_jax import inference
from plm_jax.config_base import tagging_config
from plm_jax.data.text_tokenizer import load_text_tokenizer
from plm_jax.data.tokenizer import train_tokenizer
from plm_jax.evaluate.entities import entity_metrics
from plm_jax.run import train
from plm_jax.tasks import tagging

seqeval_metrics = pytest.importorskip("seqeval.metrics")
VOCAB = 80

PEOPLE = ["Anna Berg", "Carlos Diaz", "Mei Lin", "Omar", "Sofia Rossi", "Tom Hill", "Yuki Sato", "Lars"]
PLACES = ["Paris", "New York", "Lagos", "Lake Geneva", "Oslo", "Rio de Janeiro", "Cairo", "Lima"]
ORGS = ["Acme Corp", "United Bank", "Nova Labs", "the Red Cross", "Orbit Air", "Delta Foods"]
TEMPLATES = ["{PER} flew to {LOC} on Monday .", "{ORG} hired {PER} last year .",
             "the {ORG} office in {LOC} is closed .", "{PER} met {PER} in {LOC} .",
             "a storm hit {LOC} and {ORG} sent help .", "{PER} works for {ORG} ."]


def tagged_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    words, tags = [], []
    for part in rng.choice(TEMPLATES).split():
        if part.startswith("{"):
            kind = part[1:4]
            name = rng.choice({"PER": PEOPLE, "LOC": PLACES, "ORG": ORGS}[kind]).split()
            if kind == "ORG" and name[0] == "the":  # "the" is not part of the name
                words.append("the")
                tags.append("O")
                name = name[1:]
            words += name
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1)
        else:
            words.append(part)
            tags.append("O")
    return words, tags


def write_conll(path, sentences) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("-DOCSTART- -X- -X- O\n\n")
        for words, tags in sentences:
            f.writelines(f"{w} NN O {t}\n" for w, t in zip(words, tags))
            f.write("\n")
    return str(path)


@pytest.fixture(scope="module")
def ner_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("ner")
    rng = random.Random(0)
    splits = {name: [tagged_sentence(rng) for _ in range(n)] for name, n in (("train", 480), ("eval", 96),
                                                                             ("test", 96))}
    train_tokenizer([" ".join(w) for w, _ in splits["train"]] * 3, VOCAB, base / "spm.model")
    for name, sentences in splits.items():
        write_conll(base / f"{name}.conll", sentences)
    with open(base / "test.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"tokens": w, "tags": t}) + "\n" for w, t in splits["test"])
    return base, splits


def tiny_config(base, **train):
    c = tagging_config()
    c.tokenizer = str(base / "spm.model")
    c.model.update(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, max_len=64)
    c.task.update(train_file=str(base / "train.conll"), eval_file=str(base / "eval.conll"),
                  test_file=str(base / "test.jsonl"), seq_len=64)
    c.train.update(batch_size=32, epochs=20, lr=3e-3, warmup_frac=0.1, log_every=15, async_checkpoints=False)
    c.train.update(**train)
    return c


def test_entity_metrics_equal_seqeval_on_random_tags():
    rng = random.Random(1)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-LOC", "S-ORG", "I-ORG", "B-MISC"]
    for _ in range(500):
        true = [[rng.choice(tags) for _ in range(rng.randint(1, 9))] for _ in range(rng.randint(1, 4))]
        pred = [[rng.choice(tags) if rng.random() < 0.5 else t for t in s] for s in true]
        m = entity_metrics(true, pred)
        assert m["precision"] == pytest.approx(seqeval_metrics.precision_score(true, pred, zero_division=0))
        assert m["recall"] == pytest.approx(seqeval_metrics.recall_score(true, pred, zero_division=0))
        assert m["f1"] == pytest.approx(seqeval_metrics.f1_score(true, pred, zero_division=0))


def test_conll_and_jsonl_load_the_same_sentences_and_label_first_sub_tokens(ner_files):
    base, splits = ner_files
    cfg = tiny_config(base).task
    conll = tagging.read_local(str(base / "test.conll"), cfg)
    jsonl = tagging.read_local(str(base / "test.jsonl"), cfg)
    assert [(s.words, s.tags) for s in conll] == [(s.words, s.tags) for s in jsonl]
    assert [list(s.words) for s in conll] == [w for w, _ in splits["test"]]
    names = tagging.label_names_of(cfg, conll, ())
    assert names[0] == "O" and set(names) == {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"}
    tok = load_text_tokenizer(str(base / "spm.model"))
    arrays = tagging.encode(conll, tok, 64, names)
    for i, s in enumerate(conll[:20]):  # an independent count: [CLS], then each word's pieces in turn
        starts = np.cumsum([1] + [len(tok.encode(w)) for w in s.words])[:-1]
        assert np.flatnonzero(arrays["label_weights"][i]).tolist() == starts.tolist()
        assert [names[k] for k in arrays["labels"][i, starts]] == list(s.tags)
        assert arrays["input_ids"][i, 0] == tok.cls_id and arrays["segment_ids"][i].sum() == starts[-1] + len(
            tok.encode(s.words[-1])) + 1


def test_bad_tagging_input_is_named(tmp_path, ner_files):
    base, _ = ner_files
    cfg = tiny_config(base).task
    bad = tmp_path / "bad.conll"
    bad.write_text("Anna B-PER\nBerg\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.conll:2: expected a word and a tag"):
        tagging.read_local(str(bad), cfg)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tokens": ["a", "b"], "tags": ["O"]}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: 'tags' must be a list with one tag per token"):
        tagging.read_local(str(bad), cfg)
    with pytest.raises(ValueError, match="unknown extension"):
        tagging.read_local(str(base / "spm.model"), cfg)


@pytest.mark.slow
def test_tagging_learns_the_entities_and_predicts(ner_files, tmp_path):
    base, splits = ner_files
    workdir = str(tmp_path / "ner")
    results = train(tiny_config(base), workdir)
    assert results["task"] == "tagging" and results["main_metric"] == "f1"
    assert results["best"]["metrics"]["f1"] > 0.9, results["best"]
    assert results["test"]["f1"] > 0.9 and 0 < results["test"]["f1_PER"] <= 1
    # predict on the test words; seqeval on those predictions gives the test F1 the run reported
    words = tmp_path / "words.txt"
    words.write_text("".join(" ".join(w) + "\n" for w, _ in splits["test"]), encoding="utf-8")
    assert inference.predict(workdir, str(words), str(tmp_path / "tags.jsonl")) == len(splits["test"])
    predicted = [json.loads(line)["tags"] for line in open(tmp_path / "tags.jsonl", encoding="utf-8")]
    gold = [t for _, t in splits["test"]]
    assert seqeval_metrics.f1_score(gold, predicted) == pytest.approx(results["test"]["f1"])
    assert inference.evaluate(workdir)["test"]["f1"] == pytest.approx(results["test"]["f1"])
    assert os.path.isfile(os.path.join(workdir, "model.json"))
