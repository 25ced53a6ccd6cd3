"""A small real-text extractive QA set from the Wikipedia leads of `plm_wiki_offline`, in SQuAD v1.1 format.

Encyclopedia leads mostly open with a definition, "<Subject> is <description>.", which turns into the question
"What is <description>?" whose answer is the subject at the start of the lead. The questions are easy, but the
contexts are real text, so the set checks a QA pipeline end to end without downloading SQuAD.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

from plm_jax.errors import UserError
from plm_jax.files import write_atomic
from plm_jax.tasks.qa import QAExample

MAX_SUBJECT_WORDS = 8
MAX_QUESTION_WORDS = 40
_VERB = re.compile(r" (is|was|are|were) ")
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_SPLITS = (("train", "train"), ("dev", "validation"))  # (output file stem, plm_wiki_offline split)


def wiki_qa_examples(text: str, title: str, qid: str) -> QAExample | None:
    """The definition question of one lead, or None when its first sentence is not "<Subject> is|was|are|were ...".

    The subject (the text before the first verb) must be 1..MAX_SUBJECT_WORDS words without parentheses or
    commas (those usually hide an aside such as a pronunciation, which would make the answer ragged).
    """
    start = len(text) - len(text.lstrip())
    verb = _VERB.search(text, start)
    end = _SENTENCE_END.search(text, start)
    if verb is None or end is None or end.start() <= verb.end():
        return None  # no verb in the first sentence
    subject, rest = text[start : verb.start()], text[verb.end() : end.start()].strip()
    words = subject.split()
    if not 1 <= len(words) <= MAX_SUBJECT_WORDS or any(c in subject for c in "(),;:\n") or not subject[0].isalnum():
        return None
    if not rest or len(rest.split()) > MAX_QUESTION_WORDS:
        return None
    question = f"What {verb.group(1)} {rest}?"
    return QAExample(qid, question, text, [(subject, start)], False, title)


def _squad_json(examples: list[QAExample]) -> dict:
    return {
        "version": "1.1",
        "data": [
            {"title": ex.title, "paragraphs": [{"context": ex.context, "qas": [
                {"id": ex.qid, "question": ex.question,
                 "answers": [{"text": text, "answer_start": start} for text, start in ex.answers]}]}]}
            for ex in examples
        ],
    }


def build_wiki_qa(out_dir: str, *, data_dir: str | None = None, max_per_split: int = 0) -> dict[str, str | int]:
    """Writes out_dir/train.json (plm_wiki_offline train split) and out_dir/dev.json (its validation split).

    Question ids are md5(title)-based, so they are stable whatever max_per_split (0 = no limit) keeps. Returns
    {"train": path, "dev": path, "train_examples": n, "dev_examples": n, "train_leads": n, "dev_leads": n}
    (leads = how many leads were read; the others did not fit the pattern).
    """
    import tensorflow_datasets as tfds

    from plm_jax.data.data_config import default_data_config
    from plm_jax.data.sources import tfds_builder

    if max_per_split < 0:
        raise UserError(f"max_per_split must be >= 0 (0 = all), got {max_per_split}")
    cfg = default_data_config()
    cfg.update({"source": "tfds", "tfds_name": "plm_wiki_offline", "tfds_data_dir": data_dir or ""})
    builder = tfds_builder(cfg)
    os.makedirs(out_dir, exist_ok=True)
    read_config = tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1, try_autocache=False)
    result: dict[str, str | int] = {}
    for stem, split in _SPLITS:
        examples: list[QAExample] = []
        leads = 0
        dataset = builder.as_dataset(split=split, shuffle_files=False, read_config=read_config)
        for record in dataset.as_numpy_iterator():
            if max_per_split and len(examples) >= max_per_split:
                break
            leads += 1
            text, title = record["text"].decode("utf-8"), record["title"].decode("utf-8")
            qid = "wiki_" + hashlib.md5(title.encode("utf-8")).hexdigest()[:16]
            example = wiki_qa_examples(text, title, qid)
            if example is not None:
                examples.append(example)
        if not examples:
            raise UserError(f"plm_wiki_offline split {split!r}: none of its {leads} leads opens with "
                             f"'<Subject> is ...', so {stem}.json would be empty")
        path = os.path.join(out_dir, f"{stem}.json")
        write_atomic(path, json.dumps(_squad_json(examples), ensure_ascii=False, indent=1))
        result.update({stem: path, f"{stem}_examples": len(examples), f"{stem}_leads": leads})
    return result
