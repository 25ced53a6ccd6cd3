"""Extractive QA: SQuAD loading and its errors, sliding-window features, span post-processing (both tokenizers)."""

import json

import numpy as np
import pytest

from plm_jax.data.text_tokenizer import SentencePieceTextTokenizer, WordPieceTextTokenizer
from plm_jax.data.tokenizer import train_tokenizer
from plm_jax.evaluate.squad import squad_metrics
from plm_jax.tasks.qa import QAExample, load_squad_json, load_squad_tfds, make_features
from plm_jax.tasks.qa_postprocess import postprocess
from tests import corpus

PLACES = ("near the river", "in the city", "at the market", "under the tree", "on the hill")
SEQ_LEN, DOC_STRIDE, MAX_QUERY = 64, 16, 10


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    path = tmp_path_factory.mktemp("sp") / "tokenizer.model"
    train_tokenizer(corpus.documents(300), 60, path)  # tiny vocabulary: words split into several pieces
    return SentencePieceTextTokenizer(str(path))


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
    words = sorted(set(" ".join(corpus.documents(100)).split()) | {"what", "where", "who", "?"})
    path = tmp_path_factory.mktemp("wp") / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n", encoding="utf-8")
    return WordPieceTextTokenizer(str(path))


@pytest.fixture(params=["sentencepiece", "wordpiece"])
def tokenizer(request):
    return request.getfixturevalue(request.param)


def long_example(qid: str, seed: int, n_sentences: int = 8) -> QAExample:
    """A context of several sentences whose answer is the place phrase of the last one (so in a later window)."""
    rng = np.random.default_rng(seed)
    context = " ".join(corpus.sentence(rng) for _ in range(n_sentences))
    start = max(context.rfind(p) for p in PLACES)
    text = next(p for p in PLACES if context.startswith(p, start))
    return QAExample(qid, "where does the cat go ?", context, [(text, start)])


def features_for(examples, tok, **overrides):
    kwargs = {"seq_len": SEQ_LEN, "doc_stride": DOC_STRIDE, "max_query_len": MAX_QUERY, **overrides}
    return make_features(examples, tok, **kwargs)


def gold_logits(features, rng):
    """Small noise everywhere; 10 at the gold start/end of the windows that hold the answer."""
    start = rng.normal(size=features.input_ids.shape)
    end = rng.normal(size=features.input_ids.shape)
    rows = np.flatnonzero(features.start_positions > 0)
    start[rows, features.start_positions[rows]] = 10.0
    end[rows, features.end_positions[rows]] = 10.0
    return start, end


def test_windows_layout_and_gold_recovery(tokenizer):
    examples = [long_example("a", 0), long_example("b", 1, n_sentences=2), long_example("c", 2)]
    f = features_for(examples, tokenizer)
    n = len(f)
    assert f.input_ids.shape == f.token_type_ids.shape == f.segment_ids.shape == f.positions.shape == (n, SEQ_LEN)
    assert f.offsets.shape == (n, SEQ_LEN, 2) and f.start_positions.shape == f.example_index.shape == (n,)
    assert all(a.dtype == np.int32 for a in vars(f).values())
    question = tokenizer.encode("where does the cat go ?")[:MAX_QUERY]
    context_start = len(question) + 2
    for row in range(n):
        length = int(f.segment_ids[row].sum())
        ids = f.input_ids[row]
        assert ids[0] == tokenizer.cls_id and ids[context_start - 1] == tokenizer.sep_id
        assert ids[1:context_start - 1].tolist() == question and ids[length - 1] == tokenizer.sep_id
        assert (ids[length:] == tokenizer.pad_id).all() and (f.segment_ids[row, :length] == 1).all()
        assert f.positions[row].tolist() == list(range(length)) + [0] * (SEQ_LEN - length)
        assert f.token_type_ids[row].tolist() == [0] * context_start + [1] * (length - context_start) + [0] * (
            SEQ_LEN - length)
        is_context = f.offsets[row, :, 0] >= 0
        assert is_context.tolist() == [context_start <= i < length - 1 for i in range(SEQ_LEN)]
        assert (f.offsets[row][~is_context] == -1).all()
    for index, ex in enumerate(examples):
        rows = np.flatnonzero(f.example_index == index)
        ids, offsets = tokenizer.encode_with_offsets(ex.context)
        windows = [f.offsets[r][f.offsets[r, :, 0] >= 0].tolist() for r in rows]
        # Consecutive windows overlap by exactly doc_stride tokens, and together they hold the whole context.
        for left, right in zip(windows, windows[1:]):
            assert left[-DOC_STRIDE:] == right[:DOC_STRIDE]
        assert windows[0] + sum((w[DOC_STRIDE:] for w in windows[1:]), []) == [list(o) for o in offsets]
        text, start_char = ex.answers[0]
        holding = rows[f.start_positions[rows] > 0]
        assert len(holding) >= 1 and (f.end_positions[holding] >= f.start_positions[holding]).all()
        for r in holding:
            s, e = f.start_positions[r], f.end_positions[r]
            assert ex.context[f.offsets[r, s, 0] : f.offsets[r, e, 1]] == text
        if index != 1:
            assert len(rows) >= 3 and rows[0] not in holding  # the answer is in a later window
            assert (f.start_positions[rows[0]], f.end_positions[rows[0]]) == (0, 0)
    predictions, nbest = postprocess(examples, f, *gold_logits(f, np.random.default_rng(0)))
    assert predictions == {ex.qid: ex.answers[0][0] for ex in examples}
    for ex in examples:
        best = nbest[ex.qid]
        assert best[0]["start"] == ex.answers[0][1] and best[0]["score"] > 19
        assert [b["score"] for b in best] == sorted((b["score"] for b in best), reverse=True)
        assert len(best) <= 20 and sum(b["probability"] for b in best) == pytest.approx(1.0)
    gold = {ex.qid: [a for a, _ in ex.answers] for ex in examples}
    assert squad_metrics(predictions, gold)["exact_match"] == 100.0


