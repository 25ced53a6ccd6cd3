"""Sequence classification (cross-entropy over labels) and regression (squared error) as fine-tuning tasks:
sentiment, topics, sentence pairs (GLUE), scores (STS-B). Data loading and encoding: tasks/classification.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from plm_jax.errors import UserError
from plm_jax.evaluate.metrics import classification_metrics, regression_metrics
from plm_jax.files import write_atomic
from plm_jax.models.heads import finetune_dummy_inputs, sequence_classifier
from plm_jax.tasks import classification, subsets
from plm_jax.tasks.distillation_losses import soft_cross_entropy_kl
from plm_jax.tasks.finetuning import FinetuneTask, Split
from plm_jax.tasks.starting_point import StartingPoint
from plm_jax.train.rundir import ModelInfo
from plm_jax.train.task import Batch, Steps

log = logging.getLogger("plm_jax")
INPUT_KEYS = ("input_ids", "token_type_ids", "segment_ids", "positions")


def cross_entropy(logits_BxC: jax.Array, labels_B: jax.Array) -> jax.Array:
    logp_BxC = jax.nn.log_softmax(logits_BxC, axis=-1)
    return -jnp.take_along_axis(logp_BxC, labels_B[:, None], axis=-1)[:, 0]


def has_label(labels_B: Any) -> Any:
    """Rows with a label: a class index >= 0, or a finite score; -1 / NaN mark text the teacher alone labels."""
    xp = jnp if isinstance(labels_B, jax.Array) else np
    return xp.isfinite(labels_B) if xp.issubdtype(labels_B.dtype, xp.floating) else labels_B >= 0


def encoder_forward(model: nn.Module, params: Any, batch: Batch, deterministic: bool, rngs: dict | None = None):
    return model.apply({"params": params}, batch["input_ids"], batch["segment_ids"], batch["positions"],
                       batch["token_type_ids"], deterministic=deterministic, rngs=rngs)


class ClassificationTask(FinetuneTask):
    """task.kind = "classification" (accuracy, macro-F1, MCC) or "regression" (Pearson, Spearman)."""

    input_keys = INPUT_KEYS
    target_keys = ("labels",)

    @property
    def regression(self) -> bool:
        return self.info.kind == "regression"

    @property
    def default_main_metric(self) -> str:  # type: ignore[override]
        return "pearson" if self.regression else "accuracy"

    @classmethod
    def check_data(cls, config: Any) -> None:
        if config.task.source == "local":  # files the user wrote; TFDS data was checked when it was built
            classification.load_split(config.task, "train", int(config.seed))

    @classmethod
    def check_start(cls, config: Any, start: StartingPoint) -> None:
        # names an architecture without this head, or a pooling it lacks
        sequence_classifier(start.model_cfg, 2, kind=config.task.kind, pooling=config.task.get("pooling", "cls"))

    @classmethod
    def info_for(cls, config: Any, start: StartingPoint, labels: tuple[str, ...]) -> ModelInfo:
        return dataclasses.replace(super().info_for(config, start, labels),
                                   pooling=str(config.task.get("pooling", "cls")))

    def build_model(self) -> nn.Module:
        num_labels = 1 if self.regression else len(self.info.label_names)
        return sequence_classifier(self.model_cfg, num_labels, self.info.classifier_dropout, self.info.kind,
                                   self.info.pooling)

    def dummy_inputs(self) -> dict[str, Any]:
        return finetune_dummy_inputs(self.model_cfg, 1, int(self.config.task.seq_len))

    def load_split(self, name: str) -> Split:
        task = self.config.task
        distill = self.config.get("distill") or {}
        teacher_only: list[classification.TextExample] = []
        if name == "train" and distill.get("unlabeled"):
            labeled, teacher_only = self.train_and_unlabeled(str(distill.unlabeled), int(distill.max_unlabeled))
        else:
            labeled = classification.load_split(task, name, int(self.config.seed))
        arrays = classification.encode(labeled.examples + teacher_only, self.tokenizer, task.seq_len)
        skipped = {k: v for k, v in labeled.skipped.items() if v}
        counts = classification.label_counts(labeled)
        log.info("task %s: %d examples from %s%s; %s%s", name, len(labeled.examples), labeled.source,
                 f" (skipped {skipped})" if skipped else "", counts,
                 f"; {len(teacher_only)} unlabeled texts for the teacher to label ({distill.get('unlabeled')})"
                 if teacher_only else "")
        missing = [label for label, n in counts.items() if n == 0 and label != "unlabeled"]
        if name == "train" and missing:
            log.warning("task train: no training example of class %s (of %s); the model cannot learn %s",
                        ", ".join(map(repr, missing)), list(labeled.label_names), "it" if len(missing) == 1 else
                        "them")
        return Split(name, arrays, extra=tuple(labeled.label_names))

    def train_and_unlabeled(self, unlabeled: str, max_unlabeled: int
                            ) -> tuple[classification.LabeledSet, list[classification.TextExample]]:
        """The labeled train split, and the texts that the teacher alone labels (distill.unlabeled): the train rows
        that task.max_train_examples leaves out ("rest"), or a file's; at most max_unlabeled, drawn by the seed."""
        task, seed = self.config.task, int(self.config.seed)
        if unlabeled == "rest":
            every_row = task.copy_and_resolve_references()
            every_row.max_train_examples = 0
            whole = classification.load_split(every_row, "train", seed)
            labels = None if self.regression else [e.label for e in whole.examples]
            chosen = np.zeros(len(whole.examples), bool)  # the same draw as load_split's (tasks/subsets.py)
            chosen[subsets.draw(labels, len(whole.examples), int(task.max_train_examples), seed)] = True
            labeled = dataclasses.replace(whole, examples=[e for e, c in zip(whole.examples, chosen) if c])
            texts = [(e.text_a, e.text_b) for e, c in zip(whole.examples, chosen) if not c]
        else:
            from plm_jax.tasks.predict_inputs import read_texts

            if task.text_b and unlabeled.lower().endswith(".txt"):
                raise UserError(f"distill.unlabeled {unlabeled}: a .txt file holds single texts, and this task "
                                f"reads pairs ({task.text_a}, {task.text_b}); give a .csv/.tsv/.jsonl file")
            labeled = classification.load_split(task, "train", seed)
            texts = list(read_texts(unlabeled, task.text_a, task.text_b))
            if not texts:
                raise UserError(f"distill.unlabeled {unlabeled}: no texts")
        no_label = float("nan") if self.regression else -1
        return labeled, [classification.TextExample(a, b, no_label) for a, b in subsets.take(texts, max_unlabeled,
                                                                                              seed)]

    def results(self) -> dict[str, Any]:
        """Adds the examples per class of every split the run used (in label order)."""
        out = super().results()
        train = self.splits.get("train")
        if train is not None:
            labeled = int(np.count_nonzero(has_label(train.arrays["labels"])))
            if labeled < len(train):  # teacher-labeled rows (distill.unlabeled) are not labeled examples
                out["train_examples"], out["unlabeled_examples"] = labeled, len(train) - labeled
        if not self.regression:
            names = self.info.label_names
            out["label_counts"] = {
                name: dict(zip(names, np.bincount(split.arrays["labels"][split.arrays["labels"] >= 0],
                                                  minlength=len(names)).tolist()))
                for name, split in self.splits.items()}
        return out

    def label_names(self, train: Split) -> tuple[str, ...]:
        return train.extra

    # ------------------------------------------------------------ pure functions
    def forward(self, params: Any, batch: Batch, deterministic: bool, rngs: dict | None = None):
        return encoder_forward(self.model, params, batch, deterministic, rngs)

    def sums(self, outputs: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        """Over the labeled rows: a row the teacher alone labels (distill.unlabeled) has weight 0 here."""
        labeled_B = has_label(batch["labels"])
        w_B = batch["example_weights"] * labeled_B
        if self.regression:
            err_B = jnp.where(labeled_B, outputs[:, 0] - batch["labels"], 0.0)
            return {"loss_sum": jnp.sum(jnp.square(err_B) * w_B), "weight_sum": jnp.sum(w_B)}
        logits_BxC = outputs
        nll_B = cross_entropy(logits_BxC, jnp.maximum(batch["labels"], 0))
        correct_B = (jnp.argmax(logits_BxC, axis=-1) == batch["labels"]).astype(jnp.float32)
        return {"loss_sum": jnp.sum(nll_B * w_B), "correct_sum": jnp.sum(correct_B * w_B), "weight_sum": jnp.sum(w_B)}

    def named_outputs(self, outputs: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        return {"logits": outputs}

    def distill_terms(self, outputs: jax.Array, teacher_outputs: jax.Array, temperature: float) -> jax.Array:
        if self.regression:  # the teacher's score as a soft target
            return jnp.square(outputs[:, 0] - teacher_outputs[:, 0])
        return soft_cross_entropy_kl(outputs, teacher_outputs, temperature)

    # ------------------------------------------------------------ scoring and prediction
    def score(self, split: Split, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        logits, labels = outputs["logits"], split.arrays["labels"]
        if self.regression:
            return regression_metrics(logits[:, 0], labels)
        return classification_metrics(np.argmax(logits, axis=-1), labels, len(self.info.label_names))

    def predict_file(self, params: Any, steps: Steps, input_path: str, output_path: str) -> int:
        """One JSON object per input text: the label and class probabilities, or the predicted score."""
        from plm_jax.tasks.predict_inputs import read_texts

        task = self.config.task
        texts = list(read_texts(input_path, task.text_a, task.text_b))
        if not texts:
            raise UserError(f"{input_path}: no texts")
        arrays = classification.encode(
            [classification.TextExample(a, b, 0.0 if self.regression else 0) for a, b in texts], self.tokenizer,
            task.seq_len)
        del arrays["labels"]
        logits = self.outputs(params, arrays, steps)[0]["logits"]
        records = []
        for (a, b), row in zip(texts, logits):
            record: dict[str, Any] = {"text_a": a} if b is None else {"text_a": a, "text_b": b}
            if self.regression:
                record["prediction"] = float(row[0])
            else:
                p = np.exp(row - row.max())
                p /= p.sum()
                record["label"] = self.info.label_names[int(np.argmax(row))]
                record["probabilities"] = {name: round(float(x), 6) for name, x in zip(self.info.label_names, p)}
            records.append(record)
        if jax.process_index() == 0:
            write_atomic(output_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return len(records)
