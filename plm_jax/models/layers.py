"""Transformer building blocks. Every parameter carries logical axis names.

Logical axes: `vocab`, `embed`, `mlp`, `heads`, `kv` (head dim), `length` (positions), `type` (token types).
One rule table in the config maps them to the mesh axes `data`, `fsdp`, `tensor` (see parallel/sharding.py).
Shapes in names: B batch, L length, D hidden, H heads, K head dim, F mlp, V vocab, P predictions.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from plm_jax.errors import UserError
from plm_jax.models.config import TransformerConfig
from plm_jax.parallel.sharding import constrain

_NEG_INF = -1e9  # finite, so that an all-masked (padding) query row stays NaN-free


def _init(cfg: TransformerConfig, axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std), axes)


def _zeros(axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def layer_norm(cfg: TransformerConfig, name: str | None = None) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=cfg.norm_output_dtype,  # statistics are fp32 whatever the output dtype (Flax promotes them)
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=_zeros(("embed",)),
        name=name,
    )


def dense(cfg: TransformerConfig, features, axes: tuple[str | None, ...], name: str | None = None,
          axis=-1) -> nn.DenseGeneral:
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


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's finalizer: a bijection on uint32 in which every input bit flips each output bit with
    probability about 1/2."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def dropout_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """32 random bits per element: a hash of the element's global index, keyed by two threefry words.

    Why not `jax.random.bits`: threefry runs 20 rounds per 64 bits, about 8% of a BERT-small train step on CPU
    at sequence length 128 and more at 512 (the attention probabilities are B x H x L x L). The hash is about 15
    integer ops per element, which XLA fuses into the consumer, so the bits are never stored. The index is
    global (iota along every axis, split like the activation), so a mesh draws the same mask as one device.
    """
    seed_row, seed_col = jax.random.bits(key, (2,), jnp.uint32)
    if not shape:
        return _fmix32(seed_row ^ _fmix32(seed_col))
    inner = 1
    for n in shape[1:]:
        inner *= n
    if inner >= 2**32:
        raise UserError(f"dropout on {shape}: the trailing axes hold {inner} >= 2**32 elements")
    col = jnp.zeros(shape, jnp.uint32)
    for axis in range(1, len(shape)):  # row-major index within the leading (batch) row
        col = col * jnp.uint32(shape[axis]) + jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
    row = _fmix32(jax.lax.broadcasted_iota(jnp.uint32, shape, 0) + seed_row)
    return _fmix32(row ^ _fmix32(col ^ seed_col))


class Dropout(nn.Module):
    """Inverted dropout whose mask comes from `dropout_bits`. An element is kept when its 32 bits reach
    round(rate * 2**32); kept values are scaled by the exact inverse of that keep probability (unbiased)."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0:
            return x
        if self.rate >= 1:
            return jnp.zeros_like(x)
        threshold = min(round(self.rate * 2**32), 2**32 - 1)
        keep = dropout_bits(self.make_rng("dropout"), x.shape) >= jnp.uint32(threshold)
        return jnp.where(keep, x * jnp.asarray(2**32 / (2**32 - threshold), x.dtype), jnp.zeros_like(x))


def causal_mask(segment_ids_BxL: jax.Array) -> jax.Array:
    """Packed causal rows: own segment and not later than the query (rows of a segment are contiguous)."""
    length = segment_ids_BxL.shape[1]
    return attention_mask(segment_ids_BxL) & jnp.tril(jnp.ones((length, length), bool))[None, None]


def cross_mask(decoder_segment_ids_BxT: jax.Array, encoder_segment_ids_BxS: jax.Array) -> jax.Array:
    """A decoder token attends to the encoder tokens of its own example (packed seq2seq rows as T5)."""
    same_BxTxS = decoder_segment_ids_BxT[:, :, None] == encoder_segment_ids_BxS[:, None, :]
    return (same_BxTxS & (encoder_segment_ids_BxS != 0)[:, None, :])[:, None, :, :]