def test_unanswerable_v2(tokenizer):
    impossible = QAExample("no", "who is the king ?", long_example("x", 3).context, [], is_impossible=True)
    examples = [long_example("yes", 4), impossible]
    f = features_for(examples, tokenizer)
    rows = np.flatnonzero(f.example_index == 1)
    assert len(rows) > 1 and (f.start_positions[rows] == 0).all() and (f.end_positions[rows] == 0).all()
    start, end = gold_logits(f, np.random.default_rng(1))
    start[rows, 0] = end[rows, 0] = 15.0  # the unanswerable question's windows all vote for [CLS]
    predictions, nbest = postprocess(examples, f, start, end, version_2=True)
    assert predictions == {"yes": examples[0].answers[0][0], "no": ""}
    assert nbest["no"][0] == {"text": "", "score": 30.0, "start": -1, "probability": nbest["no"][0]["probability"]}
    # Null score 30 vs a best span of about 3: a threshold of 30 makes the model answer anyway.
    answered, _ = postprocess(examples, f, start, end, version_2=True, null_threshold=30.0)
    assert answered["no"] != "" and answered["yes"] == predictions["yes"]
    # The answerable question abstains when its [CLS] scores beat its best span (min over windows is used).
    yes_rows = np.flatnonzero(f.example_index == 0)
    start[yes_rows, 0] = end[yes_rows, 0] = 11.0
    assert postprocess(examples, f, start, end, version_2=True)[0]["yes"] == ""
    start[yes_rows[0], 0] = -5.0
    assert postprocess(examples, f, start, end, version_2=True)[0]["yes"] == predictions["yes"]
    assert postprocess(examples, f, start, end, version_2=False)[0]["no"] != ""


def test_max_answer_len(tokenizer):
    context = "the old cat sees the red dog near the river because the cat is happy ."
    ex = QAExample("q", "what ?", context, [("the red dog", context.index("the red dog"))])
    f = features_for([ex], tokenizer, seq_len=96)
    assert len(f) == 1
    first = int(np.flatnonzero(f.offsets[0, :, 0] == context.index("old"))[-1])
    start, end = np.full((1, 96), -10.0), np.zeros((1, 96))
    start[0, first], end[0, first + 5] = 5.0, 5.0  # the best pair spans 6 tokens
    end[0, first + 1] = 1.0
    end[0, first - 1] = 9.0  # before the start: never paired with it
    for limit in (2, 3, 6):
        predictions, nbest = postprocess([ex], f, start, end, max_answer_len=limit)
        for entry in nbest["q"]:
            lo, hi = entry["start"], entry["start"] + len(entry["text"])
            s = np.flatnonzero(f.offsets[0, :, 0] == lo)
            e = np.flatnonzero(f.offsets[0, :, 1] == hi)
            assert min(b - a + 1 for a in s for b in e if b >= a) <= limit, (limit, entry)
        expected_end = first + 5 if limit == 6 else first + 1
        assert predictions["q"] == context[f.offsets[0, first, 0] : f.offsets[0, expected_end, 1]].rstrip()


def test_make_features_validation(wordpiece):
    ex = long_example("a", 0)
    with pytest.raises(ValueError, match=r"seq_len \(13\) must exceed max_query_len \+ 3"):
        features_for([ex], wordpiece, seq_len=13)
    with pytest.raises(ValueError, match=r"doc_stride \(51\) must be in \[0, 51\)"):
        features_for([ex], wordpiece, doc_stride=51)
    with pytest.raises(ValueError, match="max_query_len must be >= 1"):
        features_for([ex], wordpiece, max_query_len=0)
    # Largest stride: windows advance by one token and still cover everything.
    f = features_for([ex], wordpiece, seq_len=16, max_query_len=4, doc_stride=8)
    assert len(f) > 5 and (f.start_positions > 0).any()
    # A long question is cut to max_query_len tokens.
    long_q = QAExample("q", "what " * 30, ex.context, ex.answers)
    f = features_for([long_q], wordpiece)
    assert (f.token_type_ids[:, : MAX_QUERY + 2] == 0).all()
    assert (f.input_ids[:, MAX_QUERY + 1] == wordpiece.sep_id).all()
    start, end = gold_logits(f, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"start_logits has shape \(2, 64\)"):
        postprocess([long_q], f, start[:2], end)


