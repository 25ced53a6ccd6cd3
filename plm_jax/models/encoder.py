"""A BERT-style Transformer encoder and its masked-LM model.

With post-LN, exact GELU, learned positions, token types, the pooler and the MLM head (transform + tied decoder
+ bias), the parameters map one to one onto Hugging Face's `BertForPreTraining` minus the NSP head.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from plm_jax.models.config import TransformerConfig
from plm_jax.models.layers import Embeddings, EncoderLayer, activation, attention_mask, dense, layer_norm

REMAT_POLICIES_JAX = {
    "full": None,  # keep nothing: least memory, one more forward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,  # keep matmul outputs, recompute the elementwise rest
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_layer(layer_cls: type[nn.Module], policy: str) -> type[nn.Module]:
    """The layer class, rematerialised under a named policy (what the backward pass may keep from the forward)."""
    if policy == "none":
        return layer_cls
    return nn.remat(layer_cls, policy=REMAT_POLICIES_JAX[policy], static_argnums=(3,))  # (self, x, mask, det.)


class _ScannedLayer(nn.Module):
    """One layer in `nn.scan`'s carry/output form: the residual stream is the carry."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, mask_Bx1xLxL: jax.Array, deterministic: bool):
        layer_cls = remat_layer(EncoderLayer, self.cfg.remat)
        return layer_cls(self.cfg, name="layer")(x_BxLxD, mask_Bx1xLxL, deterministic), None


def scanned_layers(cfg: TransformerConfig) -> nn.Module:
    """All layers as one `nn.scan`: one layer is compiled whatever the depth, so compile time stays flat.

    Parameters get a leading `layers` axis (logical axis "layers", never sharded) under `layers/layer/...`.
    """
    return nn.scan(
        _ScannedLayer,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast, nn.broadcast),
        length=cfg.num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )(cfg, name="layers")


class Encoder(nn.Module):
    cfg: TransformerConfig
    shared_embedding: nn.Module | None = None  # an encoder-decoder's one word-embedding table

    def setup(self) -> None:
        cfg = self.cfg
        self.embeddings = Embeddings(cfg, shared=self.shared_embedding)
        if cfg.scan_layers:
            self.layers = scanned_layers(cfg)
        else:
            layer_cls = remat_layer(EncoderLayer, cfg.remat)
            self.layers = [layer_cls(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
        if cfg.pre_layer_norm:
            self.final_layer_norm = layer_norm(cfg, "final_layer_norm")

    def __call__(
        self,
        input_ids_BxL: jax.Array,
        segment_ids_BxL: jax.Array,
        positions_BxL: jax.Array,
        token_type_ids_BxL: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        mask_Bx1xLxL = attention_mask(segment_ids_BxL)
        x_BxLxD = self.embeddings(input_ids_BxL, positions_BxL, token_type_ids_BxL, deterministic)
        if self.cfg.scan_layers:
            if not self.cfg.pre_layer_norm:  # a post-LN layer returns its LayerNorm's dtype: the scan carries that
                x_BxLxD = x_BxLxD.astype(self.cfg.norm_output_dtype)
            x_BxLxD, _ = self.layers(x_BxLxD, mask_Bx1xLxL, deterministic)
        else:
            for layer in self.layers:
                x_BxLxD = layer(x_BxLxD, mask_Bx1xLxL, deterministic)
        if self.cfg.pre_layer_norm:
            x_BxLxD = self.final_layer_norm(x_BxLxD)
        return x_BxLxD

    def attend(self, x_BxPxD: jax.Array) -> jax.Array:
        return self.embeddings.attend(x_BxPxD)


class MlmHead(nn.Module):
    """BERT's prediction head: dense + activation + LayerNorm, then the (tied) vocabulary projection + bias."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BxPxD: jax.Array, encoder: Encoder) -> jax.Array:
        cfg = self.cfg
        act = activation("gelu" if cfg.mlp_activation == "geglu" else cfg.mlp_activation)
        h_BxPxD = act(dense(cfg, cfg.hidden_size, ("embed", "embed_out"), "transform")(x_BxPxD))
        h_BxPxD = layer_norm(cfg, "transform_layer_norm")(h_BxPxD)
        if cfg.tie_embeddings:
            logits_BxPxV = encoder.attend(h_BxPxD)
        else:
            logits_BxPxV = nn.DenseGeneral(
                cfg.vocab_size,
                use_bias=False,
                dtype=cfg.compute_dtype,
                kernel_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std), ("embed", "vocab")),
                name="decoder",
            )(h_BxPxD)
        bias_V = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)),
                            (cfg.vocab_size,))
        # The bias is added in the compute dtype, as every Dense bias here (and HF's decoder under autocast).
        # Added in fp32 after the cast, it had XLA:GPU write exp(logits - max) in fp32 for the loss's backward
        # pass instead of recomputing it from the bf16 logits: 1.9 GB of traffic and 0.5-0.9 GB of memory a
        # step of BERT-base at batch 256 on an H200 (deviceless compile, perf/roofline.py). fp32 runs are unchanged.
        return (logits_BxPxV + bias_V.astype(logits_BxPxV.dtype)).astype(jnp.float32)


class BertForMaskedLM(nn.Module):
    """Encoder + pooler + MLM head. The head runs on the `masked_positions` only (BERT's static P)."""

    cfg: TransformerConfig

    def setup(self) -> None:
        cfg = self.cfg
        self.encoder = Encoder(cfg)
        if cfg.use_pooler:
            self.pooler = dense(cfg, cfg.hidden_size, ("embed", "embed_out"), "pooler")
        self.mlm_head = MlmHead(cfg)

    def __call__(
        self,
        input_ids_BxL: jax.Array,
        segment_ids_BxL: jax.Array,
        positions_BxL: jax.Array,
        masked_positions_BxP: jax.Array | None = None,
        token_type_ids_BxL: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        """Returns MLM logits, B x P x V (or B x L x V when `masked_positions` is None)."""
        x_BxLxD = self.encoder(
            input_ids_BxL, segment_ids_BxL, positions_BxL, token_type_ids_BxL, deterministic=deterministic
        )
        if self.cfg.use_pooler and self.is_initializing():
            self.pooled(x_BxLxD)  # create the pooler's parameters; MLM pretraining itself does not use them
        if masked_positions_BxP is not None:
            x_BxLxD = jnp.take_along_axis(x_BxLxD, masked_positions_BxP[..., None], axis=1)
        return self.mlm_head(x_BxLxD, self.encoder)

    def pooled(self, x_BxLxD: jax.Array) -> jax.Array:
        """BERT's pooled output: tanh(dense(first token)). Fine-tuning heads read it."""
        return jnp.tanh(self.pooler(x_BxLxD[:, 0]))


def dummy_inputs(cfg: TransformerConfig, batch_size: int = 1, seq_len: int | None = None) -> dict[str, jax.Array]:
    """Inputs for `init`/`eval_shape`."""
    ids_BxL = jnp.zeros((batch_size, seq_len or cfg.max_len), jnp.int32)
    return dict(input_ids_BxL=ids_BxL, segment_ids_BxL=ids_BxL + 1, positions_BxL=ids_BxL,
                masked_positions_BxP=ids_BxL[:, :1])
