"""What a run directory holds, read and written in this one place.

    config.json     the resolved config; a resumed run must agree with it
    model.json      fine-tunes: the model's shape, the task kind, labels, tokenizer (rebuilds the model alone)
    tokenizer/      fine-tunes: a copy of the tokenizer; pretraining: tokenizer.model when trained here
    checkpoints/    the latest train states with their data positions (Orbax), for resuming
    best/           fine-tunes: the parameters of the best evaluation by the task's main metric
    metrics.jsonl, tensorboard/, curves.png, results.json
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from typing import Any

import jax
import ml_collections

from plm_jax.data.text_tokenizer import TextTokenizer
from plm_jax.files import write_atomic
from plm_jax.models.config import TransformerConfig
from plm_jax.train.checkpoint import Checkpointer

CONFIG_FILE, MODEL_FILE, RESULTS_FILE = "config.json", "model.json", "results.json"
CHECKPOINTS, BEST = "checkpoints", "best"


@dataclasses.dataclass
class ModelInfo:
    """Everything needed to rebuild a fine-tuned model without its starting point: model.json."""

    model_cfg: TransformerConfig
    kind: str
    label_names: tuple[str, ...]
    tokenizer_path: str  # absolute once loaded; relative to the run directory in the file
    classifier_dropout: float | None = None
    pooling: str = "cls"  # sequence classification: [CLS] or the mean of the token outputs (models/heads.py)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model_cfg.to_dict(), "kind": self.kind, "label_names": list(self.label_names),
                "tokenizer": self.tokenizer_path, "classifier_dropout": self.classifier_dropout,
                "pooling": self.pooling}


class RunDir:
    def __init__(self, path: str):
        self.path = path

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # ------------------------------------------------------------ config.json
    def has_trained(self) -> bool:
        """Whether a step was saved: a run whose first start failed before it has nothing to protect."""
        folder = self.file(CHECKPOINTS)
        return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))

    def saved_config(self, if_trained: bool = False) -> dict[str, Any] | None:
        """config.json; with `if_trained`, None when no step was saved (a corrected first start may differ)."""
        path = self.file(CONFIG_FILE)
        if not os.path.exists(path) or (if_trained and not self.has_trained()):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def load_config(self, defaults: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
        """The saved config, over `defaults` for keys that an older run did not write."""
        saved = self.saved_config()
        if saved is None:
            raise FileNotFoundError(f"{self.file(CONFIG_FILE)} not found: {self.path} is not a plm_jax run directory")
        if defaults is None:
            return ml_collections.ConfigDict(saved)
        defaults.update(ml_collections.ConfigDict(saved))
        return defaults

    def write_config(self, resolved: dict[str, Any], replace: bool = False) -> None:
        """Process 0 writes; a file that is already there is kept unless `replace` (a resume checked it against the
        config; a fine-tune's resume may change how it reports, and the file says so)."""
        if jax.process_index() == 0 and (replace or not os.path.exists(self.file(CONFIG_FILE))):
            write_atomic(self.file(CONFIG_FILE), json.dumps(resolved, indent=2))

    def is_finetune(self) -> bool:
        return os.path.isfile(self.file(MODEL_FILE))

    def is_pretraining(self) -> bool:
        """config.json and checkpoints/: what continued pretraining and a general-distillation teacher read."""
        return os.path.isfile(self.file(CONFIG_FILE)) and os.path.isdir(self.file(CHECKPOINTS))

    def kind(self) -> str:
        """The task kind of a fine-tune, or "pretrain" for a pretraining run."""
        if self.is_finetune():
            return self.model_info().kind
        if os.path.isdir(self.file(CHECKPOINTS)):
            return "pretrain"
        raise FileNotFoundError(f"{self.path} is neither a fine-tuning nor a pretraining work directory")

    # ------------------------------------------------------------ model.json and the tokenizer
    def model_info(self) -> ModelInfo:
        path = self.file(MODEL_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: {self.path} is not a fine-tuning work directory")
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return ModelInfo(TransformerConfig.from_config(d["model"]), d["kind"], tuple(d["label_names"]),
                         self.file(d["tokenizer"]), d.get("classifier_dropout"), d.get("pooling", "cls"))

    def write_model_info(self, info: ModelInfo) -> None:
        if jax.process_index() == 0:
            write_atomic(self.file(MODEL_FILE), json.dumps(info.to_json(), indent=2))

    def copy_tokenizer(self, tokenizer: TextTokenizer) -> str:
        """The tokenizer file(s) into tokenizer/ (process 0); the path relative to the run directory."""
        names = [os.path.basename(tokenizer.path)]
        if jax.process_index() != 0:
            return os.path.join("tokenizer", names[0])
        folder = self.file("tokenizer")
        os.makedirs(folder, exist_ok=True)
        src_dir = os.path.dirname(os.path.abspath(tokenizer.path))
        if tokenizer.kind == "wordpiece":  # keep the companions a Hugging Face export needs
            names += [n for n in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
                      if n not in names and os.path.isfile(os.path.join(src_dir, n))]
        trained = self.has_trained()  # a first start that failed may have left another tokenizer behind
        for name in names:
            dst = os.path.join(folder, name)
            src = os.path.join(src_dir, name)
            if not os.path.exists(dst) or (not trained and not os.path.samefile(src, dst)):
                shutil.copyfile(src, dst)
        return os.path.join("tokenizer", names[0])

    # ------------------------------------------------------------ checkpoints and results
    def checkpointer(self, keep: int = 3, use_async: bool = True) -> Checkpointer:
        return Checkpointer(self.file(CHECKPOINTS), keep=keep, use_async=use_async)

    def best_checkpointer(self) -> Checkpointer:
        return Checkpointer(self.file(BEST), keep=1, use_async=False)

    def params(self, abstract_params: Any, which: str = BEST) -> tuple[Any, int]:
        """(parameters, step) of the best (`best`) or latest (`checkpoints`) checkpoint; no optimizer is read."""
        ckpt = Checkpointer(self.file(which), keep=1, use_async=False)
        try:
            step = ckpt.latest_step()
            if step is None:
                what = "the fine-tune has not finished an epoch" if which == BEST else "no step was saved"
                raise FileNotFoundError(f"no checkpoint in {self.file(which)}: {what}")
            return ckpt.restore_params(step, abstract_params), step
        finally:
            ckpt.close()

    def write_results(self, results: dict[str, Any]) -> None:
        if jax.process_index() == 0:
            write_atomic(self.file(RESULTS_FILE), json.dumps(finite_json(results), indent=2, allow_nan=False))


def finite_json(obj: Any) -> Any:
    """`obj` with every NaN or infinity as null: JSON has no such numbers, and a reader would choke on them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj
