"""From per-window start/end logits to answer texts (Hugging Face run_qa.py's post-processing).

Kept apart from plm_jax.tasks.qa (features) so that each stays short.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from plm_jax.errors import UserError

if TYPE_CHECKING:
    from plm_jax.tasks.qa import QAExample, QAFeatures


def _top(logits: np.ndarray, candidates: np.ndarray, n: int) -> np.ndarray:
    """The n candidate indices with the highest logits, best first (ties: lower index first)."""
    return candidates[np.argsort(-logits[candidates], kind="stable")[:n]]


def _trim(context: str, start: int, end: int) -> tuple[int, int]:
    """The span without surrounding whitespace (a SentencePiece "▁" piece ends after the space it stands for)."""
    while start < end and context[start].isspace():
        start += 1
    while end > start and context[end - 1].isspace():
        end -= 1
    return start, end


def _softmax(scores: list[float]) -> list[float]:
    if not scores:
        return []
    x = np.exp(np.asarray(scores, np.float64) - max(scores))
    return (x / x.sum()).tolist()


def postprocess(
    examples: Sequence[QAExample],
    features: QAFeatures,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    n_best: int = 20,
    max_answer_len: int = 30,
    version_2: bool = False,
    null_threshold: float = 0.0,
) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    """Best answer text per question, and its n-best list of {"text", "score", "start", "probability"}.

    Per window, the n_best highest start and end logits among context tokens are paired (start <= end <
    start + max_answer_len), scored start_logit + end_logit, and cut out of the context by character offsets
    (surrounding whitespace trimmed); the best span over all windows of a question wins (a span seen in two
    overlapping windows is listed once, with its higher score). No valid span predicts "".

    version_2: the null score is the minimum over the question's windows of start_logits[0] + end_logits[0]
    (the [CLS] token), and "" is predicted when null_score > best_span_score + null_threshold; so a larger
    null_threshold answers more often, a negative one abstains more. The null answer is then also an n-best
    entry, with "start" -1.
    """
    n, seq_len = features.input_ids.shape
    start_logits, end_logits = np.asarray(start_logits, np.float64), np.asarray(end_logits, np.float64)
    for name, logits in (("start_logits", start_logits), ("end_logits", end_logits)):
        if logits.shape != (n, seq_len):
            raise UserError(f"{name} has shape {logits.shape}, the features need ({n}, {seq_len})")
    if n_best < 1 or max_answer_len < 1:
        raise UserError(f"n_best and max_answer_len must be >= 1, got {n_best} and {max_answer_len}")
    if n and (features.example_index.min() < 0 or features.example_index.max() >= len(examples)):
        raise UserError(f"features refer to example {features.example_index.max()}, but {len(examples)} were given")
    windows: dict[int, list[int]] = {}
    for row, index in enumerate(features.example_index.tolist()):
        windows.setdefault(index, []).append(row)
    predictions: dict[str, str] = {}
    nbest: dict[str, list[dict[str, Any]]] = {}
    for index, example in enumerate(examples):
        spans: dict[tuple[int, int], float] = {}  # (start char, end char) -> best score
        null_score = None
        for row in windows.get(index, []):
            starts, ends, offsets = start_logits[row], end_logits[row], features.offsets[row]
            context = np.flatnonzero(offsets[:, 0] >= 0)
            window_null = float(starts[0] + ends[0])
            null_score = window_null if null_score is None else min(null_score, window_null)
            top_ends = _top(ends, context, n_best)
            for s in _top(starts, context, n_best).tolist():
                for e in top_ends.tolist():
                    if not s <= e < s + max_answer_len:
                        continue
                    span = _trim(example.context, int(offsets[s, 0]), int(offsets[e, 1]))
                    score = float(starts[s] + ends[e])
                    if span[1] > span[0] and score > spans.get(span, -np.inf):
                        spans[span] = score
        best = sorted(spans.items(), key=lambda item: (-item[1], item[0]))[:n_best]
        entries = [{"text": example.context[a:b], "score": score, "start": a} for (a, b), score in best]
        answer = entries[0]["text"] if entries else ""
        if version_2 and null_score is not None:
            if not entries or null_score > entries[0]["score"] + null_threshold:
                answer = ""
            entries.append({"text": "", "score": null_score, "start": -1})
            entries.sort(key=lambda entry: -entry["score"])
        for entry, probability in zip(entries, _softmax([e["score"] for e in entries])):
            entry["probability"] = probability
        predictions[example.qid] = answer
        nbest[example.qid] = entries
    return predictions, nbest
