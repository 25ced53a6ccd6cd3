"""Extractive question answering (SQuAD v1.1 / v2.0) as a fine-tuning task: start/end cross-entropy over
sliding windows, n-best span post-processing, and the official SQuAD exact match and F1.
Loading and windows: tasks/qa.py; post-processing: tasks/qa_postprocess.py.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from plm_jax.errors import UserError
from plm_jax.evaluate.squad import squad_metrics
from plm_jax.files import write_atomic
from plm_jax.models.heads import BertForQuestionAnswering, finetune_dummy_inputs, needs_encoder
from plm_jax.tasks import qa, subsets
from plm_jax.tasks.classification_task import INPUT_KEYS, cross_entropy, encoder_forward
from plm_jax.tasks.distillation_losses import soft_cross_entropy_kl
from plm_jax.tasks.finetuning import FinetuneTask, Split
from plm_jax.tasks.qa_postprocess import postprocess
from plm_jax.tasks.starting_point import StartingPoint
from plm_jax.train.task import Batch, Steps

log = logging.getLogger("plm_jax")
_NEG_INF = -1e9


def span_logits(outputs: tuple[jax.Array, jax.Array], segment_ids_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Start/end logits with padding positions pushed to -inf (a span never starts in the padding)."""
    valid_BxL = segment_ids_BxL != 0
    return tuple(jnp.where(valid_BxL, x_BxL, _NEG_INF) for x_BxL in outputs)  # type: ignore[return-value]


class QATask(FinetuneTask):
    input_keys = INPUT_KEYS
    target_keys = ("start_positions", "end_positions")
    default_main_metric = "f1"

    @classmethod
    def check_start(cls, config: Any, start: StartingPoint) -> None:
        needs_encoder("qa", start.model_cfg.architecture)
        if config.task.get("pooling", "cls") != "cls":
            raise UserError(f"task.pooling={config.task.pooling!r} is for classification and regression; extractive "
                            "QA reads every token")

    def build_model(self) -> nn.Module:
        return BertForQuestionAnswering(self.model_cfg)

    def dummy_inputs(self) -> dict[str, Any]:
        return finetune_dummy_inputs(self.model_cfg, 1, int(self.config.task.seq_len))

    def _examples(self, split: str) -> list[qa.QAExample]:
        task = self.config.task
        if task.source == "local":
            path = {"train": task.train_file, "eval": task.eval_file, "test": task.test_file}[split]
            if not path:
                raise UserError(f"task.{split}_file is not set")
            examples = qa.load_squad_json(path, require_answers=split == "train" and not task.version_2)
        else:
            name = {"train": task.train_split, "eval": task.eval_split, "test": task.test_split}[split]
            examples = qa.load_squad_tfds(task.tfds_name, name, task.tfds_data_dir or None)
        limit = int(task.max_train_examples if split == "train" else task.max_eval_examples)
        return subsets.take(examples, limit, subsets.split_seed(split, int(self.config.seed)))

    def features(self, examples: list[qa.QAExample]) -> qa.QAFeatures:
        task = self.config.task
        return qa.make_features(examples, self.tokenizer, seq_len=task.seq_len, doc_stride=task.doc_stride,
                                max_query_len=task.max_query_len)

    def load_split(self, name: str) -> Split:
        task = self.config.task
        examples = self._examples(name)
        features = self.features(examples)
        arrays = {k: getattr(features, k) for k in (*INPUT_KEYS, *self.target_keys)}
        log.info("task %s: %d questions -> %d windows of %d tokens", name, len(examples), len(features),
                 task.seq_len)
        return Split(name, arrays, extra=(examples, features))

    # ------------------------------------------------------------ pure functions
    def forward(self, params: Any, batch: Batch, deterministic: bool, rngs: dict | None = None):
        return span_logits(encoder_forward(self.model, params, batch, deterministic, rngs), batch["segment_ids"])

    def sums(self, outputs: tuple[jax.Array, jax.Array], batch: Batch) -> dict[str, jax.Array]:
        start_BxL, end_BxL = outputs
        w_B = batch["example_weights"]
        nll_B = 0.5 * (cross_entropy(start_BxL, batch["start_positions"])
                       + cross_entropy(end_BxL, batch["end_positions"]))
        correct_B = ((jnp.argmax(start_BxL, -1) == batch["start_positions"])
                     & (jnp.argmax(end_BxL, -1) == batch["end_positions"])).astype(jnp.float32)
        return {"loss_sum": jnp.sum(nll_B * w_B), "correct_sum": jnp.sum(correct_B * w_B), "weight_sum": jnp.sum(w_B)}

    def named_outputs(self, outputs: tuple[jax.Array, jax.Array], batch: Batch) -> dict[str, jax.Array]:
        return {"start_logits": outputs[0], "end_logits": outputs[1]}

    def distill_terms(self, outputs: tuple[jax.Array, jax.Array], teacher_outputs: tuple[jax.Array, jax.Array],
                      temperature: float) -> jax.Array:
        """DistilBERT on SQuAD: the mean of the softened start and end distributions' T^2 KL; padding, pushed to
        -1e9 in both, carries no probability and adds nothing."""
        (start_BxL, end_BxL), (teacher_start_BxL, teacher_end_BxL) = outputs, teacher_outputs
        return 0.5 * (soft_cross_entropy_kl(start_BxL, teacher_start_BxL, temperature)
                      + soft_cross_entropy_kl(end_BxL, teacher_end_BxL, temperature))

    # ------------------------------------------------------------ scoring and prediction
    def _answers(self, examples: list[qa.QAExample], features: qa.QAFeatures, outputs: dict[str, np.ndarray]):
        task = self.config.task
        return postprocess(examples, features, outputs["start_logits"], outputs["end_logits"], n_best=task.n_best,
                           max_answer_len=task.max_answer_len, version_2=task.version_2,
                           null_threshold=task.null_threshold)

    def score(self, split: Split, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        examples, features = split.extra
        preds, _ = self._answers(examples, features, outputs)
        gold = {ex.qid: ([t for t, _ in ex.answers] if not ex.is_impossible else [""]) for ex in examples}
        return {k: float(v) for k, v in squad_metrics(preds, gold).items()}

    def predict_file(self, params: Any, steps: Steps, input_path: str, output_path: str) -> int:
        """One JSON object per question: the answer span's text and its probability among the n best."""
        from plm_jax.tasks.predict_inputs import read_questions

        examples = read_questions(input_path)
        features = self.features(examples)
        outputs = self.outputs(params, {k: getattr(features, k) for k in INPUT_KEYS}, steps)[0]
        preds, nbest = self._answers(examples, features, outputs)
        records = []
        for ex in examples:
            top = nbest.get(ex.qid) or [{}]
            records.append({"id": ex.qid, "question": ex.question, "answer": preds[ex.qid],
                            "probability": top[0].get("probability")})
        if jax.process_index() == 0:
            write_atomic(output_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return len(records)
