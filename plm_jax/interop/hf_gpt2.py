"""Hugging Face GPT-2 <-> plm_jax: configs, parameters and checkpoint directories, both directions.

Our pre-LN `CausalLM` (architecture='decoder', no token types, no embedding LayerNorm, tied head) maps one to one
onto `transformers`' GPT2Model / GPT2LMHeadModel. GPT-2's Conv1D stores weights as (in, out), like our kernels, so
nothing is transposed; only the fused q|k|v `c_attn` is split and the attention's head axes are split out:
query/key/value (D, H, K), attention out (H, K, D). The untied `lm_head.weight` (V, D) is our lm_head kernel (D, V).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from plm_jax.errors import UserError
from plm_jax.interop.hf_bert import (
    HF_TO_OUR_ACT,
    OUR_TO_HF_ACT,
    Entry,
    load_weights,
    norm_entries,
    set_path,
    source_where,
    to_numpy,
    weight_files,
)
from plm_jax.models.config import TransformerConfig

_PREFIX = "transformer."  # GPT2LMHeadModel's name for the GPT2Model inside it
_QKV = ("query", "key", "value")
_BUFFERS = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")  # the causal-mask buffers older files carry
_BERT_MARKERS = ("bert.", "embeddings.word_embeddings.", "encoder.layer.", "cls.predictions.")
# Files a GPT-2 tokenizer consists of; kept/copied next to the weights so the directory stays self-contained.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json")
_UNSUPPORTED_FLAGS = {  # GPT2Config options whose math our decoder does not implement: (value we need, why)
    "scale_attn_by_inverse_layer_idx": (False, "attention scaled by 1/layer_idx"),
    "reorder_and_upcast_attn": (False, "reordered/upcast attention"),
    "scale_attn_weights": (True, "unscaled attention logits"),
    "add_cross_attention": (False, "cross-attention layers"),
}


@dataclasses.dataclass(frozen=True)
class _Fused:
    """GPT-2's `c_attn`: query|key|value concatenated on the last (output) axis of one tensor; ours are three."""

    hf_key: str
    paths: tuple[tuple[str, ...], ...]
    hf_shape: tuple[int, ...]
    our_shape: tuple[int, ...]

    def to_ours(self, a: np.ndarray) -> list[tuple[tuple[str, ...], np.ndarray]]:
        parts = np.split(a, len(self.paths), axis=-1)
        return [(p, np.ascontiguousarray(x.reshape(self.our_shape), np.float32)) for p, x in zip(self.paths, parts)]

    def to_hf(self, arrays: list[np.ndarray]) -> np.ndarray:
        flat = [a.reshape(*self.hf_shape[:-1], -1) for a in arrays]
        return np.ascontiguousarray(np.concatenate(flat, axis=-1), np.float32)


def _conv1d(hf: str, path: tuple[str, ...], d_in: int, d_out: int,
            our_kernel: tuple[int, ...] | None = None) -> list[Entry]:
    return [Entry(f"{hf}.weight", (*path, "kernel"), (d_in, d_out), our_kernel or (d_in, d_out)),
            Entry(f"{hf}.bias", (*path, "bias"), (d_out,), (d_out,))]


