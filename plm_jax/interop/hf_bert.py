"""Hugging Face BERT <-> plm_jax: configs, parameters and checkpoint directories, both directions.

Our post-LN BERT maps one to one onto `transformers`' BertModel / BertForMaskedLM / BertForSequenceClassification /
BertForQuestionAnswering (the NSP head is dropped). HF stores Linear weights as (out, in); we store DenseGeneral
kernels as (in, out) with the attention's head axes split out: query/key/value (D, H, K), attention out (H, K, D).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from plm_jax.errors import UserError
from plm_jax.models.config import TransformerConfig

HF_TO_OUR_ACT = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                  "gelu_fast": "gelu_tanh", "relu": "relu"}
OUR_TO_HF_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
_HEAD_KEYS = {"classifier": "classifier.weight", "qa_outputs": "qa_outputs.weight",
              "mlm_head": "cls.predictions.bias"}  # in the order that picks `architectures`
_ARCHITECTURES = {"classifier": "BertForSequenceClassification", "qa_outputs": "BertForQuestionAnswering",
                  "mlm_head": "BertForMaskedLM"}
_IGNORED_PREFIXES = ("cls.seq_relationship.",)  # the NSP head: no counterpart here


def source_where(source: str) -> str:
    return f"{source}: " if source else ""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One array: its HF name and shape, our path and shape; `transposed` for Linear weights ((out, in) in HF)."""

    hf_key: str
    path: tuple[str, ...]
    hf_shape: tuple[int, ...]
    our_shape: tuple[int, ...]
    transposed: bool = False

    def to_ours(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((a.T if self.transposed else a).reshape(self.our_shape), np.float32)

    def to_hf(self, a: np.ndarray) -> np.ndarray:
        if self.transposed:
            return np.ascontiguousarray(a.reshape(self.hf_shape[::-1]).T, np.float32)
        return np.ascontiguousarray(a.reshape(self.hf_shape), np.float32)


def _linear(hf: str, path: tuple[str, ...], d_in: int, d_out: int, our_kernel: tuple[int, ...] | None = None,
            our_bias: tuple[int, ...] | None = None) -> list[Entry]:
    return [Entry(f"{hf}.weight", (*path, "kernel"), (d_out, d_in), our_kernel or (d_in, d_out), transposed=True),
            Entry(f"{hf}.bias", (*path, "bias"), (d_out,), our_bias or (d_out,))]


def norm_entries(hf: str, path: tuple[str, ...], d: int) -> list[Entry]:
    return [Entry(f"{hf}.weight", (*path, "scale"), (d,), (d,)), Entry(f"{hf}.bias", (*path, "bias"), (d,), (d,))]


def _groups(cfg: TransformerConfig, num_labels: int = 0) -> dict[str, list[Entry]]:
    """The arrays by top-level subtree, HF names without the `bert.` prefix; `num_labels` sizes the classifier."""
    d, h, k, f, v = cfg.hidden_size, cfg.num_heads, cfg.kv_dim, cfg.mlp_dim, cfg.vocab_size
    enc = [Entry("embeddings.word_embeddings.weight", ("encoder", "embeddings", "word_embeddings", "embedding"),
                  (v, d), (v, d)),
           Entry("embeddings.position_embeddings.weight", ("encoder", "embeddings", "position_embeddings"),
                  (cfg.max_len, d), (cfg.max_len, d)),
           Entry("embeddings.token_type_embeddings.weight", ("encoder", "embeddings", "token_type_embeddings"),
                  (cfg.type_vocab_size, d), (cfg.type_vocab_size, d)),
           *norm_entries("embeddings.LayerNorm", ("encoder", "embeddings", "layer_norm"), d)]
    for i in range(cfg.num_layers):
        hf, ours = f"encoder.layer.{i}", ("encoder", f"layer_{i}")
        for name in ("query", "key", "value"):
            enc += _linear(f"{hf}.attention.self.{name}", (*ours, "attention", name), d, h * k, (d, h, k), (h, k))
        enc += _linear(f"{hf}.attention.output.dense", (*ours, "attention", "out"), h * k, d, (h, k, d))
        enc += norm_entries(f"{hf}.attention.output.LayerNorm", (*ours, "attention_layer_norm"), d)
        enc += _linear(f"{hf}.intermediate.dense", (*ours, "mlp", "wi"), d, f)
        enc += _linear(f"{hf}.output.dense", (*ours, "mlp", "wo"), f, d)
        enc += norm_entries(f"{hf}.output.LayerNorm", (*ours, "mlp_layer_norm"), d)
    return {
        "encoder": enc,
        "pooler": _linear("pooler.dense", ("pooler",), d, d),
        "mlm_head": [*_linear("cls.predictions.transform.dense", ("mlm_head", "transform"), d, d),
                     *norm_entries("cls.predictions.transform.LayerNorm", ("mlm_head", "transform_layer_norm"), d),
                     Entry("cls.predictions.bias", ("mlm_head", "bias"), (v,), (v,))],
        "classifier": _linear("classifier", ("classifier",), d, num_labels),
        "qa_outputs": _linear("qa_outputs", ("qa_outputs",), d, 2),
    }


def _check_bert_layout(cfg: TransformerConfig) -> None:
    if cfg.pre_layer_norm or cfg.mlp_activation not in OUR_TO_HF_ACT:
        raise UserError(f"pre_layer_norm={cfg.pre_layer_norm}, mlp_activation={cfg.mlp_activation!r} has no "
                         "Hugging Face BERT counterpart (needs post-LN and gelu/gelu_tanh/relu)")
    if cfg.attention_dim != cfg.hidden_size:
        raise UserError(f"the model's attention heads were pruned ({cfg.num_heads} heads of width {cfg.kv_dim} in a "
                         f"{cfg.hidden_size}-wide model): Hugging Face's BertConfig has no such shape")


def config_from_hf(hf_config: Mapping[str, Any], *, source: str = "") -> TransformerConfig:
    """Our config for a HF BertConfig dict; anything BERT-shaped but not reproducible here is an error."""
    where, model_type = source_where(source), hf_config.get("model_type")
    archs = list(hf_config.get("architectures") or [])
    if model_type != "bert" and not (model_type is None and archs and all(a.startswith("Bert") for a in archs)):
        raise UserError(f"{where}model_type={model_type!r} (architectures={archs}) is not supported; "
                         "only BERT-family 'bert' checkpoints are supported")
    if hf_config.get("position_embedding_type", "absolute") != "absolute":
        raise UserError(f"{where}position_embedding_type={hf_config['position_embedding_type']!r} is not "
                         "supported; only 'absolute' learned positions are")
    for flag in ("is_decoder", "add_cross_attention"):
        if hf_config.get(flag):
            raise UserError(f"{where}{flag}=true is not supported; only bidirectional BERT encoders are")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings")
    if missing := [k for k in required if k not in hf_config]:
        raise UserError(f"{where}the config lacks {missing}")
    act = hf_config.get("hidden_act", "gelu")
    if not isinstance(act, str) or act not in HF_TO_OUR_ACT:
        raise UserError(f"{where}hidden_act={act!r} is not supported; expected one of {sorted(HF_TO_OUR_ACT)}")
    return TransformerConfig(
        vocab_size=hf_config["vocab_size"], hidden_size=hf_config["hidden_size"],
        num_layers=hf_config["num_hidden_layers"], num_heads=hf_config["num_attention_heads"],
        mlp_dim=hf_config["intermediate_size"], max_len=hf_config["max_position_embeddings"],
        type_vocab_size=hf_config.get("type_vocab_size", 2),
        dropout_rate=hf_config.get("hidden_dropout_prob", 0.1),
        attention_dropout_rate=hf_config.get("attention_probs_dropout_prob", 0.1),
        mlp_activation=HF_TO_OUR_ACT[act], layer_norm_eps=hf_config.get("layer_norm_eps", 1e-12),
        init_std=hf_config.get("initializer_range", 0.02), use_pooler=True, tie_embeddings=True)


def _normalize_keys(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Drops the `bert.` prefix, renames old `LayerNorm.gamma/beta`, drops NSP and `position_ids` buffers."""
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("bert.")
        if key.endswith("position_ids") or key.startswith(_IGNORED_PREFIXES):
            continue
        if ".LayerNorm." in key:
            key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[key] = np.asarray(value)
    return out


def set_path(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def hf_to_params(state_dict: Mapping[str, np.ndarray], cfg: TransformerConfig, *, source: str = "") -> dict:
    """Our parameter tree (plain dicts of float32 numpy) from a HF BERT state dict, heads included when present."""
    _check_bert_layout(cfg)
    where, sd = source_where(source), _normalize_keys(state_dict)
    num_labels = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else 0
    params: dict = {}
    used: set[str] = set()
    for group, entries in _groups(cfg, num_labels).items():
        present = [e.hf_key for e in entries if e.hf_key in sd]
        if group != "encoder" and not present:
            continue
        for e in entries:
            if e.hf_key not in sd:
                raise UserError(f"{where}missing weight {e.hf_key!r} (shape {e.hf_shape}) for the {group}")
            if tuple(sd[e.hf_key].shape) != e.hf_shape:
                raise UserError(f"{where}{e.hf_key!r} has shape {tuple(sd[e.hf_key].shape)}, expected {e.hf_shape}")
            set_path(params, e.path, e.to_ours(sd[e.hf_key].astype(np.float32)))
            used.add(e.hf_key)
    if "mlm_head" in params:
        if not cfg.tie_embeddings:
            raise UserError(f"{where}the MLM head converts only with tie_embeddings=True")
        decoder = sd.get("cls.predictions.decoder.weight")
        if decoder is not None and not np.array_equal(decoder, sd["embeddings.word_embeddings.weight"]):
            raise UserError(f"{where}cls.predictions.decoder.weight differs from the word embeddings; "
                             "untied MLM decoders are unsupported")
        bias = sd.get("cls.predictions.decoder.bias")
        if bias is not None and not np.array_equal(bias, sd["cls.predictions.bias"]):
            raise UserError(f"{where}cls.predictions.decoder.bias differs from cls.predictions.bias")
        used |= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    unknown = sorted(set(sd) - used)
    if unknown:
        raise UserError(f"{where}unexpected weight(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''} "
                         f"for a {cfg.num_layers}-layer BERT")
    if cfg.scan_layers:
        from plm_jax.models.layout import to_scanned

        params = to_numpy(to_scanned(params))
    return params


def to_numpy(tree: Any) -> Any:
    """Plain nested dicts of float32 numpy arrays: unboxes flax metadata, unfreezes, pulls from devices."""
    if isinstance(tree, Mapping):
        return {k: to_numpy(v) for k, v in tree.items()}
    if hasattr(tree, "unbox"):
        return to_numpy(tree.unbox())
    return np.asarray(tree, dtype=np.float32)


def params_to_hf(params: Mapping, cfg: TransformerConfig) -> dict[str, np.ndarray]:
    """HF state dict: BertModel names without a head, else the `bert.` prefix and HF's head names."""
    from plm_jax.models.layout import to_unscanned

    _check_bert_layout(cfg)
    tree = to_numpy(params)
    if "params" in tree and "encoder" not in tree:
        tree = tree["params"]
    if "layers" in tree.get("encoder", {}):
        tree = to_numpy(to_unscanned(tree))
    num_labels = tree["classifier"]["kernel"].shape[-1] if "classifier" in tree else 0
    prefix = "bert." if any(h in tree for h in _HEAD_KEYS) else ""
    out: dict[str, np.ndarray] = {}
    for group, entries in _groups(cfg, num_labels).items():
        if group not in tree and group != "encoder":
            continue
        for e in entries:
            node: Any = tree
            for name in e.path:
                if not isinstance(node, Mapping) or name not in node:
                    raise UserError(f"params lack {'/'.join(e.path)} (shape {e.our_shape})")
                node = node[name]
            if node.shape != e.our_shape:
                raise UserError(f"params {'/'.join(e.path)} has shape {node.shape}, expected {e.our_shape}")
            in_bert = group in ("encoder", "pooler")
            out[(prefix if in_bert else "") + e.hf_key] = e.to_hf(node)
    if "mlm_head" in tree:
        out["cls.predictions.decoder.weight"] = out["bert.embeddings.word_embeddings.weight"].copy()
        out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"].copy()
    return out


def hf_config_dict(cfg: TransformerConfig, *, architecture: str = "BertModel", num_labels: int | None = None,
                   id2label: Mapping[int, str] | None = None, problem_type: str | None = None) -> dict[str, Any]:
    """The config.json that `transformers` reads back into an equivalent BertConfig."""
    _check_bert_layout(cfg)
    out: dict[str, Any] = {
        "architectures": [architecture], "model_type": "bert", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.mlp_dim,
        "hidden_act": OUR_TO_HF_ACT[cfg.mlp_activation], "hidden_dropout_prob": cfg.dropout_rate,
        "attention_probs_dropout_prob": cfg.attention_dropout_rate, "max_position_embeddings": cfg.max_len,
        "type_vocab_size": cfg.type_vocab_size, "initializer_range": cfg.init_std,
        "layer_norm_eps": cfg.layer_norm_eps, "pad_token_id": 0, "position_embedding_type": "absolute",
        "classifier_dropout": None, "tie_word_embeddings": True, "torch_dtype": "float32",
    }
    if num_labels is not None:
        labels = {int(i): str(n) for i, n in (id2label or {i: f"LABEL_{i}" for i in range(num_labels)}).items()}
        if sorted(labels) != list(range(num_labels)):
            raise UserError(f"id2label keys {sorted(labels)} do not match the classifier's {num_labels} labels")
        out["num_labels"] = num_labels
        out["id2label"] = {str(i): n for i, n in sorted(labels.items())}
        out["label2id"] = {n: i for i, n in sorted(labels.items())}
    if problem_type is not None:
        out["problem_type"] = problem_type
    return out


def weight_files(directory: str) -> list[str]:
    """model.safetensors, a sharded safetensors index, or pytorch_model.bin, in that order of preference."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.isfile(os.path.join(directory, name)):
            return [os.path.join(directory, name)]
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = os.path.join(directory, name)
        if os.path.isfile(index):
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            return [os.path.join(directory, s) for s in shards]
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {directory}")


def load_weights(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file

            return {k: v.astype(np.float32) for k, v in load_file(path).items()}
        except TypeError:  # bfloat16 has no numpy dtype: read through torch instead
            pass
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path} needs PyTorch; install torch or convert the checkpoint to "
                          "model.safetensors") from None
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file as load_torch

        tensors = load_torch(path)
    else:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    return {k: t.detach().float().numpy() for k, t in tensors.items()}


def load_hf_checkpoint(directory: str) -> tuple[TransformerConfig, dict, dict]:
    """(our config, our params, the raw HF config dict) from a `save_pretrained` directory."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Hugging Face checkpoint directory not found: {directory}")
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no config.json in {config_path}")
    with open(config_path) as f:
        hf_config = json.load(f)
    cfg = config_from_hf(hf_config, source=config_path)
    files = weight_files(directory)
    state: dict[str, np.ndarray] = {}
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint shard not found: {path}")
        state.update(load_weights(path))
    return cfg, hf_to_params(state, cfg, source=files[0] if len(files) == 1 else directory), hf_config


def save_hf_checkpoint(directory: str, params: Mapping, cfg: TransformerConfig, *,
                       id2label: Mapping[int, str] | None = None, problem_type: str | None = None,
                       tokenizer_files: Sequence[str] = ()) -> None:
    """A directory that `transformers`' `from_pretrained` loads; written whole or not at all."""
    from safetensors.numpy import save_file

    directory = os.path.abspath(directory)
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise FileExistsError(f"refusing to overwrite non-empty {directory}")
    for path in tokenizer_files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file not found: {path}")
    state = params_to_hf(params, cfg)
    heads = [h for h, key in _HEAD_KEYS.items() if key in state]
    architecture = _ARCHITECTURES[heads[0]] if heads else "BertModel"
    num_labels = state["classifier.weight"].shape[0] if "classifier.weight" in state else None
    if num_labels is None and (id2label is not None or problem_type is not None):
        raise UserError("id2label/problem_type describe a classifier, but params have no classifier head")
    config = hf_config_dict(cfg, architecture=architecture, num_labels=num_labels, id2label=id2label,
                            problem_type=problem_type)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would outlive the rename
        save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
        for path in tokenizer_files:
            shutil.copyfile(path, os.path.join(tmp, os.path.basename(path)))
        if os.path.isdir(directory):
            os.rmdir(directory)  # empty (checked above); rename cannot replace a directory
        os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_vocab(cfg: TransformerConfig, tokenizer_vocab_size: int, *, source: str) -> None:
    """A tokenizer whose ids run past (or short of) the embedding table would silently mis-embed: refuse it."""
    if cfg.vocab_size != tokenizer_vocab_size:
        raise UserError(f"{source}: the checkpoint's vocab_size={cfg.vocab_size} differs from the tokenizer's "
                         f"vocabulary size {tokenizer_vocab_size}")