def squad_file(tmp_path, qas, context="Paris is the capital of France.", name="squad.json", **extra):
    data = {"version": "v2.0", "data": [{"title": "Paris", "paragraphs": [{"context": context, "qas": qas}]}]}
    data.update(extra)
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def qa(qid, answers=(("Paris", 0),), **extra):
    return {"id": qid, "question": "What is the capital?",
            "answers": [{"text": t, "answer_start": s} for t, s in answers], **extra}


def test_load_squad_json(tmp_path):
    path = squad_file(tmp_path, [
        qa("q1", answers=[("Paris", 0), ("the capital of France", 9)]),
        qa("q2", answers=[], is_impossible=True, plausible_answers=[{"text": "France", "answer_start": 24}]),
    ])
    examples = load_squad_json(path, require_answers=True)
    assert examples == [
        QAExample("q1", "What is the capital?", "Paris is the capital of France.", [("Paris", 0),
                  ("the capital of France", 9)], False, "Paris"),
        QAExample("q2", "What is the capital?", "Paris is the capital of France.", [], True, "Paris"),
    ]
    assert load_squad_json(squad_file(tmp_path, [qa("q", answers=[])]))[0].is_impossible


@pytest.mark.parametrize(("qas", "message"), [
    ([qa("q1", answers=[("Paris", 1)])], r"question 'q1'.*answer span does not match its context.*'aris '"),
    ([qa("q1"), qa("q1")], "question 'q1': duplicate question id"),
    ([qa("q1", answers=[])], r"question 'q1': no answers and not marked is_impossible"),
    ([qa("q1", is_impossible=True)], "is_impossible is true but the question has answers"),
    ([{"id": "q1", "answers": []}], "question 'q1': missing key 'question'"),
    ([{"question": "x", "answers": []}], r"qas\[0\]: missing key 'id'"),
    ([qa("q1", answers=[("Paris", "0")])], "key 'answer_start' has the wrong type"),
    ([], "empty: no questions"),
])
def test_load_squad_json_errors(tmp_path, qas, message):
    path = squad_file(tmp_path, qas)
    with pytest.raises(ValueError, match=message) as error:
        load_squad_json(path, require_answers=True)
    assert path in str(error.value) and "\n" not in str(error.value)


def test_load_squad_json_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_squad_json(str(tmp_path / "missing.json"))
    bad = tmp_path / "latin1.json"
    bad.write_bytes('{"data": [], "title": "café"}'.encode("latin-1"))
    with pytest.raises(ValueError, match=f"{bad}: not UTF-8"):
        load_squad_json(str(bad))
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(ValueError, match=f"{broken}: malformed JSON"):
        load_squad_json(str(broken))
    no_data = tmp_path / "no_data.json"
    no_data.write_text('{"version": "1.1"}', encoding="utf-8")
    with pytest.raises(ValueError, match=f"{no_data}: missing key 'data'"):
        load_squad_json(str(no_data))
    no_context = tmp_path / "no_context.json"
    no_context.write_text('{"data": [{"paragraphs": [{"qas": []}]}]}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"data\[0\].paragraphs\[0\]: missing key 'context'"):
        load_squad_json(str(no_context))


def test_load_squad_tfds(tmp_path):
    import tensorflow_datasets as tfds

    contexts = ["Paris is the capital of France.", "The cat sees the dog near the river."]

    class PlmTestFakeSquad(tfds.core.GeneratorBasedBuilder):
        """SQuAD's features, a handful of examples, no download."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(), "title": tfds.features.Text(), "context": tfds.features.Text(),
                "question": tfds.features.Text(),
                "answers": tfds.features.Sequence({"text": tfds.features.Text(), "answer_start": np.int32}),
            }))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(1), "validation": self._generate_examples(0)}

        def _generate_examples(self, bad):
            for i, context in enumerate(contexts):
                answers = {"text": ["Paris", "capital"], "answer_start": [0, 13 + bad]} if i == 0 else \
                    {"text": [], "answer_start": []}
                yield f"q{i}", {"id": f"q{i}", "title": f"T{i}", "context": context, "question": f"Q{i}?",
                                "answers": answers}

    examples = load_squad_tfds("plm_test_fake_squad", "validation", str(tmp_path))
    assert examples == [
        QAExample("q0", "Q0?", contexts[0], [("Paris", 0), ("capital", 13)], False, "T0"),
        QAExample("q1", "Q1?", contexts[1], [], True, "T1"),
    ]
    with pytest.raises(ValueError, match=r"plm_test_fake_squad\[train\]: question 'q0': answer span does not match"):
        load_squad_tfds("plm_test_fake_squad", "train", str(tmp_path))
    with pytest.raises(ValueError, match="has no split 'dev'"):
        load_squad_tfds("plm_test_fake_squad", "dev", str(tmp_path))