def _entries(cfg: TransformerConfig) -> list[Entry | _Fused]:
    """Every array, HF names without the `transformer.` prefix (`lm_head.weight` sits outside it)."""
    d, h, k, f, v = cfg.hidden_size, cfg.num_heads, cfg.kv_dim, cfg.mlp_dim, cfg.vocab_size
    out: list[Entry | _Fused] = [
        Entry("wte.weight", ("embeddings", "word_embeddings", "embedding"), (v, d), (v, d)),
        Entry("wpe.weight", ("embeddings", "position_embeddings"), (cfg.max_len, d), (cfg.max_len, d))]
    for i in range(cfg.decoder_layers):
        hf, ours = f"h.{i}", ("decoder", f"layer_{i}")
        attn = (*ours, "attention")
        out += norm_entries(f"{hf}.ln_1", (*ours, "attention_layer_norm"), d)
        out += [_Fused(f"{hf}.attn.c_attn.weight", tuple((*attn, n, "kernel") for n in _QKV), (d, 3 * h * k),
                       (d, h, k)),
                _Fused(f"{hf}.attn.c_attn.bias", tuple((*attn, n, "bias") for n in _QKV), (3 * h * k,), (h, k))]
        out += _conv1d(f"{hf}.attn.c_proj", (*attn, "out"), h * k, d, (h, k, d))
        out += norm_entries(f"{hf}.ln_2", (*ours, "mlp_layer_norm"), d)
        out += _conv1d(f"{hf}.mlp.c_fc", (*ours, "mlp", "wi"), d, f)
        out += _conv1d(f"{hf}.mlp.c_proj", (*ours, "mlp", "wo"), f, d)
    out += norm_entries("ln_f", ("decoder", "final_layer_norm"), d)
    if not cfg.tie_embeddings:
        out.append(Entry("lm_head.weight", ("lm_head", "kernel"), (v, d), (d, v), transposed=True))
    return out


def _check_gpt2_layout(cfg: TransformerConfig) -> None:
    """Only GPT-2-shaped configs convert; anything else would be silently mis-mapped."""
    problems = [f"{name}={getattr(cfg, name)!r} (needs {want!r})" for name, want in (
        ("architecture", "decoder"), ("pre_layer_norm", True), ("type_vocab_size", 0),
        ("embedding_layer_norm", False)) if getattr(cfg, name) != want]
    if cfg.mlp_activation not in OUR_TO_HF_ACT:
        problems.append(f"mlp_activation={cfg.mlp_activation!r} (needs one of {sorted(OUR_TO_HF_ACT)})")
    if cfg.attention_dim != cfg.hidden_size:
        problems.append(f"head_dim={cfg.kv_dim} (needs hidden_size / num_heads)")
    if problems:
        raise UserError(f"{', '.join(problems)}: no Hugging Face GPT-2 counterpart")


def config_from_hf(hf_config: Mapping[str, Any], *, source: str = "") -> TransformerConfig:
    """Our config for a HF GPT2Config dict; anything GPT-2-shaped but not reproducible here is an error."""
    where, model_type = source_where(source), hf_config.get("model_type")
    archs = list(hf_config.get("architectures") or [])
    if model_type == "bert" or (model_type is None and archs and all(a.startswith("Bert") for a in archs)):
        raise UserError(f"{where}this is a BERT checkpoint (model_type={model_type!r}, architectures={archs}), "
                         "not GPT-2; load it with plm_jax.interop.hf_bert.load_hf_checkpoint")
    if model_type != "gpt2" and not (model_type is None and archs and all(a.startswith("GPT2") for a in archs)):
        raise UserError(f"{where}model_type={model_type!r} (architectures={archs}) is not supported; "
                         "only 'gpt2' checkpoints are")
    for flag, (want, what) in _UNSUPPORTED_FLAGS.items():
        if bool(hf_config.get(flag, want)) != want:
            raise UserError(f"{where}{flag}={hf_config[flag]!r} is not supported ({what}); need {want}")
    required = ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions")
    if missing := [k for k in required if k not in hf_config]:
        raise UserError(f"{where}the config lacks {missing}")
    if hf_config["n_embd"] % hf_config["n_head"]:
        raise UserError(f"{where}n_embd={hf_config['n_embd']} is not divisible by n_head={hf_config['n_head']}")
    act = hf_config.get("activation_function", "gelu_new")
    if not isinstance(act, str) or act not in HF_TO_OUR_ACT:
        raise UserError(f"{where}activation_function={act!r} is not supported; "
                         f"expected one of {sorted(HF_TO_OUR_ACT)}")
    return TransformerConfig(
        architecture="decoder", vocab_size=hf_config["vocab_size"], hidden_size=hf_config["n_embd"],
        num_layers=hf_config["n_layer"], num_heads=hf_config["n_head"],
        mlp_dim=hf_config.get("n_inner") or 4 * hf_config["n_embd"], max_len=hf_config["n_positions"],
        type_vocab_size=0, embedding_layer_norm=False, pre_layer_norm=True, use_pooler=False,
        # embd_pdrop has no separate knob here: the embedding dropout uses dropout_rate (resid_pdrop)
        dropout_rate=float(hf_config.get("resid_pdrop", 0.1)),
        attention_dropout_rate=float(hf_config.get("attn_pdrop", 0.1)), mlp_activation=HF_TO_OUR_ACT[act],
        layer_norm_eps=float(hf_config.get("layer_norm_epsilon", 1e-5)),
        init_std=float(hf_config.get("initializer_range", 0.02)),
        tie_embeddings=bool(hf_config.get("tie_word_embeddings", True)))


