"""The whole thesis on real offline data, on CPU: pretrain, then fine-tune, and compare starting points.

    python launch.py demo --workdir runs/demo [--pretrained runs/quickstart]

1. Pretrain the README's quickstart BERT (masked LM on Wikipedia leads), or reuse a finished run.
2. Fine-tune on Rotten Tomatoes sentiment and on the 11 Wikipedia topics, from three starting points with the
   same fine-tuning config: our pretrained model, the same model from random weights, and the imported
   all-MiniLM-L6-v2 (a Hugging Face BERT, 22.7M parameters; on a smaller budget, since it is 12x larger).
3. Print and save (demo_results.json, demo.png) accuracy and macro-F1 on the validation and test splits.

Every step resumes: run the command again after an interruption and finished fine-tunes are read back.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from typing import Any

import ml_collections

from plm_jax.evaluate.tables import table

log = logging.getLogger("plm_jax")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("rotten_tomatoes", "wiki_topics")
# TF-IDF + logistic regression on a stratified 80/20 split, seed 0 (the reference figures).
REFERENCE = {"rotten_tomatoes": 0.783, "wiki_topics": 0.902}
# MiniLM is ~12x the quickstart model's compute per token: it sees 3,000 examples once (at a lower learning
# rate), so that each of its fine-tunes also takes a few minutes on 2 cores; the others see all examples 3 times.
STARTS: dict[str, dict[str, Any]] = {
    "pretrained": {},
    "scratch": {"from_scratch": True},
    "minilm": {"init": "minilm", "train": {"lr": 1e-4, "epochs": 1}, "task": {"max_train_examples": 3000}},
}


def load_config(relative_path: str) -> ml_collections.ConfigDict:
    path = os.path.join(ROOT, relative_path)
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.get_config()


def finetune_config_for(task: str, start: str, pretrained: str) -> ml_collections.ConfigDict:
    config = load_config(f"configs/finetune/{task}.py")
    config.init = pretrained
    setup = STARTS[start]
    for key, value in setup.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def demo_configs() -> list[ml_collections.ConfigDict]:
    """Every config the demo runs (launch.py sizes the CPU devices to fit all of them)."""
    return [load_config("configs/quickstart.py")] + [finetune_config_for(task, start, "") for task in TASKS
                                                       for start in STARTS]


def run_demo(workdir: str, pretrained: str | None = None) -> dict[str, Any]:
    from plm_jax.run import train

    os.makedirs(workdir, exist_ok=True)
    if pretrained is None:
        pretrained = os.path.join(workdir, "pretrain")
        log.info("demo 1/3: pretraining the quickstart model in %s", pretrained)
        train(load_config("configs/quickstart.py"), pretrained)
    elif not os.path.isdir(os.path.join(pretrained, "checkpoints")):
        raise FileNotFoundError(f"--pretrained {pretrained}: not a pretraining run (no checkpoints/ in it)")

    rows = []
    for task in TASKS:
        for start in STARTS:
            run_dir = os.path.join(workdir, f"{task}-{start}")
            results_path = os.path.join(run_dir, "results.json")
            if os.path.exists(results_path):
                with open(results_path, encoding="utf-8") as f:
                    results = json.load(f)
            else:
                log.info("demo: fine-tuning %s from %s", task, start)
                results = train(finetune_config_for(task, start, pretrained), run_dir)
                if "interrupted_at" in results:
                    raise KeyboardInterrupt(f"interrupted during {run_dir}; run the demo again to resume")
            rows.append({"task": task, "start": start, "train_examples": results["train_examples"],
                         "steps": results["steps"], "wall_s": results.get("wall_s"),
                         "eval": results["best"]["metrics"], "test": results.get("test", {})})
    summary = {"pretrained": pretrained, "rows": rows, "tfidf_reference_accuracy": REFERENCE}
    with open(os.path.join(workdir, "demo_results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print(demo_table(rows))
    print(f"TF-IDF + logistic regression reference accuracy: {REFERENCE}")
    print(f"written: {os.path.join(workdir, 'demo_results.json')}, {plot_demo(rows, workdir)}")
    return summary


def demo_table(rows: list[dict[str, Any]]) -> str:
    header = ["task", "starting point", "examples", "steps", "val acc", "val macro-F1", "test acc", "test macro-F1",
              "minutes"]
    body = [[r["task"], r["start"], r["train_examples"], r["steps"], r["eval"].get("accuracy"),
             r["eval"].get("f1_macro"), r["test"].get("accuracy"), r["test"].get("f1_macro"),
             f"{r['wall_s'] / 60:.1f}" if r.get("wall_s") else None] for r in rows]
    return table(header, body)


def plot_demo(rows: list[dict[str, Any]], workdir: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(TASKS), figsize=(5.5 * len(TASKS), 3.8), squeeze=False)
    for ax, task in zip(axes[0], TASKS):
        mine = [r for r in rows if r["task"] == task]
        x = np.arange(len(mine))
        for offset, key, label in ((-0.2, "accuracy", "test accuracy"), (0.2, "f1_macro", "test macro-F1")):
            ax.bar(x + offset, [r["test"].get(key, 0.0) for r in mine], width=0.4, label=label)
        ax.axhline(REFERENCE[task], color="k", linestyle="--", linewidth=1, label="TF-IDF + LR accuracy")
        ax.set_xticks(x, [r["start"] for r in mine])
        ax.set_ylim(0, 1)
        ax.set_title(task.replace("_", " "))
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = os.path.join(workdir, "demo.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
