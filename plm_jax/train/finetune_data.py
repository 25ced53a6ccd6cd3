"""A fine-tuning task's splits as model-ready numpy arrays, its metrics, and its batches.

Fine-tuning sets are small: they are tokenized once in Python and held in memory. An epoch is a permutation
drawn from (seed, epoch), so a resumed run knows every batch from the step number alone.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from plm_jax.evaluate.metrics import classification_metrics, regression_metrics
from plm_jax.evaluate.squad import squad_metrics
from plm_jax.tasks import classification, qa, qa_postprocess
from plm_jax.tasks.text_tokenizer import TextTokenizer

log = logging.getLogger("plm_jax")
MAIN_METRIC = {"classification": "accuracy", "regression": "pearson", "qa": "f1"}
INPUT_KEYS = ("input_ids", "token_type_ids", "segment_ids", "positions")


@dataclasses.dataclass
class TaskSplit:
    name: str
    arrays: dict[str, np.ndarray]  # model inputs + targets, one row per example (QA: per window)
    label_names: tuple[str, ...] = ()
    qa_examples: list[qa.QAExample] | None = None
    qa_features: qa.QAFeatures | None = None

    def __len__(self) -> int:
        return int(self.arrays["input_ids"].shape[0])


def _qa_examples(task: Any, split: str) -> list[qa.QAExample]:
    if task.source == "local":
        path = {"train": task.train_file, "eval": task.eval_file, "test": task.test_file}[split]
        if not path:
            raise ValueError(f"task.{split}_file is not set")
        return qa.load_squad_json(path, require_answers=split == "train" and not task.version_2)
    name = {"train": task.train_split, "eval": task.eval_split, "test": task.test_split}[split]
    return qa.load_squad_tfds(task.tfds_name, name, task.tfds_data_dir or None)


def _limit(task: Any, split: str) -> int:
    return int(task.max_train_examples if split == "train" else task.max_eval_examples)


def load_task_split(task: Any, tokenizer: TextTokenizer, split: str) -> TaskSplit:
    """Loads and tokenizes one split ("train", "eval" or "test") of the configured task."""
    if task.kind == "qa":
        examples = _qa_examples(task, split)
        if _limit(task, split):
            examples = examples[: _limit(task, split)]
        features = qa.make_features(examples, tokenizer, seq_len=task.seq_len, doc_stride=task.doc_stride,
                                    max_query_len=task.max_query_len)
        arrays = {k: getattr(features, k) for k in (*INPUT_KEYS, "start_positions", "end_positions")}
        log.info("task %s: %d questions -> %d windows of %d tokens", split, len(examples), len(features),
                 task.seq_len)
        return TaskSplit(split, arrays, qa_examples=examples, qa_features=features)
    labeled = classification.load_split(task, split)
    arrays = classification.encode(labeled.examples, tokenizer, task.seq_len)
    skipped = {k: v for k, v in labeled.skipped.items() if v}
    log.info("task %s: %d examples from %s%s", split, len(labeled.examples), labeled.source,
             f" (skipped {skipped})" if skipped else "")
    return TaskSplit(split, arrays, label_names=tuple(labeled.label_names))


def task_metrics(task: Any, split: TaskSplit, outputs: dict[str, np.ndarray]) -> tuple[dict[str, float], Any]:
    """The task's metrics from the model's outputs on the whole split, and the predictions."""
    if task.kind == "qa":
        preds, _ = qa_postprocess.postprocess(
            split.qa_examples, split.qa_features, outputs["start_logits"], outputs["end_logits"],
            n_best=task.n_best, max_answer_len=task.max_answer_len, version_2=task.version_2,
            null_threshold=task.null_threshold)
        gold = {ex.qid: ([t for t, _ in ex.answers] if not ex.is_impossible else [""]) for ex in split.qa_examples}
        metrics = squad_metrics(preds, gold)
        return {k: float(v) for k, v in metrics.items()}, preds
    logits = outputs["logits"]
    labels = split.arrays["labels"]
    if task.kind == "regression":
        preds = logits[:, 0]
        return regression_metrics(preds, labels), preds
    preds = np.argmax(logits, axis=-1)
    return classification_metrics(preds, labels, len(split.label_names)), preds


def model_inputs(arrays: dict[str, np.ndarray], rows: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    """The rows of a split as one batch; rows < 0 are padding (weight 0) so that every batch is full."""
    take = np.maximum(rows, 0)
    targets = ("start_positions", "end_positions") if kind == "qa" else ("labels",)
    batch = {k: arrays[k][take] for k in (*INPUT_KEYS, *targets) if k in arrays}
    batch["example_weights"] = (rows >= 0).astype(np.float32)
    return batch


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_rows(seed: int, step: int, steps_per_epoch: int, batch_size: int, n: int) -> np.ndarray:
    """The global batch of train step `step` (0-based): a function of (seed, step) only."""
    epoch, i = divmod(step, steps_per_epoch)
    return epoch_order(seed, epoch, n)[i * batch_size : (i + 1) * batch_size]


def eval_batches(n: int, batch_size: int) -> Iterator[np.ndarray]:
    """Row indices of consecutive eval batches; the last is padded with -1."""
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n))
        yield np.concatenate([rows, -np.ones(batch_size - len(rows), rows.dtype)])
