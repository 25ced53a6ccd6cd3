"""Extractive question answering (SQuAD v1.1 / v2.0): loading and sliding-window features (the n-best span
post-processing is plm_jax.tasks.qa_postprocess).

Features follow the Hugging Face run_qa.py conventions so that results are comparable: `[CLS] question [SEP]
context-window [SEP]`, overlapping context windows, and a window that does not hold the answer (or an
unanswerable question) points both its start and end at the [CLS] token (index 0).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from plm_jax.data.text_tokenizer import TextTokenizer
from plm_jax.errors import UserError

__all__ = ["QAExample", "QAFeatures", "load_squad_json", "load_squad_tfds", "make_features"]


@dataclasses.dataclass
class QAExample:
    """One question on one context; answers are (text, start character in context), all checked to match."""

    qid: str
    question: str
    context: str
    answers: list[tuple[str, int]]
    is_impossible: bool = False
    title: str = ""


def _check_answers(answers: list[tuple[str, int]], context: str, where: str) -> None:
    for text, start in answers:
        if context[start : start + len(text)] != text or start < 0 or not text:
            found = context[max(start, 0) : max(start, 0) + len(text)]
            raise UserError(f"{where}: answer span does not match its context: answer {text!r} at "
                             f"{start}, context has {found!r} there")


def _key(record: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """record[key] checked for type, with an error naming the key and where it is missing."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise UserError(f"{where}: missing key {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise UserError(f"{where}: key {key!r} has the wrong type ({type(value).__name__})")
    return value


def load_squad_json(path: str, *, require_answers: bool = False) -> list[QAExample]:
    """The questions of a SQuAD v1.1/v2.0 JSON file, in file order, every answer span checked against its context.

    require_answers=True (training files) makes a question that is neither answered nor marked is_impossible
    an error instead of an unanswerable example. v2's "plausible_answers" are ignored.
    """
    with open(path, "rb") as f:
        raw = f.read()
    try:
        dataset = json.loads(raw.decode("utf-8-sig"))  # tolerate a byte-order mark
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON: {e}") from None
    examples: list[QAExample] = []
    seen: set[str] = set()
    for i, article in enumerate(_key(dataset, "data", list, path)):
        title = article.get("title", "") if isinstance(article, dict) else ""
        for j, paragraph in enumerate(_key(article, "paragraphs", list, f"{path}: data[{i}]")):
            where = f"{path}: data[{i}].paragraphs[{j}]"
            context = _key(paragraph, "context", str, where)
            for k, qa in enumerate(_key(paragraph, "qas", list, where)):
                qid = _key(qa, "id", str, f"{where}.qas[{k}]")
                at = f"{path}: question {qid!r}"
                if qid in seen:
                    raise UserError(f"{at}: duplicate question id")
                seen.add(qid)
                question = _key(qa, "question", str, at)
                impossible = bool(qa.get("is_impossible", False))
                answers = [(_key(a, "text", str, at), _key(a, "answer_start", int, at))
                           for a in _key(qa, "answers", list, at)]
                if impossible and answers:
                    raise UserError(f"{at}: is_impossible is true but the question has answers")
                if not impossible and not answers and require_answers:
                    raise UserError(f"{at}: no answers and not marked is_impossible (require_answers=True)")
                _check_answers(answers, context, at)
                examples.append(QAExample(qid, question, context, answers, impossible or not answers,
                                          title if isinstance(title, str) else ""))
    if not examples:
        raise UserError(f"{path}: empty: no questions in the file")
    return examples


def load_squad_tfds(name: str, split: str, data_dir: str | None = None) -> list[QAExample]:
    """A TFDS dataset with SQuAD's features (e.g. "squad", "squad/v2.0"), prepared if needed, in file order.

    An example without answers (v2) is unanswerable; answer spans are checked like load_squad_json's.
    """
    import tensorflow_datasets as tfds

    from plm_jax.data.data_config import default_data_config
    from plm_jax.data.sources import tfds_builder

    cfg = default_data_config()
    cfg.update({"source": "tfds", "tfds_name": name, "tfds_data_dir": data_dir or ""})
    builder = tfds_builder(cfg)
    features = builder.info.features
    missing = [k for k in ("id", "context", "question", "answers") if k not in features]
    if missing:
        raise UserError(f"TFDS dataset {name!r} lacks the SQuAD features {missing}; has {sorted(features.keys())}")
    if re.fullmatch(r"\w+", split) and split not in builder.info.splits:
        raise UserError(f"TFDS dataset {name!r} has no split {split!r}; available: {sorted(builder.info.splits)}")
    read_config = tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1, try_autocache=False)
    examples = []
    for ex in builder.as_dataset(split=split, shuffle_files=False, read_config=read_config).as_numpy_iterator():
        qid, context = ex["id"].decode("utf-8"), ex["context"].decode("utf-8")
        answers = [(t.decode("utf-8"), int(s)) for t, s in zip(ex["answers"]["text"], ex["answers"]["answer_start"])]
        _check_answers(answers, context, f"TFDS {name}[{split}]: question {qid!r}")
        impossible = bool(ex.get("is_impossible", False)) or not answers
        title = ex["title"].decode("utf-8") if "title" in ex else ""
        examples.append(QAExample(qid, ex["question"].decode("utf-8"), context, answers, impossible, title))
    if not examples:
        raise UserError(f"TFDS dataset {name!r} split {split!r} is empty")
    return examples


