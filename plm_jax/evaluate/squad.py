"""The official SQuAD v1.1 / v2.0 evaluation (exact match and token F1), as a library function.

Reimplemented from the official evaluate-v2.0.py so that scores are comparable with published numbers:
the same answer normalization, max over gold answers, and the v2 rule that an empty answer scores 1 only
against an empty answer. A v1.1 set simply has no unanswerable questions, and then both scripts agree.
"""

from __future__ import annotations

import collections
import re
import string

from plm_jax.errors import UserError

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace (the official order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, gold: str) -> float:
    """1.0 when both normalize to the same string."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Bag-of-tokens F1 of the normalized answers; if either is empty, 1.0 iff both are (SQuAD v2 rule)."""
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    same = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: dict[str, str], gold: dict[str, list[str]]) -> dict[str, float]:
    """exact_match and f1 in percent over the questions of `gold` (qid -> gold answer texts; [""] = unanswerable).

    Like the official v2 script: gold answers that normalize to "" are dropped (none left = unanswerable),
    HasAns_*/NoAns_* break the scores down by question kind when that kind occurs. A question without a
    prediction is scored as if "" had been predicted and counted in `missing`; predictions for unknown qids
    are ignored.
    """
    if not gold:
        raise UserError("no gold questions to score")
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    has_answer: dict[str, bool] = {}
    missing = 0
    for qid, answers in gold.items():
        if isinstance(answers, str) or not isinstance(answers, (list, tuple)):
            raise UserError(f"gold answers for question {qid!r} must be a list of strings, got {answers!r}")
        has_answer[qid] = any(answers)
        answers = [a for a in answers if normalize_answer(a)] or [""]
        if qid not in predictions:
            missing += 1
        prediction = predictions.get(qid, "")
        exact[qid] = max(exact_match_score(prediction, a) for a in answers)
        f1[qid] = max(f1_score(prediction, a) for a in answers)
    out: dict[str, float] = {
        "exact_match": 100.0 * sum(exact.values()) / len(exact),
        "f1": 100.0 * sum(f1.values()) / len(f1),
        "total": len(exact),
        "missing": missing,
    }
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, has in has_answer.items() if has == wanted]
        if qids:
            out[f"{prefix}_exact"] = 100.0 * sum(exact[q] for q in qids) / len(qids)
            out[f"{prefix}_f1"] = 100.0 * sum(f1[q] for q in qids) / len(qids)
            out[f"{prefix}_total"] = len(qids)
    return out
