"""Files of new inputs for `launch.py predict`: texts to label, questions to answer."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator

from plm_jax.errors import UserError
from plm_jax.tasks import qa


def read_texts(path: str, text_a: str, text_b: str) -> Iterator[tuple[str, str | None]]:
    """Texts to label: .txt (one per line), .jsonl ({text_a: .., text_b: ..}), .csv/.tsv (header row)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if ext in (".csv", ".tsv"):
                reader = csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ",")
                for row in reader:
                    if text_a not in row or (text_b and text_b not in row):
                        raise UserError(f"{path}: no column {text_a!r}{f' / {text_b!r}' if text_b else ''}; "
                                         f"columns: {reader.fieldnames}")
                    yield row[text_a], row[text_b] if text_b else None
            elif ext == ".jsonl":
                for n, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(f"{path}:{n}: malformed JSON ({e.msg})") from None
                    if text_a not in obj:
                        raise UserError(f"{path}:{n}: no key {text_a!r}")
                    yield str(obj[text_a]), str(obj[text_b]) if text_b else None
            else:
                for line in f:
                    if line.strip():
                        yield line.rstrip("\n"), None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None


def read_questions(path: str) -> list[qa.QAExample]:
    """SQuAD JSON, or JSONL lines {"id"?, "question", "context"}."""
    if path.endswith(".jsonl"):
        examples = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    obj = json.loads(line)
                    if "question" not in obj or "context" not in obj:
                        raise UserError(f"{path}:{n}: needs keys 'question' and 'context'")
                    examples.append(qa.QAExample(str(obj.get("id", n)), obj["question"], obj["context"], []))
        if not examples:
            raise UserError(f"{path}: no questions")
        return examples
    return qa.load_squad_json(path)
