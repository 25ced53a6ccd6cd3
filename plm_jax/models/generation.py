"""Text generation with our models: the step functions `decoding.py` runs, built on the models' KV caches.

Translation: encode the source once, cache each layer's cross-attention keys and values, then greedy or beam
search from [CLS] (the decoder's start token) to [SEP] (EOS). Causal LM: prompts are left-padded to one length
(padding has segment 0, so no token attends to it), run through the model in one prefill call, then sampled
or searched from the last prompt token. Both compile once per batch shape.

Given the training mesh's batch sharding, translation decodes each batch split over the data axes (every
device searches its own rows, every host feeds only its share) and returns the whole batch to every host.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from plm_jax.errors import UserError
from plm_jax.models import decoding
from plm_jax.models.config import TransformerConfig
from plm_jax.models.decoder import CausalLM, decoding_setup, init_cache
from plm_jax.models.encoder_decoder import EncoderDecoder
from plm_jax.parallel.sharding import from_whole_batch


class Seq2SeqGenerator:
    """Source arrays -> target token ids. `max_len` counts generated tokens (EOS included)."""

    def __init__(self, model_cfg: TransformerConfig, params: Any, *, max_len: int, bos_id: int, eos_id: int,
                 beam_size: int = 4, length_penalty: float = 0.6, data_sharding: NamedSharding | None = None,
                 banned_ids: tuple[int, ...] = ()):
        """`banned_ids` are never generated (translation bans [UNK]: with byte fallback the vocabulary can
        spell every character, so an unknown piece in the output is never needed)."""
        if max_len > model_cfg.max_len:
            raise UserError(f"max_len={max_len} exceeds the model's max_len={model_cfg.max_len} positions")
        self.cfg, self.params = decoding_setup(model_cfg, params)
        self.model = EncoderDecoder(self.cfg)
        self.settings = dict(max_len=max_len, bos_id=bos_id, eos_id=eos_id, beam_size=beam_size,
                             length_penalty=length_penalty, banned_ids=tuple(int(i) for i in banned_ids))
        self.data_sharding = data_sharding
        replicated = None if data_sharding is None else NamedSharding(data_sharding.mesh, PartitionSpec())
        self._run = jax.jit(functools.partial(_seq2seq_generate, self.model, self.cfg, **self.settings),
                            out_shardings=replicated)

    def __call__(self, encoder_input_ids: np.ndarray, encoder_segment_ids: np.ndarray,
                 encoder_positions: np.ndarray) -> np.ndarray:
        """Every host passes the same whole batch (rows divisible by the data-sharded device count)."""
        args = (encoder_input_ids, encoder_segment_ids, encoder_positions)
        if self.data_sharding is not None:
            args = tuple(from_whole_batch(a, self.data_sharding) for a in args)
        return np.asarray(self._run(self.params, *args))


def _seq2seq_generate(model: EncoderDecoder, cfg: TransformerConfig, params: Any, ids_BxS: jax.Array,
                      seg_BxS: jax.Array, pos_BxS: jax.Array, *, max_len: int, bos_id: int, eos_id: int,
                      beam_size: int, length_penalty: float, banned_ids: tuple[int, ...]) -> jax.Array:
    batch = ids_BxS.shape[0]
    variables = {"params": params}
    cache = model.apply(variables, ids_BxS, seg_BxS, pos_BxS, init_cache(cfg, batch, max_len),
                        method=EncoderDecoder.start_decoding)

    def step_fn(token_B: jax.Array, cache: Any, index: jax.Array) -> tuple[jax.Array, Any]:
        rows = token_B.shape[0]
        ones = jnp.ones((rows, 1), jnp.int32)
        logits, cache = model.apply(variables, token_B[:, None], ones, ones * index, cache, index,
                                    method=EncoderDecoder.decode)
        logits_BxV = logits[:, 0]
        if banned_ids:
            logits_BxV = logits_BxV.at[:, jnp.asarray(banned_ids)].set(jnp.finfo(logits_BxV.dtype).min / 2)
        return logits_BxV, cache

    first_B = jnp.full((batch,), bos_id, jnp.int32)
    if beam_size == 1:
        return decoding.greedy(step_fn, cache, first_B, start_index=0, max_len=max_len, eos_id=eos_id)[0]
    tokens_BxNxT, _ = decoding.beam_search(step_fn, cache, first_B, start_index=0, max_len=max_len, eos_id=eos_id,
                                           beam_size=beam_size, length_penalty=length_penalty)
    return tokens_BxNxT[:, 0]


def strip_after_eos(tokens: np.ndarray, eos_id: int, pad_id: int = 0) -> list[list[int]]:
    """Generated rows -> token lists without EOS, padding or anything after the first EOS."""
    out = []
    for row in np.asarray(tokens).tolist():
        if eos_id in row:
            row = row[: row.index(eos_id)]
        out.append([t for t in row if t != pad_id])
    return out


def left_pad(prompts: list[list[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompts of different lengths -> (ids, segment ids, positions), right-aligned so all end at one slot."""
    if not prompts or any(not p for p in prompts):
        raise UserError("every prompt needs at least one token (e.g. [CLS], the start of a document)")
    length = max(len(p) for p in prompts)
    ids = np.full((len(prompts), length), pad_id, np.int32)
    seg = np.zeros_like(ids)
    pos = np.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, length - len(p):] = p
        seg[i, length - len(p):] = 1
        pos[i, length - len(p):] = np.arange(len(p))
    return ids, seg, pos


