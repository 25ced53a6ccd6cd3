"""Where a translation fine-tune starts: random weights, a span-corruption (encoder-decoder) run, or an MLM run
whose encoder seeds both halves of the encoder-decoder (BERT2BERT, Rothe et al. 2020).

BERT2BERT: the encoder is the MLM encoder; its word embeddings become the shared table; each decoder layer
starts as the encoder layer of the same depth (self-attention, MLP, LayerNorms); the decoder's position
embeddings are the encoder's; only the cross-attention is random.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import numpy as np

from plm_jax.data.text_tokenizer import load_text_tokenizer
from plm_jax.errors import UserError
from plm_jax.models import layout
from plm_jax.models.config import TransformerConfig
from plm_jax.tasks import starting_point
from plm_jax.tasks.objectives import vocab_needed
from plm_jax.tasks.starting_point import StartingPoint

log = logging.getLogger("plm_jax")


def resolve(config: Any) -> StartingPoint:
    """`config.init`: "" (random; needs config.tokenizer and an encoder_decoder config.model), or a plm_jax
    pretraining run (span_corruption: the whole model; mlm: BERT2BERT)."""
    init = str(config.init or "")
    if not init:
        if not config.tokenizer:
            raise UserError("a translation model from scratch needs --config.tokenizer (a SentencePiece model "
                             "trained on both languages: `launch.py tokenizer`); or give --init")
        tokenizer = load_text_tokenizer(config.tokenizer)
        model_cfg = TransformerConfig.from_config(config.model)
        if model_cfg.architecture != "encoder_decoder":
            raise UserError(f"translation needs model.architecture='encoder_decoder' (cross-attention from the "
                             f"decoder to the source), got {model_cfg.architecture!r}")
        starting_point.check_vocab(model_cfg, tokenizer, "config.model")
        return StartingPoint("scratch", "random", starting_point._apply_overrides(model_cfg, config.model_overrides),
                             tokenizer, None)
    if not os.path.isdir(os.path.join(init, "checkpoints")):
        raise FileNotFoundError(f"--init {init}: not a plm_jax pretraining run (no checkpoints/); translation starts "
                                "from an mlm or span_corruption run, or from scratch (--init '')")
    saved, run_cfg, tokenizer = starting_point.plm_jax_run_config(init)
    if config.tokenizer:
        tokenizer = load_text_tokenizer(config.tokenizer)
    objective = saved.get("objective", "mlm")
    if objective == "causal_lm":
        raise UserError(f"{init} is a causal-LM (decoder-only) run: it has no encoder for the source; translation "
                         "starts from an mlm run (BERT2BERT) or a span_corruption run")
    if tokenizer.vocab_size != run_cfg.vocab_size - vocab_needed(objective, 0, saved.data):
        raise UserError(f"{init}: the checkpoint's vocabulary ({run_cfg.vocab_size}) does not fit the tokenizer "
                         f"{tokenizer.path} ({tokenizer.vocab_size})")
    if objective == "mlm":
        model_cfg = dataclasses.replace(run_cfg, architecture="encoder_decoder", use_pooler=False,
                                        share_embeddings=True, tie_embeddings=True)
    else:
        model_cfg = run_cfg
    model_cfg = starting_point._apply_overrides(model_cfg, config.model_overrides)
    if config.from_scratch:
        return StartingPoint("scratch", f"random weights in the shape of {init}", model_cfg, tokenizer, None)
    heads = ("encoder",) if objective == "mlm" else ("encoder", "decoder", "decoder_embeddings", "shared_embedding",
                                                     "lm_head")
    _, _, params = starting_point.plm_jax_run_params(init, heads=heads)
    params = layout.to_unscanned(params)
    if objective == "mlm":
        params = bert2bert(params["encoder"], model_cfg)
        log.info("BERT2BERT: encoder, shared embeddings and decoder self-attention/MLP from %s; cross-attention "
                 "random", init)
    params = layout.to_scanned(params) if model_cfg.scan_layers else params
    return StartingPoint("plm_jax", init, model_cfg, tokenizer, params)


def bert2bert(encoder: dict[str, Any], cfg: TransformerConfig) -> dict[str, Any]:
    """An MLM encoder (unscanned) -> encoder-decoder subtrees: every decoder weight that has an encoder
    counterpart starts from it (cross-attention and its LayerNorm are left out: random init)."""
    emb = dict(encoder["embeddings"])
    shared = emb.pop("word_embeddings")
    n_dec = cfg.decoder_layers
    n_enc = sum(1 for k in encoder if k.startswith("layer_"))
    if n_dec > n_enc:
        raise UserError(f"BERT2BERT: {n_dec} decoder layers but the MLM encoder has only {n_enc}")
    decoder = {f"layer_{i}": {k: v for k, v in encoder[f"layer_{i}"].items()} for i in range(n_dec)}
    if "final_layer_norm" in encoder:
        decoder["final_layer_norm"] = encoder["final_layer_norm"]
    copy = lambda tree: jax.tree.map(lambda x: np.array(x), tree)
    return {"shared_embedding": copy(shared), "encoder": copy({**encoder, "embeddings": emb}),
            "decoder_embeddings": copy(emb), "decoder": copy(decoder)}


def graft_partial(state_params: Any, pretrained: dict[str, Any], shardings: Any) -> Any:
    """Like starting_point.graft, but leaf by leaf: what the pretrained tree lacks (cross-attention) stays as
    initialised; a leaf of another shape is an error naming it."""
    flat_state = _flatten(state_params)
    flat_shard = _flatten(shardings)
    for path, value in _flatten(pretrained).items():
        if path not in flat_state:
            raise UserError(f"pretrained weight {'/'.join(path)} has no place in the translation model")
        want = flat_state[path]
        if tuple(np.shape(value)) != tuple(want.shape):
            raise UserError(f"pretrained weight {'/'.join(path)} has shape {np.shape(value)}, the model wants "
                             f"{tuple(want.shape)}")
        flat_state[path] = jax.device_put(np.asarray(value, dtype=want.dtype), flat_shard[path])
    return _unflatten(flat_state)


def _flatten(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(tree, dict):
        out: dict[tuple[str, ...], Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, (*prefix, k)))
        return out
    return {prefix: tree}


def _unflatten(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path, value in flat.items():
        node = root
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value
    return root
