"""Fine-tuning models: the encoder with a classification/regression head or an extractive-QA span head, and
the causal decoder with a classification/regression head.

Parameter names follow Hugging Face's `BertForSequenceClassification` / `BertForQuestionAnswering`
(`encoder`, `pooler`, `classifier`, `qa_outputs`), so a pretrained `BertForMaskedLM` tree (encoder + pooler) and a
converted Hugging Face checkpoint both drop in by subtree. The decoder head keeps `CausalLM`'s names (`embeddings`,
`decoder`) and `GPT2ForSequenceClassification`'s `score`, so a causal-LM run's tree drops in the same way.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from plm_jax.errors import UserError
from plm_jax.models.config import TransformerConfig
from plm_jax.models.decoder import DecoderStack
from plm_jax.models.encoder import Encoder
from plm_jax.models.layers import Dropout, Embeddings, causal_mask, dense

POOLINGS = ("cls", "mean")


class BertForSequenceClassification(nn.Module):
    """pooled output -> dropout -> dense(num_labels). num_labels=1 is regression (STS-B).

    `pooling="cls"` reads the [CLS] token, as Hugging Face. `"mean"` averages the outputs of the text's tokens
    instead, for models whose [CLS] output was never trained (masked LM without next-sentence prediction); the
    pooler's dense + tanh still follow, so the parameters are the same. From the CPU-hour recipe on Rotten Tomatoes
    it measured no gain over [CLS] (docs/benchmarks.md).
    """

    cfg: TransformerConfig
    num_labels: int
    classifier_dropout: float | None = None  # None: the model's hidden dropout, as Hugging Face
    pooling: str = "cls"

    def setup(self) -> None:
        cfg = self.cfg
        if not cfg.use_pooler:
            raise UserError("sequence classification reads the pooled output: set model.use_pooler=True")
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
        if self.pooling == "mean":
            text_BxLx1 = (segment_ids_BxL > 0)[..., None].astype(jnp.float32)  # summed in float32, as bf16 would lose
            summary_BxD = (jnp.sum(x_BxLxD.astype(jnp.float32) * text_BxLx1, axis=1)
                           / jnp.maximum(jnp.sum(text_BxLx1, axis=1), 1)).astype(x_BxLxD.dtype)
        else:
            summary_BxD = x_BxLxD[:, 0]
        pooled_BxD = jnp.tanh(self.pooler(summary_BxD))
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


class BertForTokenClassification(nn.Module):
    """Token outputs -> dropout -> dense(num_labels): a tag score per token (NER, POS), as Hugging Face's
    `BertForTokenClassification` (no pooler)."""

    cfg: TransformerConfig
    num_labels: int
    classifier_dropout: float | None = None  # None: the model's hidden dropout, as Hugging Face

    def setup(self) -> None:
        self.encoder = Encoder(self.cfg)
        self.classifier = dense(self.cfg, self.num_labels, ("embed", "labels"), "classifier")
        rate = self.cfg.dropout_rate if self.classifier_dropout is None else self.classifier_dropout
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
        """Returns logits B x L x num_labels in float32."""
        x_BxLxD = self.encoder(input_ids_BxL, segment_ids_BxL, positions_BxL, token_type_ids_BxL,
                               deterministic=deterministic)
        x_BxLxD = self.dropout(x_BxLxD, deterministic=deterministic)
        return self.classifier(x_BxLxD).astype(jnp.float32)


class DecoderForSequenceClassification(nn.Module):
    """GPT-style classification (as Hugging Face's `GPT2ForSequenceClassification`): a causal decoder has no
    [CLS] summary, so the hidden state of each row's last real token, the one that has seen the whole text, is
    scored: dropout -> dense(num_labels) without bias. num_labels=1 is regression."""

    cfg: TransformerConfig
    num_labels: int
    classifier_dropout: float | None = None  # None: the model's hidden dropout, as the BERT head

    def setup(self) -> None:
        cfg = self.cfg
        if cfg.architecture != "decoder":
            raise UserError(f"DecoderForSequenceClassification needs model.architecture='decoder', "
                             f"got {cfg.architecture!r}")
        self.embeddings = Embeddings(cfg)
        self.decoder = DecoderStack(cfg)
        self.score = nn.DenseGeneral(
            self.num_labels, use_bias=False, dtype=cfg.compute_dtype, name="score",
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std), ("embed", "labels")))
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
        """Returns logits B x num_labels in float32 (B x 1 for regression). Token types count only when the
        model has a token-type table (type_vocab_size > 0; GPT-2 has none)."""
        x_BxLxD = self.embeddings(input_ids_BxL, positions_BxL, token_type_ids_BxL, deterministic)
        x_BxLxD, _ = self.decoder(x_BxLxD, causal_mask(segment_ids_BxL), deterministic=deterministic)
        last_BxD = x_BxLxD[jnp.arange(x_BxLxD.shape[0]), last_token_index(segment_ids_BxL)]
        last_BxD = self.dropout(last_BxD, deterministic=deterministic)
        return self.score(last_BxD).astype(jnp.float32)


def last_token_index(segment_ids_BxL: jax.Array) -> jax.Array:
    """Per row, the position of the last real token (segment id != 0), wherever the padding is; 0 for a row of
    padding only. Hugging Face's rule too (the rightmost non-pad token)."""
    positions_L = jnp.arange(segment_ids_BxL.shape[1], dtype=jnp.int32)
    return jnp.max(jnp.where(segment_ids_BxL != 0, positions_L, 0), axis=1)


def needs_encoder(kind: str, architecture: str) -> None:
    """A head that reads every token with both-sided context (extractive QA, tagging) needs an encoder."""
    if architecture == "encoder":
        return
    if architecture == "decoder":
        raise UserError(f"task.kind={kind!r} needs an encoder (BERT, objective mlm): the starting point is a causal "
                        "decoder (model.architecture='decoder'), which only has classification and regression heads")
    raise UserError(f"task.kind={kind!r} has no head for model.architecture={architecture!r} (a span-corruption "
                    "run): fine-tune it on translation, or start from an mlm or causal_lm run")


def sequence_classifier(cfg: TransformerConfig, num_labels: int, classifier_dropout: float | None = None,
                        kind: str = "classification", pooling: str = "cls") -> nn.Module:
    """The sequence classification/regression model for the pretrained architecture: BERT's pooled [CLS] (or the
    mean of its token outputs), or a causal decoder's last token."""
    if pooling not in POOLINGS:
        raise UserError(f"task.pooling={pooling!r}; expected one of {POOLINGS}")
    if cfg.architecture == "decoder":
        if pooling != "cls":
            raise UserError(f"task.pooling={pooling!r} is for encoders (BERT); a causal decoder reads its last token")
        return DecoderForSequenceClassification(cfg, num_labels, classifier_dropout)
    if cfg.architecture == "encoder":
        return BertForSequenceClassification(cfg, num_labels, classifier_dropout, pooling)
    raise UserError(f"task.kind={kind!r} has no head for model.architecture={cfg.architecture!r} (a span-corruption "
                    "run): fine-tune it on translation, or start from an mlm or causal_lm run")


def finetune_dummy_inputs(cfg: TransformerConfig, batch_size: int = 1, seq_len: int | None = None):
    ids_BxL = jnp.zeros((batch_size, seq_len or cfg.max_len), jnp.int32)
    return dict(input_ids_BxL=ids_BxL, segment_ids_BxL=ids_BxL + 1, positions_BxL=ids_BxL,
                token_type_ids_BxL=ids_BxL)
