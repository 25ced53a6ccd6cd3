"""The interface between the one trainer (trainer.py) and a kind of run: T5X's `BaseModel.loss_fn` plus
big_vision's evaluators, in one small class.

A task owns its model, its data and its metrics; the trainer owns everything else: the jitted steps, the loop,
logging, evaluation points, checkpoints, the best parameters, signals and resume. Losses are sums over weighted
targets, so that microbatches, padded evaluation batches and hosts add up exactly.

A new kind of run is one subclass in `plm_jax/tasks/` plus a config; `plm_jax/tasks/__init__.py` maps the
config's `objective` or `task.kind` to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from plm_jax.errors import UserError
from plm_jax.models.config import TransformerConfig

Batch = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When the trainer steps, logs, evaluates and saves. A fine-tune evaluates (and saves) once an epoch."""

    total_steps: int
    eval_every: int
    log_every: int
    checkpoint_every: int  # steps; 0 = at evaluations only
    steps_per_epoch: int = 0  # 0: a stream without epochs (pretraining)
    checkpoint_at_eval: bool = True
    eval_at_start: bool = False

    def epoch(self, step: int) -> int | None:
        return step // self.steps_per_epoch if self.steps_per_epoch else None


@dataclasses.dataclass(frozen=True)
class Steps:
    """The jitted steps a task's evaluation runs, and how host batches become global arrays."""

    eval_sums: Callable[[Any, Batch], dict[str, jax.Array]]  # (params, global batch) -> loss sums
    predict: Callable[[Any, Batch], dict[str, jax.Array]]  # (params, global batch) -> task.predict outputs
    to_global: Callable[[Batch], Batch]  # a whole batch (every host holds the same rows) -> global arrays
    data_sharding: jax.sharding.NamedSharding


@dataclasses.dataclass(frozen=True)
class Frozen:
    """A model whose parameters the loss reads but never trains (a distillation teacher): the trainer places them
    on the mesh by the same rules as the trained ones and passes them to the jitted train step as an argument,
    outside the train state (no gradient, no optimizer state, not checkpointed)."""

    model: nn.Module
    init_inputs: tuple | dict
    load: Callable[[Any], Any]  # abstract parameters (shapes + shardings) -> the parameters
    description: str = ""


class Task:
    """Subclasses set the attributes in `__init__` and implement the methods that raise NotImplementedError."""

    name: str = ""
    main_metric: str = ""  # the evaluation metric that picks `best/`
    keeps_best: bool = False  # fine-tunes keep best/ (by main_metric; the last evaluation point without eval data)
    throughput_unit: str = "tokens"  # tokens | examples: logged as `<unit>_per_sec`
    host_local_batches: bool = False  # train batches hold this process's rows only (else every host's rows)
    plot_keys: tuple[str, ...] = ("loss",)
    plot_title: str = ""
    frozen: Frozen | None = None  # set: loss_sums receives its parameters as `frozen` while training

    config: Any
    model_cfg: TransformerConfig
    model: nn.Module
    init_inputs: tuple | dict  # arguments of model.init (one row), for shapes and initialisation
    schedule: Schedule
    optimizer_config: Any  # train.* with `steps` and `warmup_steps` resolved (optimizer.make_optimizer)

    # ------------------------------------------------------------ pure functions (traced inside jit)
    def loss_sums(self, params: Any, batch: Batch, *, deterministic: bool, rngs: dict | None = None,
                  frozen: Any = None) -> dict[str, jax.Array]:
        """{"loss_sum", "weight_sum"[, "correct_sum"]}: the loss summed over the batch's weighted targets.
        `frozen`: the parameters of `self.frozen` (train steps only; evaluation scores the task's own loss)."""
        raise NotImplementedError

    def predict(self, params: Any, batch: Batch) -> dict[str, jax.Array]:
        """Model outputs that host-side metrics need (logits, spans); {} for tasks scored by their loss alone."""
        return {}

    # ------------------------------------------------------------ the run
    @classmethod
    def tokenizer_text(cls, config: Any) -> tuple[Iterator[str], int, dict[str, Any]]:
        """(documents, pieces, train_tokenizer options) that `launch.py tokenizer` trains this task's
        SentencePiece model with."""
        raise UserError(f"`tokenizer` trains on a pretraining corpus or translation pairs; a {cls.name or 'this'} "
                        "config has neither (give the fine-tune --init or --config.tokenizer)")

    def describe(self) -> str:
        """One line for the log: what trains on what."""
        return self.name

    def prepare(self, workdir: str) -> None:
        """Reads the data and writes what the run directory needs before the first step (config, tokenizer)."""

    def initial_params(self, params: Any, param_shardings: Any) -> Any:
        """Freshly initialised parameters -> the starting point (pretrained subtrees grafted in)."""
        return params

    def train_batches(self, start_step: int, position: dict[str, Any]) -> Iterator[Batch]:
        """Host batches from `start_step` on; `position` is what `position()` saved with the restored step."""
        raise NotImplementedError

    def position(self, step: int) -> dict[str, Any]:
        """The data position saved beside the state at `step` (beyond the step itself)."""
        return {}

    def count(self, batch: Batch) -> int:
        """Tokens (or examples) a host batch holds, over all hosts: the throughput's numerator."""
        raise NotImplementedError

    def eval_splits(self) -> tuple[str, ...]:
        """Splits that `evaluate` can score: "eval" is scored during training, "test" with the best parameters."""
        return ()

    def evaluate(self, params: Any, split: str, steps: Steps) -> dict[str, Any]:
        """Metrics of `params` on a split; keys starting with "_" are kept out of the logs."""
        raise NotImplementedError

    def results(self) -> dict[str, Any]:
        """Task-specific fields of results.json."""
        return {}


def weighted_means(sums: dict[str, np.ndarray | float]) -> dict[str, float]:
    """Loss and accuracy per weighted target from summed statistics."""
    weight = max(float(sums["weight_sum"]), 1.0)
    out = {"loss": float(sums["loss_sum"]) / weight}
    if "correct_sum" in sums:
        out["accuracy"] = float(sums["correct_sum"]) / weight
    return out
