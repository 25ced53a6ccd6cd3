"""The model's hyper-parameters as a frozen dataclass, built from the `model` section of a config."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from plm_jax.errors import UserError

_ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "geglu")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ARCHITECTURES = ("encoder", "decoder", "encoder_decoder")  # BERT, GPT, T5/BART
ATTENTION_IMPLS = ("einsum", "xla", "cudnn")
NORM_DTYPES = ("float32", "compute")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Defaults are BERT-base's; every field can be set from `config.model`."""

    architecture: str = "encoder"  # encoder (BERT) | decoder (GPT, causal) | encoder_decoder (T5/BART)
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    head_dim: int = 0  # width of one attention head; 0 = hidden_size // num_heads (pruned heads keep theirs)
    mlp_dim: int = 3072
    max_len: int = 512
    type_vocab_size: int = 2  # 0 = no token-type embeddings (GPT-2)
    num_decoder_layers: int = 0  # encoder_decoder: decoder depth; 0 = num_layers
    embedding_layer_norm: bool = True  # LayerNorm right after the embeddings (BERT); GPT-2 has none
    share_embeddings: bool = True  # encoder_decoder: one word-embedding table for encoder, decoder and output
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    pre_layer_norm: bool = False  # False = BERT's post-LN
    mlp_activation: str = "gelu"  # "gelu" is the exact erf GELU, as Hugging Face's BERT
    tie_embeddings: bool = True
    layer_norm_eps: float = 1e-12
    use_pooler: bool = True
    init_std: float = 0.02
    dtype: str = "float32"  # compute dtype; parameters stay float32
    # LayerNorm output. Statistics are fp32 either way. float32: a post-LN model's residual stream stays fp32 (as
    # Hugging Face under autocast); compute: it is in `dtype` (as MaxText and T5X), half the bytes in bf16 runs.
    norm_dtype: str = "float32"
    attention: str = "einsum"  # einsum (supports attention dropout) | xla | cudnn: jax.nn.dot_product_attention
    scan_layers: bool = False  # nn.scan over layers: flat compile time; parameters stacked on a `layers` axis
    remat: str = "none"  # recompute each layer's activations in the backward pass: none | full | dots | dots_no_batch

    def __post_init__(self) -> None:
        if self.head_dim < 0:
            raise UserError(f"model.head_dim={self.head_dim} must be positive, or 0 for hidden_size // num_heads")
        if not self.head_dim and self.hidden_size % self.num_heads:
            raise UserError(
                f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads={self.num_heads} "
                "(or set model.head_dim)"
            )
        if self.architecture not in ARCHITECTURES:
            raise UserError(f"model.architecture={self.architecture!r}; expected one of {ARCHITECTURES}")
        if self.num_decoder_layers < 0 or (self.num_decoder_layers and self.architecture != "encoder_decoder"):
            raise UserError(f"model.num_decoder_layers={self.num_decoder_layers} applies to "
                             "architecture='encoder_decoder' only (0 = as many as model.num_layers)")
        if self.type_vocab_size < 0:
            raise UserError(f"model.type_vocab_size must be >= 0, got {self.type_vocab_size}")
        if self.mlp_activation not in _ACTIVATIONS:
            raise UserError(f"model.mlp_activation={self.mlp_activation!r}; expected one of {_ACTIVATIONS}")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "mlp_dim", "max_len"):
            if getattr(self, name) <= 0:
                raise UserError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.attention not in ATTENTION_IMPLS:
            raise UserError(f"model.attention={self.attention!r}; expected one of {ATTENTION_IMPLS}")
        if self.attention != "einsum" and self.attention_dropout_rate:
            raise UserError(f"model.attention={self.attention!r} has no attention-probability dropout; "
                             "set model.attention_dropout_rate=0 or use model.attention='einsum'")
        if self.norm_dtype not in NORM_DTYPES:
            raise UserError(f"model.norm_dtype={self.norm_dtype!r}; expected one of {NORM_DTYPES}")
        if self.remat not in REMAT_POLICIES:
            raise UserError(f"model.remat={self.remat!r}; expected one of {REMAT_POLICIES}")
        if not 0.0 <= self.dropout_rate < 1.0 or not 0.0 <= self.attention_dropout_rate < 1.0:
            raise UserError("model.dropout_rate and model.attention_dropout_rate must be in [0, 1)")

    @property
    def kv_dim(self) -> int:
        """The width of one head (logical axis `kv`): `head_dim`, or hidden_size // num_heads when that is 0."""
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def attention_dim(self) -> int:
        """The width of all heads together: hidden_size, unless heads were pruned."""
        return self.num_heads * self.kv_dim

    @property
    def decoder_layers(self) -> int:
        return self.num_decoder_layers or self.num_layers

    @property
    def has_cross_attention(self) -> bool:
        return self.architecture == "encoder_decoder"

    @property
    def compute_dtype(self) -> Any:
        return jnp.dtype(self.dtype)

    @property
    def norm_output_dtype(self) -> Any:
        return jnp.dtype(jnp.float32) if self.norm_dtype == "float32" else self.compute_dtype

    @classmethod
    def from_config(cls, model_cfg: Any) -> TransformerConfig:
        """Builds from a ConfigDict/dict; unknown keys are an error, not silently dropped."""
        values = dict(model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else model_cfg)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown model config key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