def hf_config_dict(cfg: TransformerConfig, *, bos_token_id: int | None = None,
                   eos_token_id: int | None = None) -> dict[str, Any]:
    """The config.json that `transformers` reads back into an equivalent GPT2Config (GPT2LMHeadModel).

    Token ids default to GPT-2's <|endoftext|> (50256) only when the vocabulary has it; HF's own default would
    point past a smaller table."""
    _check_gpt2_layout(cfg)
    default_id = 50256 if cfg.vocab_size > 50256 else None
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg.vocab_size,
        "n_positions": cfg.max_len, "n_embd": cfg.hidden_size, "n_layer": cfg.decoder_layers,
        "n_head": cfg.num_heads, "n_inner": cfg.mlp_dim,
        "activation_function": OUR_TO_HF_ACT[cfg.mlp_activation], "resid_pdrop": cfg.dropout_rate,
        "embd_pdrop": cfg.dropout_rate, "attn_pdrop": cfg.attention_dropout_rate,
        "layer_norm_epsilon": cfg.layer_norm_eps, "initializer_range": cfg.init_std, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False, "add_cross_attention": False,
        "tie_word_embeddings": cfg.tie_embeddings, "use_cache": True, "torch_dtype": "float32",
        "bos_token_id": default_id if bos_token_id is None else bos_token_id,
        "eos_token_id": default_id if eos_token_id is None else eos_token_id,
    }


def _normalize_keys(state_dict: Mapping[str, Any], where: str) -> tuple[dict[str, np.ndarray], str]:
    """Drops the `transformer.` prefix and the mask buffers; refuses BERT weights. Returns (state, prefix)."""
    if bert := sorted(k for k in state_dict if k.startswith(_BERT_MARKERS)):
        raise UserError(f"{where}the checkpoint holds BERT weights (e.g. {bert[0]!r}), not GPT-2; "
                         "load it with plm_jax.interop.hf_bert")
    prefix = _PREFIX if any(k.startswith(_PREFIX) for k in state_dict) else ""
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix(_PREFIX)
        if not _BUFFERS.match(key):
            out[key] = np.asarray(value)
    return out, prefix


def hf_to_params(state_dict: Mapping[str, np.ndarray], cfg: TransformerConfig, *, source: str = "") -> dict:
    """Our CausalLM parameter tree (plain dicts of float32 numpy) from a GPT2Model/GPT2LMHeadModel state dict."""
    _check_gpt2_layout(cfg)
    where = source_where(source)
    sd, prefix = _normalize_keys(state_dict, where)
    name = lambda key: key if key == "lm_head.weight" else prefix + key  # as the file spells it
    params: dict = {}
    used: set[str] = set()
    for e in _entries(cfg):
        if e.hf_key not in sd:
            raise UserError(f"{where}missing weight {name(e.hf_key)!r} (shape {e.hf_shape})")
        a = sd[e.hf_key]
        if tuple(a.shape) != e.hf_shape:
            raise UserError(f"{where}{name(e.hf_key)!r} has shape {tuple(a.shape)}, expected {e.hf_shape}")
        a = a.astype(np.float32)
        for path, value in e.to_ours(a) if isinstance(e, _Fused) else [(e.path, e.to_ours(a))]:
            set_path(params, path, value)
        used.add(e.hf_key)
    if cfg.tie_embeddings and "lm_head.weight" in sd:
        if not np.array_equal(sd["lm_head.weight"], sd["wte.weight"]):
            raise UserError(f"{where}lm_head.weight differs from {name('wte.weight')!r}; an untied head needs "
                             "tie_word_embeddings=false in config.json")
        used.add("lm_head.weight")
    if unknown := sorted(set(sd) - used):
        raise UserError(f"{where}unexpected weight(s) {[name(k) for k in unknown[:5]]}"
                         f"{' ...' if len(unknown) > 5 else ''} for a {cfg.decoder_layers}-layer GPT-2 "
                         f"({'untied' if not cfg.tie_embeddings else 'tied'} head)")
    if cfg.scan_layers:
        from plm_jax.models.layout import to_scanned

        params = to_numpy(to_scanned(params))
    return params


