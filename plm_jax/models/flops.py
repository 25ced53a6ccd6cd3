"""Training FLOPs counted per matmul (as MaxText does), for MFU.

Encoder attention is counted in full (not halved: there is no causal mask), and the sparse MLM head counts the
vocabulary projection only for the P predicted positions of each row, since that is all it computes.
"""

from __future__ import annotations

from plm_jax.models.config import TransformerConfig


def mlm_train_flops_per_step(cfg: TransformerConfig, batch: int, seq_len: int, predictions: int) -> float:
    """Forward + backward (3x forward) matmul FLOPs of one BertForMaskedLM training step."""
    d, v = cfg.hidden_size, cfg.vocab_size
    per_prediction = 2 * d * d + 2 * d * v  # head transform + vocabulary projection
    forward = batch * seq_len * encoder_flops_per_token(cfg, seq_len) + batch * predictions * per_prediction
    return 3.0 * forward


def encoder_flops_per_token(cfg: TransformerConfig, seq_len: int) -> float:
    """Forward matmul FLOPs of the encoder layers per token of a seq_len-token row (embeddings and heads aside):
    what a distilled student must cut (DistilBERT, TinyBERT and MiniLM compare models by it)."""
    d, a, f = cfg.hidden_size, cfg.attention_dim, cfg.mlp_dim  # a = d unless heads were pruned
    mlp_mats = 3 if cfg.mlp_activation == "geglu" else 2
    per_token_layer = 2 * 4 * d * a + 2 * mlp_mats * d * f + 2 * 2 * seq_len * a  # qkvo, mlp, QK^T and AV
    return float(cfg.num_layers * per_token_layer)


def matmul_params(cfg: TransformerConfig) -> int:
    """Weights that enter matmuls per token in the encoder (the N of the 6·N·T rule)."""
    d, a, f = cfg.hidden_size, cfg.attention_dim, cfg.mlp_dim
    mlp_mats = 3 if cfg.mlp_activation == "geglu" else 2
    return cfg.num_layers * (4 * d * a + mlp_mats * d * f)