def cached_mask(cache_segment_ids_BxC: jax.Array, segment_ids_BxT: jax.Array, index: jax.Array) -> jax.Array:
    """Decoding: new tokens at slots [index, index+T) see filled slots of their segment up to their own slot."""
    slots_C = jnp.arange(cache_segment_ids_BxC.shape[1])
    query_slots_T = index + jnp.arange(segment_ids_BxT.shape[1])
    same_BxTxC = (cache_segment_ids_BxC[:, None, :] == segment_ids_BxT[:, :, None]) & (cache_segment_ids_BxC != 0)[
        :, None, :]
    return (same_BxTxC & (slots_C[None, None, :] <= query_slots_T[None, :, None]))[:, None, :, :]


# Logical names of the activations between and inside layers (the config's rule table maps them to mesh axes).
EMBED_ACTIVATION = ("activation_batch", "activation_length", "activation_embed")
HEADS_ACTIVATION = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
MLP_ACTIVATION = ("activation_batch", "activation_length", "activation_mlp")


class Attention(nn.Module):
    """Multi-head attention. Self-attention reads keys and values from `x`; cross-attention and cached decoding
    pass them in as `kv` (from `kv()` of the context, computed once)."""

    cfg: TransformerConfig

    def setup(self) -> None:
        cfg = self.cfg
        shape = (cfg.num_heads, cfg.kv_dim)
        self.query = dense(cfg, shape, ("embed", "heads", "kv"))
        self.key = dense(cfg, shape, ("embed", "heads", "kv"))
        self.value = dense(cfg, shape, ("embed", "heads", "kv"))
        self.out = dense(cfg, cfg.hidden_size, ("heads", "kv", "embed"), axis=(-2, -1))
        self.dropout = Dropout(cfg.attention_dropout_rate)

    def kv(self, context_BxSxD: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.key(context_BxSxD), self.value(context_BxSxD)

    def __call__(self, x_BxTxD: jax.Array, mask_Bx1xTxS: jax.Array, deterministic: bool,
                 kv: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        cfg = self.cfg
        q_BxTxHxK = constrain(self.query(x_BxTxD), HEADS_ACTIVATION)
        k_BxSxHxK, v_BxSxHxK = self.kv(x_BxTxD) if kv is None else kv
        k_BxSxHxK, v_BxSxHxK = constrain(k_BxSxHxK, HEADS_ACTIVATION), constrain(v_BxSxHxK, HEADS_ACTIVATION)
        if cfg.attention != "einsum":  # fused kernels (cuDNN flash attention on GPUs); same mask semantics
            out_BxTxHxK = jax.nn.dot_product_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask=mask_Bx1xTxS,
                                                       implementation=cfg.attention)
            return self.out(out_BxTxHxK)
        q_BxTxHxK = q_BxTxHxK * jnp.asarray(cfg.kv_dim**-0.5, q_BxTxHxK.dtype)
        logits_BxHxTxS = jnp.einsum("bqhk,bthk->bhqt", q_BxTxHxK, k_BxSxHxK).astype(jnp.float32)
        logits_BxHxTxS = jnp.where(mask_Bx1xTxS, logits_BxHxTxS, _NEG_INF)
        probs_BxHxTxS = jax.nn.softmax(logits_BxHxTxS, axis=-1).astype(cfg.compute_dtype)
        probs_BxHxTxS = self.dropout(probs_BxHxTxS, deterministic=deterministic)
        out_BxTxHxK = constrain(jnp.einsum("bhqt,bthk->bqhk", probs_BxHxTxS, v_BxSxHxK), HEADS_ACTIVATION)
        return self.out(out_BxTxHxK)


class Mlp(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        cfg = self.cfg
        if cfg.mlp_activation == "geglu":
            gate_BxLxF = dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi_gate")(x_BxLxD)
            up_BxLxF = dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi")(x_BxLxD)
            h_BxLxF = gelu(gate_BxLxF) * up_BxLxF
        elif cfg.mlp_activation == "gelu":
            h_BxLxF = GeluDense(cfg, cfg.mlp_dim, name="wi")(x_BxLxD)
        else:
            h_BxLxF = activation(cfg.mlp_activation)(dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi")(x_BxLxD))
        h_BxLxF = constrain(h_BxLxF, MLP_ACTIVATION)
        return dense(cfg, cfg.hidden_size, ("mlp", "embed"), "wo")(h_BxLxF)


def _gelu_and_grad(z32: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The exact (erf) GELU and its derivative Phi(z) + z phi(z), from one erf, in fp32."""
    cdf = 0.5 * (1.0 + jax.lax.erf(z32 * (2.0**-0.5)))
    return z32 * cdf, cdf + z32 * jnp.exp(-0.5 * z32 * z32) * (2.0 * jnp.pi) ** -0.5


@jax.custom_vjp
def bias_gelu(h: jax.Array, bias: jax.Array) -> jax.Array:
    """gelu(h + bias), the exact (erf) GELU of BERT, with a hand-written gradient (fp32 math).

    Why: under plain autodiff XLA writes the biased pre-activation and an erf term in the forward pass and reads
    four activation-sized tensors in the backward pass. Here the gradient is dy * GELU'(h + bias), one pass, and
    the bias gradient a sum of it. In the compiled BERT-base GPU step (configs/bench/bert_base.py, deviceless
    H200 compile, counted by perf/roofline.py) the traffic outside the matmuls fell from 66.8 to 57.1 GB.
    """
    return _bias_gelu_fwd(h, bias)[0]


def _bias_gelu_fwd(h: jax.Array, bias: jax.Array) -> tuple[jax.Array, jax.Array]:
    y32, dy_dz32 = _gelu_and_grad(h.astype(jnp.float32) + bias.astype(jnp.float32))
    return y32.astype(h.dtype), dy_dz32.astype(h.dtype)


def _bias_gelu_bwd(dy_dz: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    dz = (g.astype(jnp.float32) * dy_dz.astype(jnp.float32)).astype(g.dtype)
    db = jax.lax.platform_dependent(dz.reshape(-1, dz.shape[-1]), cpu=_column_sum, default=_ones_matmul)
    return dz, db.astype(dz.dtype)  # callers pass the bias in h's dtype (GeluDense casts both to the compute dtype)


def _column_sum(rows_NxF: jax.Array) -> jax.Array:
    return jnp.sum(rows_NxF.astype(jnp.float32), axis=0)


def _ones_matmul(rows_NxF: jax.Array) -> jax.Array:
    """The column sum as a matmul with ones. On GPUs, XLA will not fuse the GELU derivative (erf, exp) into a
    column reduction, so a reduction has it write and read an fp32 copy of dz: 9.7 GB a step of BERT-base on an
    H200, where the matmul reads 2.4 GB. On CPUs the reduction is faster (XLA:CPU runs this product slowly)."""
    ones_N = jnp.ones(rows_NxF.shape[:1], rows_NxF.dtype)
    return jnp.einsum("n,nf->f", ones_N, rows_NxF, preferred_element_type=jnp.float32)


bias_gelu.defvjp(_bias_gelu_fwd, _bias_gelu_bwd)


def gelu(x: jax.Array) -> jax.Array:
    """The exact (erf) GELU with `bias_gelu`'s gradient (a zero bias folds away)."""
    return bias_gelu(x, jnp.zeros((x.shape[-1],), x.dtype))


class GeluDense(nn.Module):
    """`dense(cfg, features, ("embed", "mlp"))` then the exact GELU: the same parameters (names, shapes, axes,
    initial values), with the bias add inside `bias_gelu`'s gradient."""

    cfg: TransformerConfig
    features: int

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        cfg = self.cfg
        kernel_DxF = self.param("kernel", _init(cfg, ("embed", "mlp")), (x_BxLxD.shape[-1], self.features))
        bias_F = self.param("bias", _zeros(("mlp",)), (self.features,))
        x_BxLxD, kernel_DxF, bias_F = promote_dtype(x_BxLxD, kernel_DxF, bias_F, dtype=cfg.compute_dtype)
        h_BxLxF = jax.lax.dot_general(x_BxLxD, kernel_DxF, (((x_BxLxD.ndim - 1,), (0,)), ((), ())))
        return bias_gelu(h_BxLxF, bias_F)


def activation(name: str):
    return {
        "gelu": gelu,
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
        attn, mlp = Attention(cfg, name="attention"), Mlp(cfg, name="mlp")
        attn_ln, mlp_ln = layer_norm(cfg, "attention_layer_norm"), layer_norm(cfg, "mlp_layer_norm")
        if cfg.pre_layer_norm:
            x_BxLxD = x_BxLxD + drop(attn(attn_ln(x_BxLxD), mask_Bx1xLxL, deterministic), deterministic)
            return constrain(x_BxLxD + drop(mlp(mlp_ln(x_BxLxD)), deterministic), EMBED_ACTIVATION)
        x_BxLxD = attn_ln(x_BxLxD + drop(attn(x_BxLxD, mask_Bx1xLxL, deterministic), deterministic))
        return constrain(mlp_ln(x_BxLxD + drop(mlp(x_BxLxD), deterministic)), EMBED_ACTIVATION)


class Embeddings(nn.Module):
    """Word + learned absolute position (+ token type) embeddings, then LayerNorm (BERT; GPT-2 has none) and
    dropout. `shared` is a word-embedding module owned elsewhere (an encoder-decoder's one table)."""

    cfg: TransformerConfig
    shared: nn.Module | None = None

    def setup(self) -> None:
        cfg = self.cfg
        if self.shared is None:
            self.word_embeddings = nn.Embed(
                cfg.vocab_size, cfg.hidden_size, embedding_init=_init(cfg, ("vocab", "embed")))
        self.position_embeddings = self.param(
            "position_embeddings", _init(cfg, ("length", "embed")), (cfg.max_len, cfg.hidden_size)
        )
        if cfg.type_vocab_size:
            self.token_type_embeddings = self.param(
                "token_type_embeddings", _init(cfg, ("type", "embed")), (cfg.type_vocab_size, cfg.hidden_size)
            )
        if cfg.embedding_layer_norm:
            self.layer_norm = layer_norm(cfg)
        self.dropout = Dropout(cfg.dropout_rate)

    def _table(self) -> nn.Embed:
        return self.word_embeddings if self.shared is None else self.shared

    def __call__(
        self, ids_BxL: jax.Array, positions_BxL: jax.Array, token_types_BxL: jax.Array | None, deterministic: bool
    ) -> jax.Array:
        # Lookups read whole rows: under FSDP the tables' `embed` columns are gathered first, as for any weight,
        # so that the rows land split over the batch like every other activation.
        def lookup(table_NxD: jax.Array, rows_axis: str, ids: jax.Array) -> jax.Array:
            return jnp.take(constrain(table_NxD, (rows_axis, None)), ids, axis=0)

        x_BxLxD = lookup(self._table().embedding, "vocab", ids_BxL)
        x_BxLxD = x_BxLxD + lookup(self.position_embeddings, "length", positions_BxL)
        if self.cfg.type_vocab_size:
            types_BxL = jnp.zeros_like(ids_BxL) if token_types_BxL is None else token_types_BxL
            x_BxLxD = x_BxLxD + lookup(self.token_type_embeddings, "type", types_BxL)
        x_BxLxD = constrain(x_BxLxD, EMBED_ACTIVATION)
        if self.cfg.embedding_layer_norm:
            x_BxLxD = self.layer_norm(x_BxLxD)
        return self.dropout(x_BxLxD.astype(self.cfg.compute_dtype), deterministic=deterministic)

    def attend(self, x_BxPxD: jax.Array) -> jax.Array:
        """The tied output projection: logits against the word-embedding table."""
        table_VxD = self._table().embedding.astype(self.cfg.compute_dtype)
        return jnp.einsum("bpd,vd->bpv", x_BxPxD.astype(self.cfg.compute_dtype), table_VxD)