def _leaf_paths(tree: Mapping, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for k, v in tree.items():
        out |= _leaf_paths(v, (*prefix, k)) if isinstance(v, Mapping) else {(*prefix, k)}
    return out


def params_to_hf(params: Mapping, cfg: TransformerConfig) -> dict[str, np.ndarray]:
    """GPT2LMHeadModel state dict (`transformer.` prefix; `lm_head.weight` only when untied), scanned or not."""
    from plm_jax.models.layout import to_unscanned

    _check_gpt2_layout(cfg)
    tree = to_numpy(params)
    if "params" in tree and "decoder" not in tree:
        tree = tree["params"]
    if "layers" in tree.get("decoder", {}):
        tree = to_numpy(to_unscanned(tree))

    def get(path: tuple[str, ...], shape: tuple[int, ...]) -> np.ndarray:
        node: Any = tree
        for part in path:
            if not isinstance(node, Mapping) or part not in node:
                raise UserError(f"params lack {'/'.join(path)} (shape {shape})")
            node = node[part]
        if node.shape != shape:
            raise UserError(f"params {'/'.join(path)} has shape {node.shape}, expected {shape}")
        return node

    out: dict[str, np.ndarray] = {}
    used: set[tuple[str, ...]] = set()
    for e in _entries(cfg):
        key = e.hf_key if e.hf_key == "lm_head.weight" else _PREFIX + e.hf_key
        if isinstance(e, _Fused):
            out[key] = e.to_hf([get(p, e.our_shape) for p in e.paths])
            used |= set(e.paths)
        else:
            out[key] = e.to_hf(get(e.path, e.our_shape))
            used.add(e.path)
    if extra := sorted(_leaf_paths(tree) - used):
        raise UserError(f"params hold {['/'.join(p) for p in extra[:5]]}{' ...' if len(extra) > 5 else ''}, "
                         f"which a {cfg.decoder_layers}-layer GPT-2 ({'tied' if cfg.tie_embeddings else 'untied'} "
                         "head) has no place for")
    return out


# --- directories ---------------------------------------------------------------------------------------------------


def _tokenizer_files(directory: str) -> list[str]:
    """The GPT-2 tokenizer files in `directory` ([] unless tokenizer.json or vocab.json+merges.txt is there)."""
    has = lambda n: os.path.isfile(os.path.join(directory, n))
    if not (has("tokenizer.json") or (has("vocab.json") and has("merges.txt"))):
        return []
    return [n for n in TOKENIZER_FILES if has(n)]


def _special_tokens(directory: str) -> list[str]:
    """Special-token strings from special_tokens_map.json, else GPT-2's <|endoftext|>."""
    path = os.path.join(directory, "special_tokens_map.json")
    if not os.path.isfile(path):
        return ["<|endoftext|>"]
    with open(path) as f:
        values = json.load(f).values()
    tokens = [v.get("content") if isinstance(v, Mapping) else v for v in values]
    return [t for t in dict.fromkeys(tokens) if isinstance(t, str)]


def load_gpt2_tokenizer(directory: str) -> Any:
    """A `tokenizers.Tokenizer` from tokenizer.json, or built from vocab.json+merges.txt as HF's GPT-2 does."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    path = os.path.join(directory, "tokenizer.json")
    if os.path.isfile(path):
        with open(path) as f:
            kind = (json.load(f).get("model") or {}).get("type")
        if kind != "BPE":
            raise UserError(f"{path} holds a {kind} tokenizer, not GPT-2's byte-level BPE")
        return Tokenizer.from_file(path)
    vocab, merges = os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
    if not (os.path.isfile(vocab) and os.path.isfile(merges)):
        raise FileNotFoundError(f"no GPT-2 tokenizer in {directory} (tokenizer.json, or vocab.json + merges.txt)")
    tok = Tokenizer(models.BPE.from_file(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="",
                                         fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [t for t in _special_tokens(directory) if tok.token_to_id(t) is not None]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


def _check_tokenizer(directory: str, cfg: TransformerConfig) -> None:
    """A tokenizer whose ids run past the embedding table would index garbage: refuse the pair."""
    if not _tokenizer_files(directory):
        return
    size = load_gpt2_tokenizer(directory).get_vocab_size(with_added_tokens=True)
    if size > cfg.vocab_size:
        raise UserError(f"{directory}: the tokenizer's {size} tokens exceed the model's vocab_size={cfg.vocab_size}")


def load_hf_gpt2(directory: str) -> tuple[TransformerConfig, dict]:
    """(our config, our params) from a GPT-2 `save_pretrained` directory (safetensors or pytorch_model.bin)."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Hugging Face checkpoint directory not found: {directory}")
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no config.json in {directory}")
    with open(config_path) as f:
        cfg = config_from_hf(json.load(f), source=config_path)
    files = weight_files(directory)
    state: dict[str, np.ndarray] = {}
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint shard not found: {path}")
        state.update(load_weights(path))
    params = hf_to_params(state, cfg, source=files[0] if len(files) == 1 else directory)
    _check_tokenizer(directory, cfg)
    return cfg, params


