"""The encoder-decoder (T5/BART-style): a BERT encoder, a decoder with cross-attention, one output head.

With `share_embeddings` the encoder input, decoder input and (tied) output use one table, `shared_embedding`;
the encoder subtree is then a BERT encoder minus its word embeddings, so an MLM checkpoint seeds it (BERT2BERT,
see tasks/seq2seq_init.py). Positions are learned and absolute, as BART's.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from plm_jax.errors import UserError
from plm_jax.models.config import TransformerConfig
from plm_jax.models.decoder import Cache, DecoderStack, lm_head
from plm_jax.models.encoder import Encoder
from plm_jax.models.layers import Embeddings, _init, cached_mask, causal_mask, cross_mask


class EncoderDecoder(nn.Module):
    cfg: TransformerConfig

    def setup(self) -> None:
        cfg = self.cfg
        if cfg.architecture != "encoder_decoder":
            raise UserError(f"EncoderDecoder needs model.architecture='encoder_decoder', got {cfg.architecture!r}")
        shared = None
        if cfg.share_embeddings:
            self.shared_embedding = nn.Embed(cfg.vocab_size, cfg.hidden_size,
                                             embedding_init=_init(cfg, ("vocab", "embed")))
            shared = self.shared_embedding
        self.encoder = Encoder(cfg, shared_embedding=shared)
        self.decoder_embeddings = Embeddings(cfg, shared=shared)
        self.decoder = DecoderStack(cfg)
        if not cfg.tie_embeddings:
            self.lm_head = lm_head(cfg)

    def _logits(self, x_BxTxD: jax.Array) -> jax.Array:
        logits = self.decoder_embeddings.attend(x_BxTxD) if self.cfg.tie_embeddings else self.lm_head(x_BxTxD)
        return logits.astype(jnp.float32)

    def encode(self, input_ids_BxS: jax.Array, segment_ids_BxS: jax.Array, positions_BxS: jax.Array, *,
               deterministic: bool = True) -> jax.Array:
        return self.encoder(input_ids_BxS, segment_ids_BxS, positions_BxS, deterministic=deterministic)

    def __call__(
        self,
        encoder_input_ids_BxS: jax.Array,
        encoder_segment_ids_BxS: jax.Array,
        encoder_positions_BxS: jax.Array,
        decoder_input_ids_BxT: jax.Array,
        decoder_segment_ids_BxT: jax.Array,
        decoder_positions_BxT: jax.Array,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        """Teacher-forced next-token logits, B x T x V (float32)."""
        encoded_BxSxD = self.encode(encoder_input_ids_BxS, encoder_segment_ids_BxS, encoder_positions_BxS,
                                    deterministic=deterministic)
        x_BxTxD = self.decoder_embeddings(decoder_input_ids_BxT, decoder_positions_BxT, None, deterministic)
        x_BxTxD, _ = self.decoder(x_BxTxD, causal_mask(decoder_segment_ids_BxT), encoded_BxSxD,
                                  cross_mask(decoder_segment_ids_BxT, encoder_segment_ids_BxS),
                                  deterministic=deterministic)
        return self._logits(x_BxTxD)

    def start_decoding(self, encoder_input_ids_BxS: jax.Array, encoder_segment_ids_BxS: jax.Array,
                       encoder_positions_BxS: jax.Array, cache: Cache) -> Cache:
        """Encodes the source once and stores each layer's cross-attention keys and values in the cache."""
        encoded_BxSxD = self.encode(encoder_input_ids_BxS, encoder_segment_ids_BxS, encoder_positions_BxS)
        layers = [{**c, "cross_key": k, "cross_value": v}
                  for c, (k, v) in zip(cache["layers"], self.decoder.cross_kv(encoded_BxSxD), strict=True)]
        return {**cache, "encoder_segment_ids": encoder_segment_ids_BxS, "layers": layers}

    def decode(self, decoder_input_ids_BxT: jax.Array, decoder_segment_ids_BxT: jax.Array,
               decoder_positions_BxT: jax.Array, cache: Cache, index: jax.Array) -> tuple[jax.Array, Cache]:
        """T new target tokens at cache slots [index, index+T) -> logits B x T x V, updated cache."""
        segs_BxC = jax.lax.dynamic_update_slice(cache["segment_ids"], decoder_segment_ids_BxT, (0, index))
        x_BxTxD = self.decoder_embeddings(decoder_input_ids_BxT, decoder_positions_BxT, None, True)
        x_BxTxD, layers = self.decoder(
            x_BxTxD, cached_mask(segs_BxC, decoder_segment_ids_BxT, index), None,
            cross_mask(decoder_segment_ids_BxT, cache["encoder_segment_ids"]), layer_caches=cache["layers"],
            index=index)
        return self._logits(x_BxTxD), {**cache, "segment_ids": segs_BxC, "layers": layers}


def seq2seq_dummy_inputs(cfg: TransformerConfig, batch_size: int = 1, source_len: int | None = None,
                         target_len: int | None = None) -> dict[str, jax.Array]:
    src_BxS = jnp.zeros((batch_size, source_len or cfg.max_len), jnp.int32)
    tgt_BxT = jnp.zeros((batch_size, target_len or cfg.max_len), jnp.int32)
    return dict(encoder_input_ids_BxS=src_BxS, encoder_segment_ids_BxS=src_BxS + 1, encoder_positions_BxS=src_BxS,
                decoder_input_ids_BxT=tgt_BxT, decoder_segment_ids_BxT=tgt_BxT + 1, decoder_positions_BxT=tgt_BxT)
