"""Runs by their config or their directory: train one (any task, the one trainer) or load a finished one.

    train(config, workdir)   pretraining or fine-tuning, as the config says (tasks.TASKS)
    load(workdir)            a run directory's task, inference setup and parameters, no optimizer built
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from plm_jax.tasks import is_finetune, task_class, task_name
from plm_jax.train.rundir import BEST, CHECKPOINTS, RunDir
from plm_jax.train.setup import InferenceSetup, build_for_inference
from plm_jax.train.task import Task
from plm_jax.train.trainer import train as train_task


def build_task(config: ml_collections.ConfigDict, workdir: str | None = None) -> Task:
    """The task a config describes, ready for training (a fine-tune resolves its starting point, reads its data)."""
    cls = task_class(task_name(config), "task.kind" if is_finetune(config) else "objective")
    return cls.for_training(config, workdir) if is_finetune(config) else cls(config)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) the run `config` describes in `workdir`; returns results.json's content."""
    return train_task(build_task(config, workdir), workdir)


@dataclasses.dataclass
class LoadedRun:
    task: Task
    setup: InferenceSetup
    params: Any
    step: int

    @property
    def tokenizer(self) -> Any:
        return self.task.tokenizer

    def outputs(self, arrays: dict[str, Any]) -> dict[str, Any]:
        """A fine-tune's outputs (logits, spans) for every row of `arrays`."""
        return self.task.outputs(self.params, arrays, self.setup.steps())[0]


def load(workdir: str) -> LoadedRun:
    """A fine-tune with its best parameters, or a pretraining run with its latest."""
    run = RunDir(workdir)
    if run.is_finetune():
        info = run.model_info()
        config = run.load_config()
        from plm_jax.data.text_tokenizer import load_text_tokenizer

        task = task_class(info.kind)(config, info, load_text_tokenizer(info.tokenizer_path))
        which = BEST
    else:
        from plm_jax.config_base import mlm_pretrain_config

        config = run.load_config(mlm_pretrain_config())  # defaults for keys an older run did not write
        task = task_class(task_name(config))(config)
        which = CHECKPOINTS
    setup = build_for_inference(task)
    params, step = run.params(setup.abstract_params, which)
    return LoadedRun(task, setup, params, step)
