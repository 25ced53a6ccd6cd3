"""Transformer building blocks. Every parameter carries logical axis names.

Logical axes: `vocab`, `embed`, `mlp`, `heads`, `kv` (head dim), `length` (positions), `type` (token types).
One rule table in the config maps them to the mesh axes `data`, `fsdp`, `tensor` (see parallel/sharding.py).
Shapes in names: B batch, L length, D hidden, H heads, K head dim, F mlp, V vocab, P predictions.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from plm_jax.models.config import TransformerConfig

_NEG_INF = -1e9  # finite, so that an all-masked (padding) query row stays NaN-free


def _init(cfg: TransformerConfig, axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std), axes)


def _zeros(axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def layer_norm(cfg: TransformerConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=jnp.float32,  # statistics in fp32 whatever the compute dtype
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=_zeros(("embed",)),
        name=name,
    )


def dense(cfg: TransformerConfig, features, axes: tuple[str | None, ...], name: str, axis=-1) -> nn.DenseGeneral:
    """A DenseGeneral whose kernel axes are `axes` and whose bias axes are the output part of them."""
    n_out = 1 if isinstance(features, int) else len(features)
    return nn.DenseGeneral(
        features=features,
        axis=axis,
        dtype=cfg.compute_dtype,
        kernel_init=_init(cfg, axes),
        bias_init=_zeros(axes[-n_out:]),
        name=name,
    )


def attention_mask(segment_ids_BxL: jax.Array) -> jax.Array:
    """Packed rows: a token attends only to tokens of its own segment; segment 0 is padding."""
    same_BxLxL = segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]
    valid_BxL = segment_ids_BxL != 0
    return (same_BxLxL & valid_BxL[:, None, :])[:, None, :, :]  # Bx1xLxL, broadcast over heads


class Dropout(nn.Module):
    """Dropout that draws 16 random bits per element instead of 32: half the PRNG work, which is a sixth of
    a BERT-mini train step on CPU. The rate is rounded to a multiple of 1/65536 and the kept values are scaled
    by the exact inverse keep probability, so it is unbiased."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        threshold = round(self.rate * 65536)
        if deterministic or threshold == 0:
            return x
        *lead, last = x.shape  # keep the leading (batch) axes, so the bits shard like x
        words = jax.random.bits(self.make_rng("dropout"), (*lead, (last + 1) // 2), jnp.uint32)
        bits = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(*lead, -1)[..., :last]
        keep = bits >= jnp.uint16(threshold)
        return jnp.where(keep, x * jnp.asarray(65536 / (65536 - threshold), x.dtype), jnp.zeros_like(x))


class SelfAttention(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, mask_Bx1xLxL: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.cfg
        shape = (cfg.num_heads, cfg.head_dim)
        q_BxLxHxK = dense(cfg, shape, ("embed", "heads", "kv"), "query")(x_BxLxD)
        k_BxLxHxK = dense(cfg, shape, ("embed", "heads", "kv"), "key")(x_BxLxD)
        v_BxLxHxK = dense(cfg, shape, ("embed", "heads", "kv"), "value")(x_BxLxD)

        if cfg.attention != "einsum":  # fused kernels (cuDNN flash attention on GPUs); same mask semantics
            out_BxLxHxK = jax.nn.dot_product_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask=mask_Bx1xLxL,
                                                       implementation=cfg.attention)
            return dense(cfg, cfg.hidden_size, ("heads", "kv", "embed"), "out", axis=(-2, -1))(out_BxLxHxK)
        q_BxLxHxK = q_BxLxHxK * jnp.asarray(cfg.head_dim**-0.5, q_BxLxHxK.dtype)
        logits_BxHxLxL = jnp.einsum("bqhk,bthk->bhqt", q_BxLxHxK, k_BxLxHxK).astype(jnp.float32)
        logits_BxHxLxL = jnp.where(mask_Bx1xLxL, logits_BxHxLxL, _NEG_INF)
        probs_BxHxLxL = jax.nn.softmax(logits_BxHxLxL, axis=-1).astype(cfg.compute_dtype)
        probs_BxHxLxL = Dropout(cfg.attention_dropout_rate)(probs_BxHxLxL, deterministic=deterministic)
        out_BxLxHxK = jnp.einsum("bhqt,bthk->bqhk", probs_BxHxLxL, v_BxLxHxK)
        return dense(cfg, cfg.hidden_size, ("heads", "kv", "embed"), "out", axis=(-2, -1))(out_BxLxHxK)


class Mlp(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        cfg = self.cfg
        if cfg.mlp_activation == "geglu":
            gate_BxLxF = dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi_gate")(x_BxLxD)
            up_BxLxF = dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi")(x_BxLxD)
            h_BxLxF = nn.gelu(gate_BxLxF, approximate=False) * up_BxLxF
        else:
            h_BxLxF = activation(cfg.mlp_activation)(dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi")(x_BxLxD))
        return dense(cfg, cfg.hidden_size, ("mlp", "embed"), "wo")(h_BxLxF)


def activation(name: str):
    return {
        "gelu": lambda x: nn.gelu(x, approximate=False),
        "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
        "relu": nn.relu,
    }[name]


class EncoderLayer(nn.Module):
    """One block; post-LN (BERT) or pre-LN (GPT-2/ T5 style), chosen by the config."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, mask_Bx1xLxL: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.cfg
        drop = Dropout(cfg.dropout_rate)
        attn, mlp = SelfAttention(cfg, name="attention"), Mlp(cfg, name="mlp")
        attn_ln, mlp_ln = layer_norm(cfg, "attention_layer_norm"), layer_norm(cfg, "mlp_layer_norm")
        if cfg.pre_layer_norm:
            x_BxLxD = x_BxLxD + drop(attn(attn_ln(x_BxLxD), mask_Bx1xLxL, deterministic), deterministic)
            return x_BxLxD + drop(mlp(mlp_ln(x_BxLxD)), deterministic)
        x_BxLxD = attn_ln(x_BxLxD + drop(attn(x_BxLxD, mask_Bx1xLxL, deterministic), deterministic))
        return mlp_ln(x_BxLxD + drop(mlp(x_BxLxD), deterministic))


class Embeddings(nn.Module):
    """Word + learned absolute position + token type embeddings, then LayerNorm and dropout (as BERT)."""

    cfg: TransformerConfig

    def setup(self) -> None:
        cfg = self.cfg
        self.word_embeddings = nn.Embed(
            cfg.vocab_size, cfg.hidden_size, embedding_init=_init(cfg, ("vocab", "embed")), name="word_embeddings"
        )
        self.position_embeddings = self.param(
            "position_embeddings", _init(cfg, ("length", "embed")), (cfg.max_len, cfg.hidden_size)
        )
        self.token_type_embeddings = self.param(
            "token_type_embeddings", _init(cfg, ("type", "embed")), (cfg.type_vocab_size, cfg.hidden_size)
        )
        self.layer_norm = layer_norm(cfg, "layer_norm")
        self.dropout = Dropout(cfg.dropout_rate)

    def __call__(
        self, ids_BxL: jax.Array, positions_BxL: jax.Array, token_types_BxL: jax.Array, deterministic: bool
    ) -> jax.Array:
        x_BxLxD = self.word_embeddings(ids_BxL)
        x_BxLxD = x_BxLxD + jnp.take(self.position_embeddings, positions_BxL, axis=0)
        x_BxLxD = x_BxLxD + jnp.take(self.token_type_embeddings, token_types_BxL, axis=0)
        x_BxLxD = self.layer_norm(x_BxLxD).astype(self.cfg.compute_dtype)
        return self.dropout(x_BxLxD, deterministic=deterministic)

    def attend(self, x_BxPxD: jax.Array) -> jax.Array:
        """The tied output projection: logits against the word-embedding table."""
        table_VxD = self.word_embeddings.embedding.astype(self.cfg.compute_dtype)
        return jnp.einsum("bpd,vd->bpv", x_BxPxD.astype(self.cfg.compute_dtype), table_VxD)
