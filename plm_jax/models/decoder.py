"""The decoder stack (causal self-attention, optional cross-attention) and the GPT-style causal LM.

Decoding uses an explicit key/value cache, a pytree whose leaves all lead with the batch axis, so that beam
search can expand and reorder it with one gather:
  {"segment_ids": BxC (0 = empty slot), "layers": [{"key", "value": BxCxHxK,
   ("cross_key", "cross_value": BxSxHxK when the model has cross-attention)} per layer]}
A call with T new tokens writes slots [index, index+T). Cached decoding runs the unscanned layout
(`decoding_setup` converts a scanned model), because the cross-attention keys are projected per layer up front.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from plm_jax.errors import UserError
from plm_jax.models.config import TransformerConfig
from plm_jax.models.layers import (
    EMBED_ACTIVATION,
    Attention,
    Dropout,
    Embeddings,
    Mlp,
    cached_mask,
    causal_mask,
    layer_norm,
)
from plm_jax.parallel.sharding import constrain

Cache = dict[str, Any]


class DecoderLayer(nn.Module):
    """Self-attention (causal), cross-attention to the encoder output (encoder-decoder only), MLP.
    Without cross-attention the parameters are those of an encoder layer: a GPT-2 block."""

    cfg: TransformerConfig

    def setup(self) -> None:
        cfg = self.cfg
        self.attention = Attention(cfg)
        self.attention_layer_norm = layer_norm(cfg)
        if cfg.has_cross_attention:
            self.cross_attention = Attention(cfg)
            self.cross_attention_layer_norm = layer_norm(cfg)
        self.mlp = Mlp(cfg)
        self.mlp_layer_norm = layer_norm(cfg)
        self.dropout = Dropout(cfg.dropout_rate)

    def cross_kv(self, encoded_BxSxD: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.cross_attention.kv(encoded_BxSxD)

    def __call__(
        self,
        x_BxTxD: jax.Array,
        self_mask_Bx1xTxC: jax.Array,
        encoded_BxSxD: jax.Array | None,
        cross_mask_Bx1xTxS: jax.Array | None,
        deterministic: bool,
        cache: Cache | None = None,
        index: jax.Array | None = None,
    ) -> tuple[jax.Array, Cache | None]:
        cfg = self.cfg

        def self_attention(h_BxTxD: jax.Array) -> tuple[jax.Array, Cache | None]:
            if cache is None:
                return self.attention(h_BxTxD, self_mask_Bx1xTxC, deterministic), None
            k_BxTxHxK, v_BxTxHxK = self.attention.kv(h_BxTxD)
            start = (0, index, 0, 0)
            k_BxCxHxK = jax.lax.dynamic_update_slice(cache["key"], k_BxTxHxK.astype(cache["key"].dtype), start)
            v_BxCxHxK = jax.lax.dynamic_update_slice(cache["value"], v_BxTxHxK.astype(cache["value"].dtype), start)
            out = self.attention(h_BxTxD, self_mask_Bx1xTxC, deterministic, kv=(k_BxCxHxK, v_BxCxHxK))
            return out, {**cache, "key": k_BxCxHxK, "value": v_BxCxHxK}

        def cross_attention(h_BxTxD: jax.Array) -> jax.Array:
            kv = (cache["cross_key"], cache["cross_value"]) if cache is not None else self.cross_kv(encoded_BxSxD)
            return self.cross_attention(h_BxTxD, cross_mask_Bx1xTxS, deterministic, kv=kv)

        drop = lambda h: self.dropout(h, deterministic=deterministic)
        if cfg.pre_layer_norm:
            attn, new_cache = self_attention(self.attention_layer_norm(x_BxTxD))
            x_BxTxD = x_BxTxD + drop(attn)
            if cfg.has_cross_attention:
                x_BxTxD = x_BxTxD + drop(cross_attention(self.cross_attention_layer_norm(x_BxTxD)))
            return constrain(x_BxTxD + drop(self.mlp(self.mlp_layer_norm(x_BxTxD))), EMBED_ACTIVATION), new_cache
        attn, new_cache = self_attention(x_BxTxD)
        x_BxTxD = self.attention_layer_norm(x_BxTxD + drop(attn))
        if cfg.has_cross_attention:
            x_BxTxD = self.cross_attention_layer_norm(x_BxTxD + drop(cross_attention(x_BxTxD)))
        return constrain(self.mlp_layer_norm(x_BxTxD + drop(self.mlp(x_BxTxD))), EMBED_ACTIVATION), new_cache


def _remat(policy: str) -> type[nn.Module]:
    if policy == "none":
        return DecoderLayer
    from plm_jax.models.encoder import REMAT_POLICIES_JAX

    # (self, x, self_mask, encoded, cross_mask, deterministic, ...): deterministic is static
    return nn.remat(DecoderLayer, policy=REMAT_POLICIES_JAX[policy], static_argnums=(5,))


class _ScannedDecoderLayer(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BxTxD, self_mask, encoded, cross_mask, deterministic):
        layer = _remat(self.cfg.remat)(self.cfg, name="layer")
        return layer(x_BxTxD, self_mask, encoded, cross_mask, deterministic)[0], None


class DecoderStack(nn.Module):
    """The layers and (pre-LN) the final LayerNorm; embeddings and the output head belong to the model."""

    cfg: TransformerConfig

    def setup(self) -> None:
        cfg = self.cfg
        n = cfg.decoder_layers
        if cfg.scan_layers:
            self.layers = nn.scan(
                _ScannedDecoderLayer,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
                length=n,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, name="layers")
        else:
            self.layers = [_remat(cfg.remat)(cfg, name=f"layer_{i}") for i in range(n)]
        if cfg.pre_layer_norm:
            self.final_layer_norm = layer_norm(cfg)

    def __call__(
        self,
        x_BxTxD: jax.Array,
        self_mask_Bx1xTxC: jax.Array,
        encoded_BxSxD: jax.Array | None = None,
        cross_mask_Bx1xTxS: jax.Array | None = None,
        *,
        deterministic: bool = True,
        layer_caches: list[Cache] | None = None,
        index: jax.Array | None = None,
    ) -> tuple[jax.Array, list[Cache] | None]:
        new_caches = None
        if self.cfg.scan_layers:
            if layer_caches is not None:
                raise UserError("cached decoding needs the unscanned layout: use models.decoder.decoding_setup")
            if not self.cfg.pre_layer_norm:  # a post-LN layer returns its LayerNorm's dtype: the scan carries that
                x_BxTxD = x_BxTxD.astype(self.cfg.norm_output_dtype)
            x_BxTxD, _ = self.layers(x_BxTxD, self_mask_Bx1xTxC, encoded_BxSxD, cross_mask_Bx1xTxS, deterministic)
        else:
            new_caches = [] if layer_caches is not None else None
            for i, layer in enumerate(self.layers):
                cache = None if layer_caches is None else layer_caches[i]
                x_BxTxD, cache = layer(x_BxTxD, self_mask_Bx1xTxC, encoded_BxSxD, cross_mask_Bx1xTxS, deterministic,
                                       cache, index)
                if new_caches is not None:
                    new_caches.append(cache)
        if self.cfg.pre_layer_norm:
            x_BxTxD = self.final_layer_norm(x_BxTxD)
        return x_BxTxD, new_caches

    def cross_kv(self, encoded_BxSxD: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        return [layer.cross_kv(encoded_BxSxD) for layer in self.layers]


def lm_head(cfg: TransformerConfig) -> nn.Module:
    """The untied output projection (no bias, as GPT-2 and T5)."""
    return nn.DenseGeneral(cfg.vocab_size, use_bias=False, dtype=cfg.compute_dtype,
                           kernel_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std),
                                                                    ("embed", "vocab")))


class CausalLM(nn.Module):
    """GPT: embeddings, causal decoder layers over packed rows (no attention across documents), tied head."""

    cfg: TransformerConfig

    def setup(self) -> None:
        cfg = self.cfg
        if cfg.architecture != "decoder":
            raise UserError(f"CausalLM needs model.architecture='decoder', got {cfg.architecture!r}")
        self.embeddings = Embeddings(cfg)
        self.decoder = DecoderStack(cfg)
        if not cfg.tie_embeddings:
            self.lm_head = lm_head(cfg)

    def _logits(self, x_BxTxD: jax.Array) -> jax.Array:
        logits = self.embeddings.attend(x_BxTxD) if self.cfg.tie_embeddings else self.lm_head(x_BxTxD)
        return logits.astype(jnp.float32)

    def __call__(self, input_ids_BxL: jax.Array, segment_ids_BxL: jax.Array, positions_BxL: jax.Array, *,
                 deterministic: bool = True) -> jax.Array:
        """Next-token logits for every position, B x L x V (float32)."""
        x_BxLxD = self.embeddings(input_ids_BxL, positions_BxL, None, deterministic)
        x_BxLxD, _ = self.decoder(x_BxLxD, causal_mask(segment_ids_BxL), deterministic=deterministic)
        return self._logits(x_BxLxD)

    def decode(self, input_ids_BxT: jax.Array, segment_ids_BxT: jax.Array, positions_BxT: jax.Array,
               cache: Cache, index: jax.Array) -> tuple[jax.Array, Cache]:
        """T new tokens (a prompt, or one generated token) at cache slots [index, index+T) -> logits, cache."""
        segs_BxC = jax.lax.dynamic_update_slice(cache["segment_ids"], segment_ids_BxT, (0, index))
        x_BxTxD = self.embeddings(input_ids_BxT, positions_BxT, None, True)
        x_BxTxD, layers = self.decoder(x_BxTxD, cached_mask(segs_BxC, segment_ids_BxT, index),
                                       layer_caches=cache["layers"], index=index)
        return self._logits(x_BxTxD), {"segment_ids": segs_BxC, "layers": layers}


def init_cache(cfg: TransformerConfig, batch_size: int, length: int, num_layers: int | None = None) -> Cache:
    """An empty cache of `length` slots (prompt + generated tokens)."""
    kv = jnp.zeros((batch_size, length, cfg.num_heads, cfg.kv_dim), cfg.compute_dtype)
    layers = [{"key": kv, "value": kv} for _ in range(num_layers or cfg.decoder_layers)]
    return {"segment_ids": jnp.zeros((batch_size, length), jnp.int32), "layers": layers}


def decoding_setup(cfg: TransformerConfig, params: Any) -> tuple[TransformerConfig, Any]:
    """The config and parameters for cached decoding: unscanned layout, no remat, no dropout."""
    if cfg.scan_layers:
        from plm_jax.models.layout import to_unscanned

        params = to_unscanned(params)
    return dataclasses.replace(cfg, scan_layers=False, remat="none", dropout_rate=0.0,
                               attention_dropout_rate=0.0), params


def causal_dummy_inputs(cfg: TransformerConfig, batch_size: int = 1, seq_len: int | None = None):
    ids_BxL = jnp.zeros((batch_size, seq_len or cfg.max_len), jnp.int32)
    return dict(input_ids_BxL=ids_BxL, segment_ids_BxL=ids_BxL + 1, positions_BxL=ids_BxL)