@dataclasses.dataclass
class QAFeatures:
    """N model windows: int32 [N, L] inputs, [N] answer token positions and example indices, [N, L, 2] offsets.

    offsets are [start, end) character spans into the example's context for context tokens, -1 elsewhere, so
    post-processing can tell context tokens apart and cut answers out of the original text.
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray
    start_positions: np.ndarray
    end_positions: np.ndarray
    example_index: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def model_inputs(self) -> dict[str, np.ndarray]:
        """The arrays BertForQuestionAnswering takes, under its argument names."""
        return {"input_ids_BxL": self.input_ids, "segment_ids_BxL": self.segment_ids,
                "positions_BxL": self.positions, "token_type_ids_BxL": self.token_type_ids}


def _answer_tokens(offsets: Sequence[tuple[int, int]], start_char: int, end_char: int) -> tuple[int, int] | None:
    """First and last context token overlapping [start_char, end_char); None when no token does."""
    hits = [i for i, (s, e) in enumerate(offsets) if s < e and s < end_char and e > start_char]
    return (hits[0], hits[-1]) if hits else None


def _windows(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of width <= size; consecutive ranges share `overlap` tokens; the last one ends at
    n_tokens."""
    windows, start = [], 0
    while True:
        end = min(start + size, n_tokens)
        windows.append((start, end))
        if end >= n_tokens:
            return windows
        start = end - overlap


def make_features(
    examples: Sequence[QAExample], tokenizer: TextTokenizer, *, seq_len: int, doc_stride: int, max_query_len: int
) -> QAFeatures:
    """Tokenizes examples into `[CLS] question [SEP] context-window [SEP]` windows padded to seq_len.

    doc_stride has the Hugging Face tokenizer meaning: consecutive windows of one context OVERLAP by doc_stride
    tokens (they do not start doc_stride tokens apart), so every context token is in at least one window and
    an answer near a window edge is whole in the next one. The question keeps its first max_query_len tokens.
    token_type_ids are 0 for [CLS] question [SEP] and 1 for the context and the final [SEP]. Training targets
    come from an example's first answer; a window without the whole answer points at [CLS] (index 0).
    """
    if max_query_len < 1:
        raise UserError(f"max_query_len must be >= 1, got {max_query_len}")
    if seq_len <= max_query_len + 3:
        raise UserError(f"seq_len ({seq_len}) must exceed max_query_len + 3 ({max_query_len + 3}): [CLS], two "
                         f"[SEP] and the question leave no room for context")
    min_context = seq_len - max_query_len - 3  # context tokens per window with the longest question
    if not 0 <= doc_stride < min_context:
        raise UserError(f"doc_stride ({doc_stride}) must be in [0, {min_context}): windows overlap by doc_stride "
                         f"tokens and hold seq_len - max_query_len - 3 = {min_context} context tokens")
    rows: dict[str, list] = {k: [] for k in ("ids", "types", "n", "start", "end", "example", "offsets")}
    for index, ex in enumerate(examples):
        question_ids = tokenizer.encode_with_offsets(ex.question)[0][:max_query_len]
        context_ids, context_offsets = tokenizer.encode_with_offsets(ex.context)
        answer = None
        if not ex.is_impossible and ex.answers:
            text, start_char = ex.answers[0]
            answer = _answer_tokens(context_offsets, start_char, start_char + len(text))
            if answer is None:
                raise UserError(f"question {ex.qid!r}: no context token covers the answer {text!r} at {start_char}")
        prefix = [tokenizer.cls_id, *question_ids, tokenizer.sep_id]
        for start, end in _windows(len(context_ids), seq_len - len(prefix) - 1, doc_stride):
            ids = prefix + context_ids[start:end] + [tokenizer.sep_id]
            offsets = np.full((seq_len, 2), -1, np.int32)
            if end > start:
                offsets[len(prefix) : len(prefix) + end - start] = context_offsets[start:end]
            start_pos = end_pos = 0
            if answer is not None and start <= answer[0] and answer[1] < end:
                start_pos, end_pos = answer[0] - start + len(prefix), answer[1] - start + len(prefix)
            rows["ids"].append(ids + [tokenizer.pad_id] * (seq_len - len(ids)))
            rows["types"].append([0] * len(prefix) + [1] * (len(ids) - len(prefix)) + [0] * (seq_len - len(ids)))
            rows["n"].append(len(ids))
            rows["start"].append(start_pos)
            rows["end"].append(end_pos)
            rows["example"].append(index)
            rows["offsets"].append(offsets)
    n_real = np.asarray(rows["n"], np.int32).reshape(-1, 1)
    arange = np.arange(seq_len, dtype=np.int32)[None, :]
    real = arange < n_real
    return QAFeatures(
        input_ids=np.asarray(rows["ids"], np.int32).reshape(-1, seq_len),
        token_type_ids=np.asarray(rows["types"], np.int32).reshape(-1, seq_len),
        segment_ids=real.astype(np.int32),
        positions=np.where(real, arange, 0).astype(np.int32),
        start_positions=np.asarray(rows["start"], np.int32),
        end_positions=np.asarray(rows["end"], np.int32),
        example_index=np.asarray(rows["example"], np.int32),
        offsets=np.asarray(rows["offsets"], np.int32).reshape(-1, seq_len, 2),
    )
