"""Tasks: each pretraining objective and each fine-tuning kind is one module behind train/task.py's interface.

`TASKS` is the one place a config's name for a task is mapped to its module: a pretraining config names its
`objective`, a fine-tuning config its `task.kind`. Adding a task is one module, one line here and a config.
"""

from __future__ import annotations

import importlib
from typing import Any

from plm_jax.errors import UserError

TASKS = {
    "mlm": "plm_jax.tasks.pretraining:PretrainingTask",
    "causal_lm": "plm_jax.tasks.pretraining:PretrainingTask",
    "span_corruption": "plm_jax.tasks.pretraining:PretrainingTask",
    "classification": "plm_jax.tasks.classification_task:ClassificationTask",
    "regression": "plm_jax.tasks.classification_task:ClassificationTask",
    "qa": "plm_jax.tasks.qa_task:QATask",
    "translation": "plm_jax.tasks.translation_task:TranslationTask",
    "tagging": "plm_jax.tasks.tagging_task:TaggingTask",
}


def task_name(config: Any) -> str:
    """A fine-tuning config's `task.kind`, else a pretraining config's `objective`."""
    return config.task.kind if "task" in config else config.get("objective", "mlm")


def task_class(name: str, key: str = "task.kind") -> type:
    """The task class registered for `name`; `key` names the config key in the error for an unknown name."""
    if name not in TASKS:
        raise UserError(f"{key}={name!r}; expected one of {sorted(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def is_finetune(config: Any) -> bool:
    return "task" in config
