"""Token classification (BIO tagging: named entities, parts of speech) as a fine-tuning task, as Hugging Face's
`run_ner`: a tag per word, scored at its first sub-token; entity-level precision/recall/F1 (conlleval rules,
evaluate/entities.py) as the main metric. Data loading and encoding: tasks/tagging.py.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from plm_jax.errors import UserError
from plm_jax.evaluate.entities import entity_metrics
from plm_jax.files import read_text, write_atomic
from plm_jax.models.heads import BertForTokenClassification, finetune_dummy_inputs, needs_encoder
from plm_jax.tasks import tagging
from plm_jax.tasks.classification_task import encoder_forward
from plm_jax.tasks.finetuning import FinetuneTask, Split
from plm_jax.tasks.starting_point import StartingPoint
from plm_jax.train.task import Batch, Steps

log = logging.getLogger("plm_jax")


class TaggingTask(FinetuneTask):
    input_keys = ("input_ids", "token_type_ids", "segment_ids", "positions")
    target_keys = ("labels", "label_weights")
    default_main_metric = "f1"

    @classmethod
    def check_start(cls, config: Any, start: StartingPoint) -> None:
        needs_encoder("tagging", start.model_cfg.architecture)

    def build_model(self) -> nn.Module:
        return BertForTokenClassification(self.model_cfg, len(self.info.label_names), self.info.classifier_dropout)

    def dummy_inputs(self) -> dict[str, Any]:
        return finetune_dummy_inputs(self.model_cfg, 1, int(self.config.task.seq_len))

    def load_split(self, name: str) -> Split:
        task = self.config.task
        sentences, tfds_names = tagging.load_sentences(task, name, int(self.config.seed))
        names = self.info.label_names or tagging.label_names_of(task, sentences, tfds_names)
        arrays = tagging.encode(sentences, self.tokenizer, int(task.seq_len), names)
        log.info("task %s: %d sentences, %d tagged words, %d tags", name, len(sentences),
                 int(arrays["label_weights"].sum()), len(names))
        return Split(name, arrays, extra=(sentences, names))

    def label_names(self, train: Split) -> tuple[str, ...]:
        return tuple(train.extra[1])

    # ------------------------------------------------------------ pure functions
    def forward(self, params: Any, batch: Batch, deterministic: bool, rngs: dict | None = None):
        return encoder_forward(self.model, params, batch, deterministic, rngs)

    def sums(self, logits_BxLxC: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        """Cross-entropy summed over the labeled sub-tokens (each word's first) of the batch's real rows."""
        w_BxL = batch["label_weights"] * batch["example_weights"][:, None]
        logp_BxLxC = jax.nn.log_softmax(logits_BxLxC, axis=-1)
        nll_BxL = -jnp.take_along_axis(logp_BxLxC, batch["labels"][..., None], axis=-1)[..., 0]
        correct_BxL = (jnp.argmax(logits_BxLxC, axis=-1) == batch["labels"]).astype(jnp.float32)
        return {"loss_sum": jnp.sum(nll_BxL * w_BxL), "correct_sum": jnp.sum(correct_BxL * w_BxL),
                "weight_sum": jnp.sum(w_BxL)}

    def named_outputs(self, logits_BxLxC: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        return {"logits": logits_BxLxC}

    # ------------------------------------------------------------ scoring and prediction
    def score(self, split: Split, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        sentences, _ = split.extra
        names = self.info.label_names
        predicted = tagging.word_tags(outputs["logits"], split.arrays, sentences, names)
        return entity_metrics([list(s.tags) for s in sentences], predicted)

    def predict_file(self, params: Any, steps: Steps, input_path: str, output_path: str) -> int:
        """One JSON object per sentence: {"tokens", "tags"}. Input: JSONL with `task.tokens_field`, a CoNLL file
        of words (first column), or plain text with one whitespace-tokenized sentence a line."""
        task = self.config.task
        if not os.path.isfile(input_path):
            raise FileNotFoundError(f"input file not found: {input_path}")
        if input_path.lower().endswith(".jsonl"):
            sentences = tagging.read_jsonl(input_path, task, labeled=False)
        elif input_path.lower().endswith((".conll", ".iob", ".bio", ".tsv")):
            sentences = tagging.read_conll(input_path, labeled=False, encoding=tagging.encoding_of(task))
        else:
            lines = read_text(input_path, tagging.encoding_of(task)).splitlines()
            sentences = [tagging.TaggedSentence(tuple(line.split()), (), f"{input_path}:{n}")
                         for n, line in enumerate(lines, start=1) if line.split()]
        if not sentences:
            raise UserError(f"{input_path}: no sentences")
        arrays = tagging.encode(sentences, self.tokenizer, int(task.seq_len), self.info.label_names)
        inputs = {k: arrays[k] for k in self.input_keys}
        logits = self.outputs(params, inputs, steps)[0]["logits"]
        tags = tagging.word_tags(logits, arrays, sentences, self.info.label_names)
        records = [{"tokens": list(s.words), "tags": t} for s, t in zip(sentences, tags)]
        if jax.process_index() == 0:
            write_atomic(output_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return len(records)