class CausalGenerator:
    """Continues prompts with a causal LM: sampling (temperature / top-k / top-p), greedy, or beam search."""

    def __init__(self, model_cfg: TransformerConfig, params: Any, *, eos_id: int):
        self.cfg, self.params = decoding_setup(model_cfg, params)
        self.model = CausalLM(self.cfg)
        self.eos_id = eos_id
        self._compiled: dict[tuple, Any] = {}

    def __call__(self, prompts: list[list[int]], *, max_new_tokens: int, seed: int = 0, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, beam_size: int = 1, length_penalty: float = 0.6) -> np.ndarray:
        ids, seg, pos = left_pad(prompts)
        total = ids.shape[1] + max_new_tokens - 1
        if total > self.cfg.max_len:
            raise UserError(f"prompt ({ids.shape[1]} tokens) + max_new_tokens={max_new_tokens} exceed the model's "
                             f"max_len={self.cfg.max_len} positions")
        key = (ids.shape, max_new_tokens, temperature, top_k, top_p, beam_size, length_penalty)
        if key not in self._compiled:
            self._compiled[key] = jax.jit(functools.partial(
                _causal_generate, self.model, self.cfg, max_new_tokens=max_new_tokens, eos_id=self.eos_id,
                temperature=temperature, top_k=top_k, top_p=top_p, beam_size=beam_size,
                length_penalty=length_penalty))
        return np.asarray(self._compiled[key](self.params, ids, seg, pos, jax.random.key(seed)))


def _causal_generate(model: CausalLM, cfg: TransformerConfig, params: Any, ids_BxP: jax.Array, seg_BxP: jax.Array,
                     pos_BxP: jax.Array, rng: jax.Array, *, max_new_tokens: int, eos_id: int, temperature: float,
                     top_k: int, top_p: float, beam_size: int, length_penalty: float) -> jax.Array:
    batch, prompt_len = ids_BxP.shape
    variables = {"params": params}
    cache = init_cache(cfg, batch, prompt_len + max_new_tokens - 1)
    if prompt_len > 1:  # all but the last prompt token; the last one starts the decoding loop
        _, cache = model.apply(variables, ids_BxP[:, :-1], seg_BxP[:, :-1], pos_BxP[:, :-1], cache, 0,
                               method=CausalLM.decode)
    # each row's position = slot - its left padding, kept per row in the cache (beam search reorders rows)
    cache = {**cache, "padding": (prompt_len - jnp.sum(seg_BxP, axis=1)).astype(jnp.int32)}

    def step_fn(token_B: jax.Array, cache: Any, index: jax.Array) -> tuple[jax.Array, Any]:
        pos_Bx1 = (index - cache["padding"])[:, None]
        logits, new = model.apply(variables, token_B[:, None], jnp.ones_like(pos_Bx1), pos_Bx1,
                                  {"segment_ids": cache["segment_ids"], "layers": cache["layers"]}, index,
                                  method=CausalLM.decode)
        return logits[:, 0], {**new, "padding": cache["padding"]}

    first_B, start = ids_BxP[:, -1], prompt_len - 1
    common = dict(start_index=start, max_len=max_new_tokens, eos_id=eos_id)
    if beam_size > 1:
        return decoding.beam_search(step_fn, cache, first_B, beam_size=beam_size, length_penalty=length_penalty,
                                    **common)[0][:, 0]
    if temperature == 0.0:
        return decoding.greedy(step_fn, cache, first_B, **common)[0]
    return decoding.sample(step_fn, cache, first_B, rng, temperature=temperature, top_k=top_k, top_p=top_p,
                           **common)[0]
