"""Fine-tuning models: the encoder with a classification/regression head or an extractive-QA span head.

Parameter names follow Hugging Face's `BertForSequenceClassification` / `BertForQuestionAnswering`
(`encoder`, `pooler`, `classifier`, `qa_outputs`), so a pretrained `BertForMaskedLM` tree (encoder + pooler) and a
converted Hugging Face checkpoint both drop in by subtree.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from plm_jax.models.config import TransformerConfig
from plm_jax.models.encoder import Encoder
from plm_jax.models.layers import Dropout, dense


class BertForSequenceClassification(nn.Module):
    """pooled output -> dropout -> dense(num_labels). num_labels=1 is regression (STS-B)."""

    cfg: TransformerConfig
    num_labels: int
    classifier_dropout: float | None = None  # None: the model's hidden dropout, as Hugging Face

    def setup(self) -> None:
        cfg = self.cfg
        if not cfg.use_pooler:
            raise ValueError("sequence classification reads the pooled output: set model.use_pooler=True")
        self.encoder = Encoder(cfg)
        self.pooler = dense(cfg, cfg.hidden_size, ("embed", "embed_out"), "pooler")
        self.classifier = dense(cfg, self.num_labels, ("embed", "labels"), "classifier")
        rate = cfg.dropout_rate if self.classifier_dropout is None else self.classifier_dropout
        self.dropout = Dropout(rate)

    def __call__(
        self,
        input_ids_BxL: jax.Array,
        segment_ids_BxL: jax.Array,
        positions_BxL: jax.Array,
        token_type_ids_BxL: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        """Returns logits B x num_labels in float32 (B x 1 for regression)."""
        x_BxLxD = self.encoder(input_ids_BxL, segment_ids_BxL, positions_BxL, token_type_ids_BxL,
                               deterministic=deterministic)
        pooled_BxD = jnp.tanh(self.pooler(x_BxLxD[:, 0]))
        pooled_BxD = self.dropout(pooled_BxD, deterministic=deterministic)
        return self.classifier(pooled_BxD).astype(jnp.float32)


class BertForQuestionAnswering(nn.Module):
    """Token outputs -> dense(2): start and end logits per token (no pooler, as Hugging Face)."""

    cfg: TransformerConfig

    def setup(self) -> None:
        self.encoder = Encoder(self.cfg)
        self.qa_outputs = dense(self.cfg, 2, ("embed", "labels"), "qa_outputs")

    def __call__(
        self,
        input_ids_BxL: jax.Array,
        segment_ids_BxL: jax.Array,
        positions_BxL: jax.Array,
        token_type_ids_BxL: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> tuple[jax.Array, jax.Array]:
        """Returns (start_logits_BxL, end_logits_BxL) in float32; padding positions are not masked here."""
        x_BxLxD = self.encoder(input_ids_BxL, segment_ids_BxL, positions_BxL, token_type_ids_BxL,
                               deterministic=deterministic)
        logits_BxLx2 = self.qa_outputs(x_BxLxD).astype(jnp.float32)
        return logits_BxLx2[..., 0], logits_BxLx2[..., 1]


def finetune_dummy_inputs(cfg: TransformerConfig, batch_size: int = 1, seq_len: int | None = None):
    ids_BxL = jnp.zeros((batch_size, seq_len or cfg.max_len), jnp.int32)
    return dict(input_ids_BxL=ids_BxL, segment_ids_BxL=ids_BxL + 1, positions_BxL=ids_BxL,
                token_type_ids_BxL=ids_BxL)