def save_hf_gpt2(directory: str, cfg: TransformerConfig, params: Mapping, *, tokenizer_dir: str | None = None,
                 bos_token_id: int | None = None, eos_token_id: int | None = None) -> None:
    """config.json + model.safetensors that GPT2LMHeadModel.from_pretrained loads; written whole or not at all.

    `directory` may be absent, empty, or hold only a GPT-2 tokenizer (kept); `tokenizer_dir` is a directory whose
    GPT-2 tokenizer files are copied alongside (a loaded checkpoint's, typically)."""
    from safetensors.numpy import save_file

    directory = os.path.abspath(directory)
    kept: list[str] = []
    if os.path.exists(directory):
        if not os.path.isdir(directory):
            raise FileExistsError(f"refusing to overwrite non-directory {directory}")
        kept = _tokenizer_files(directory)
        if others := sorted(set(os.listdir(directory)) - set(kept)):
            raise FileExistsError(f"refusing to overwrite {directory}: it holds {others[:5]}")
    copied: list[str] = []
    if tokenizer_dir is not None:
        copied = [os.path.join(tokenizer_dir, n) for n in _tokenizer_files(tokenizer_dir)]
        if not copied:
            raise FileNotFoundError(f"no GPT-2 tokenizer in {tokenizer_dir} (tokenizer.json, or vocab.json + "
                                    "merges.txt)")
    state = params_to_hf(params, cfg)
    config = hf_config_dict(cfg, bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
    backup = None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would outlive the rename
        save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
        for path in [os.path.join(directory, n) for n in kept] + copied:  # a copied tokenizer wins over a kept one
            shutil.copyfile(path, os.path.join(tmp, os.path.basename(path)))
        _check_tokenizer(tmp, cfg)
        if os.path.isdir(directory):  # rename cannot replace a non-empty directory: move it aside first
            backup = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.old-", dir=parent)
            os.rename(directory, os.path.join(backup, "dir"))
        try:
            os.rename(tmp, directory)
        except BaseException:
            if backup is not None:
                os.rename(os.path.join(backup, "dir"), directory)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:  # the old directory's files are deleted only once they are back in place or superseded
        if backup is not None and (os.path.isdir(directory) or not os.path.exists(os.path.join(backup, "dir"))):
            shutil.rmtree(backup, ignore_errors=True)
