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


def load(workdir: str, int8: bool = False) -> LoadedRun:
    """A fine-tune with its best parameters, or a pretraining run with its latest. `int8`: the weights as int8
    (compress/int8.py), quantized once and kept beside the float ones (`best_int8/`)."""
    run = RunDir(workdir)
    if run.is_finetune():
        info = run.model_info()
        config = run.load_config()
        from plm_jax.data.text_tokenizer import load_text_tokenizer

        task = task_class(info.kind)(config, info, load_text_tokenizer(info.tokenizer_path))
        which = BEST
    else:
        from plm_jax.tasks.starting_point import saved_pretraining_config

        config = saved_pretraining_config(workdir)
        task = task_class(task_name(config))(config)
        which = CHECKPOINTS
    setup = build_for_inference(task, int8=int8)
    params, step = _int8_params(run, setup, which) if int8 else run.params(setup.abstract_params, which)
    return LoadedRun(task, setup, params, step)


def int8_dir(run: RunDir, which: str = BEST) -> str:
    return run.file(f"{which}_int8")


def _int8_params(run: RunDir, setup: InferenceSetup, which: str) -> tuple[Any, int]:
    """The int8 weights of `which`'s latest step: read from `<which>_int8/` when they were saved from that
    step, else quantized from the float weights and saved there (one step kept, checksummed like any)."""
    import jax

    from plm_jax.compress.int8 import quantize
    from plm_jax.train.checkpoint import Checkpointer

    source = Checkpointer(run.file(which), keep=1, use_async=False)
    try:
        step = source.latest_step()
    finally:
        source.close()
    saved = Checkpointer(int8_dir(run, which), keep=1, use_async=False)
    try:
        if step is not None and saved.latest_step() == step:
            return saved.restore_params(step, setup.int8.abstract), step
        params, step = run.params(setup.abstract_params, which)
        qparams = jax.device_put(quantize(params, setup.int8.logical_names), setup.int8.shardings)
        saved.save(step, qparams, {"quantized_from": which, "step": step})
        return qparams, step
    finally:
        saved.close()
