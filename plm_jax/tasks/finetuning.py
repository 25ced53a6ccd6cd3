"""What every fine-tune shares: labeled examples held in memory as arrays, epochs of (seed, step) batches, a
starting point (tasks/starting_point.py), evaluation over whole splits in padded batches, and model.json.

Fine-tuning sets are small: they are tokenized once in Python and held in memory. An epoch is a permutation drawn
from (seed, epoch), so a resumed run knows every batch from the step number alone. Subclasses give the model, the
loss, how a split is loaded and how its outputs are scored.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from plm_jax.data.text_tokenizer import TextTokenizer
from plm_jax.errors import UserError
from plm_jax.tasks import distillation, pruning, starting_point
from plm_jax.tasks.starting_point import StartingPoint
from plm_jax.train.rundir import ModelInfo, RunDir
from plm_jax.train.task import Batch, Schedule, Steps, Task

log = logging.getLogger("plm_jax")
# train.* keys that change how a run reports, not what it computes: a resume may change them
_HARMLESS = ("log_every", "eval_batch_size", "async_checkpoints", "keep_checkpoints", "checkpoint_every",
             "profile_steps", "eval_at_start")
# config keys that a run started before they existed did without: what its config.json stands for
_ADDED_LATER: dict[str, Any] = {"init_layers": [], "prune": {"heads": 0, "examples": 512}}


@dataclasses.dataclass
class Split:
    name: str
    arrays: dict[str, np.ndarray]  # model inputs + targets, one row per example (QA: per window)
    extra: Any = None  # what scoring needs beyond the arrays (QA: examples and features; translation: references)

    def __len__(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])


class FinetuneTask(Task):
    keeps_best = True
    throughput_unit = "examples"
    input_keys: tuple[str, ...] = ()  # batch fields the model reads
    target_keys: tuple[str, ...] = ()  # batch fields the loss reads
    default_main_metric = "loss"
    workdir = ""  # the run directory while training (prepare); "" when a finished run is loaded
    teacher: distillation.Teacher | None = None  # config.distill.teacher: the loss also reads this frozen model
    pruning: dict[str, Any] | None = None  # config.prune: which heads of the starting point were kept, and why

    def __init__(self, config: ml_collections.ConfigDict, info: ModelInfo, tokenizer: TextTokenizer,
                 start: StartingPoint | None = None, splits: dict[str, Split] | None = None):
        """A fine-tune of `info`'s model. Training passes the starting point and the loaded splits
        (`for_training`); a finished run is rebuilt from its model.json alone (`plm_jax/run.py: load`)."""
        self.config, self.info, self.tokenizer, self.start = config, info, tokenizer, start
        self.name = info.kind
        self.model_cfg = info.model_cfg
        seq_len = int(config.task.get("seq_len", 0))
        if seq_len > self.model_cfg.max_len:
            raise UserError(f"task.seq_len={seq_len} exceeds the model's max_len={self.model_cfg.max_len}")
        self.model = self.build_model()
        self.init_inputs = self.dummy_inputs()
        self.main_metric = config.task.get("main_metric", "") or self.default_main_metric
        self.plot_keys = ("loss", self.main_metric) if self.main_metric != "loss" else ("loss",)
        self.plot_title = "fine-tuning"
        self.splits = dict(splits or {})
        train = config.train
        if "train" in self.splits:
            n_train, batch_size = len(self.splits["train"]), int(train.batch_size)
            if n_train < batch_size:
                raise UserError(f"the train split holds {n_train} examples, fewer than "
                                 f"train.batch_size={batch_size}")
            steps_per_epoch = n_train // batch_size  # the remainder of each epoch's permutation is left out
            epochs = training_epochs(int(train.epochs), steps_per_epoch, int(train.get("min_steps", 0)))
            total = steps_per_epoch * epochs
            max_evals = int(train.get("max_evals", 0))
            eval_every = steps_per_epoch * (math.ceil(epochs / max_evals) if max_evals else 1)
            self.schedule = Schedule(total_steps=total, eval_every=eval_every, log_every=int(train.log_every),
                                     checkpoint_every=int(train.checkpoint_every), steps_per_epoch=steps_per_epoch,
                                     eval_at_start=bool(train.get("eval_at_start", False)))
            self.optimizer_config = ml_collections.ConfigDict(
                {**train.to_dict(), "steps": total, "warmup_steps": round(float(train.warmup_frac) * total)})

    # ------------------------------------------------------------ what subclasses give
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def forward(self, params: Any, batch: Batch, deterministic: bool, rngs: dict | None = None) -> Any:
        raise NotImplementedError

    def sums(self, outputs: Any, batch: Batch) -> dict[str, jax.Array]:
        """The loss (and correct predictions) summed over the batch's real examples (`example_weights`)."""
        raise NotImplementedError

    def named_outputs(self, outputs: Any, batch: Batch) -> dict[str, jax.Array]:
        """What `score` reads, by name (e.g. {"logits": ...})."""
        raise NotImplementedError

    def dummy_inputs(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_split(self, name: str) -> Split:
        raise NotImplementedError

    def configured_splits(self) -> tuple[str, ...]:
        """train, then eval and test where the task config names a file, or a split of a TFDS source."""
        task = self.config.task
        names = ["train"]
        for split in ("eval", "test"):
            if task.get(f"{split}_file") or (task.get("source") == "tfds" and task.get(f"{split}_split")):
                names.append(split)
        return tuple(names)

    def score(self, split: Split, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Metrics from the model's outputs on every row of a split."""
        return {}

    def predict_file(self, params: Any, steps: Steps, input_path: str, output_path: str) -> int:
        """`launch.py predict`: labels, answers or translations for a file of new inputs; returns how many."""
        raise NotImplementedError

    # ------------------------------------------------------------ building a fine-tune
    @classmethod
    def for_training(cls, config: ml_collections.ConfigDict, workdir: str | None = None) -> FinetuneTask:
        cls.validate(config)
        if workdir is not None:
            check_workdir(config, workdir)
        distillation.check(config, config.task.kind)  # a bad teacher is named before any data or model is read
        cls.check_data(config)
        start = cls.starting_point(config)
        cls.check_start(config, start)
        starting_point.check_finetuned(start, config)
        pruning.check(config, start)
        teacher = distillation.resolve(config, config.task.kind, start.tokenizer)  # before any data is read
        if teacher is not None and cls.distill_terms is FinetuneTask.distill_terms:
            raise UserError(f"distillation (distill.teacher) is not available for task.kind={config.task.kind!r} "
                            "yet")
        probe = cls(config, cls.info_for(config, start, ()), start.tokenizer, start)
        train = probe.load_split("train")  # the train split names the labels that the other splits use
        info = cls.info_for(config, start, probe.label_names(train))
        starting_point.check_finetuned(start, config, info.label_names)
        task = cls(config, info, start.tokenizer, start, {"train": train})
        if pruning.heads(config):  # the run itself is the re-fine-tune of the pruned model
            start, record = pruning.pruned_start(task, start)
            task = cls(config, cls.info_for(config, start, info.label_names), start.tokenizer, start, {"train": train})
            task.pruning = record
        if teacher is not None:
            if tuple(teacher.task.info.label_names) != tuple(info.label_names):
                raise UserError(f"distill.teacher {teacher.run} predicts the labels "
                                f"{list(teacher.task.info.label_names)}; this task's are {list(info.label_names)}")
            task.teacher, task.frozen = teacher, teacher.frozen()
        for name in task.configured_splits():
            task.split(name)
        return task

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        train = config.train
        for key in ("batch_size", "eval_batch_size", "epochs", "log_every", "grad_accum_steps", "keep_checkpoints"):
            if train[key] <= 0:
                raise UserError(f"train.{key} must be positive, got {train[key]}")
        if not 0.0 <= train.warmup_frac <= 1.0:
            raise UserError(f"train.warmup_frac={train.warmup_frac} must be in [0, 1]")
        for key in ("min_steps", "max_evals"):
            if int(train.get(key, 0)) < 0:
                raise UserError(f"train.{key} must be 0 (off) or positive, got {train[key]}")
        for key in ("batch_size", "eval_batch_size"):
            if train[key] % jax.process_count():
                raise UserError(f"train.{key}={train[key]} does not split over {jax.process_count()} processes")
        if train.batch_size % train.grad_accum_steps:
            raise UserError(f"train.batch_size={train.batch_size} does not split into "
                             f"train.grad_accum_steps={train.grad_accum_steps} microbatches")

    @classmethod
    def check_data(cls, config: ml_collections.ConfigDict) -> None:
        """Reads what the training data can be checked by without a tokenizer, before any starting point is
        fetched: bad data is named without an 80 MB model download first."""

    @classmethod
    def starting_point(cls, config: ml_collections.ConfigDict) -> StartingPoint:
        return starting_point.resolve(config)

    @classmethod
    def check_start(cls, config: ml_collections.ConfigDict, start: StartingPoint) -> None:
        """Refuses a starting point the task cannot use, before any data is read."""

    @classmethod
    def info_for(cls, config: ml_collections.ConfigDict, start: StartingPoint, labels: tuple[str, ...]) -> ModelInfo:
        dropout = float(config.task.get("classifier_dropout", -1.0))
        return ModelInfo(start.model_cfg, config.task.kind, labels, start.tokenizer.path,
                         None if dropout < 0 else dropout)

    def label_names(self, train: Split) -> tuple[str, ...]:
        return ()

    def describe(self) -> str:
        n = len(self.splits["train"]) if "train" in self.splits else 0
        start = f" from {self.start.source} ({self.start.kind})" if self.start else ""
        return f"fine-tuning {self.name}{start} on {n} examples"

    # ------------------------------------------------------------ pure functions
    def loss_sums(self, params: Any, batch: Batch, *, deterministic: bool, rngs: dict | None = None,
                  frozen: Any = None) -> dict[str, jax.Array]:
        outputs = self.forward(params, batch, deterministic, rngs)
        sums = self.sums(outputs, batch)
        if frozen is None:
            return sums
        teacher = self.teacher
        teacher_outputs = jax.lax.stop_gradient(teacher.task.forward(frozen, batch, True))
        w_B = batch["example_weights"]
        distill_sum = jnp.sum(self.distill_terms(outputs, teacher_outputs, teacher.temperature) * w_B)
        # the mean over every row; rows the teacher alone labels (distill.unlabeled) add no label term
        return {**sums, "loss_sum": (1.0 - teacher.alpha) * sums["loss_sum"] + teacher.alpha * distill_sum,
                "weight_sum": jnp.sum(w_B), "labeled_sum": sums["weight_sum"]}

    def distill_terms(self, outputs: Any, teacher_outputs: Any, temperature: float) -> jax.Array:
        """The distillation term per example (tasks/distillation.py): B. Tasks without one refuse a teacher."""
        raise NotImplementedError

    def predict(self, params: Any, batch: Batch) -> dict[str, jax.Array]:
        """The outputs, and the loss sums when the batch has targets: one forward pass for both."""
        outputs = self.forward(params, batch, True)
        sums = self.sums(outputs, batch) if all(k in batch for k in self.target_keys) else {}
        return {**sums, **self.named_outputs(outputs, batch)}

    # ------------------------------------------------------------ the run
    def prepare(self, workdir: str) -> None:
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        run = RunDir(workdir)
        tokenizer_file = run.copy_tokenizer(self.tokenizer)
        run.write_config(json.loads(self.config.to_json_best_effort()), replace=True)
        run.write_model_info(dataclasses.replace(self.info, tokenizer_path=tokenizer_file))

    def initial_params(self, params: Any, param_shardings: Any) -> Any:
        if self.start is None or self.start.params is None:
            return params
        return starting_point.graft(params, self.start.params, param_shardings)

    def results(self) -> dict[str, Any]:
        out: dict[str, Any] = {"train_examples": len(self.splits["train"]) if "train" in self.splits else 0}
        if self.start is not None:
            out["starting_point"] = {"kind": self.start.kind, "source": self.start.source}
        if self.pruning is not None:
            out["head_pruning"] = self.pruning
        return out

    def split(self, name: str) -> Split:
        if name not in self.splits:
            self.splits[name] = self.load_split(name)
        return self.splits[name]

    def eval_splits(self) -> tuple[str, ...]:
        return tuple(s for s in self.configured_splits() if s != "train")

    def batch(self, arrays: dict[str, np.ndarray], rows: np.ndarray) -> Batch:
        """The rows of a split as one batch; rows < 0 are padding (weight 0) so that every batch is full."""
        take = np.maximum(rows, 0)
        batch = {k: arrays[k][take] for k in (*self.input_keys, *self.target_keys) if k in arrays}
        batch["example_weights"] = (rows >= 0).astype(np.float32)
        return batch

    def train_rows(self, step: int) -> np.ndarray:
        """The global batch of train step `step` (0-based): a function of (seed, step) only."""
        return train_rows(int(self.config.seed), step, self.schedule.steps_per_epoch,
                          int(self.config.train.batch_size), len(self.splits["train"]))

    def train_batches(self, start_step: int, position: dict[str, Any]) -> Iterator[Batch]:
        arrays = self.splits["train"].arrays
        for step in itertools.count(start_step):
            yield self.batch(arrays, self.train_rows(step))

    def count(self, batch: Batch) -> int:
        return int(np.count_nonzero(batch["example_weights"]))

    def outputs(self, params: Any, arrays: dict[str, np.ndarray], steps: Steps
                ) -> tuple[dict[str, np.ndarray], float, float]:
        """All rows through the predict step in padded batches: outputs of the real rows, and the loss and weight
        sums (0 when `arrays` holds no targets)."""
        out_lists: dict[str, list[np.ndarray]] = {}
        loss_sum = weight_sum = 0.0
        for rows in eval_batches(len(next(iter(arrays.values()))), int(self.config.train.eval_batch_size)):
            out = jax.device_get(steps.predict(params, steps.to_global(self.batch(arrays, rows))))
            loss_sum += float(out.pop("loss_sum", 0.0))
            weight_sum += float(out.pop("weight_sum", 0.0))
            out.pop("correct_sum", None)
            for k, v in out.items():
                out_lists.setdefault(k, []).append(np.asarray(v)[rows >= 0])
        return {k: np.concatenate(v) for k, v in out_lists.items()}, loss_sum, weight_sum

    def evaluate(self, params: Any, split: str, steps: Steps) -> dict[str, Any]:
        data = self.split(split)
        outputs, loss_sum, weight_sum = self.outputs(params, data.arrays, steps)
        metrics = self.score(data, outputs)
        if weight_sum:
            metrics["loss"] = loss_sum / weight_sum
        return metrics


def check_workdir(config: Any, workdir: str) -> None:
    """A work directory holds one fine-tune: resuming with another task, init or shape is refused."""
    resolved = json.loads(config.to_json_best_effort())
    saved = RunDir(workdir).saved_config(if_trained=True)
    if saved is None:
        return
    if "task" not in saved:
        raise UserError(f"{workdir} holds a pretraining run; give the fine-tune a new --workdir "
                         f"(and --init {workdir} to start from it)")
    for key in ("init", "from_scratch", "init_layers", "tokenizer", "task", "model_overrides", "seed", "train",
                "distill", "prune"):
        was, now = saved.get(key, _ADDED_LATER.get(key)), resolved.get(key)
        if key == "init_layers":  # JSON lists; an older run without the key kept every layer
            was, now = [int(i) for i in was], [int(i) for i in now or []]
        if isinstance(was, dict) and isinstance(now, dict):  # keys added since the run started hold their defaults
            now = {k: v for k, v in now.items() if k in was}
        if key == "train":  # these change how a run reports, not what it computes
            was, now = ({k: v for k, v in d.items() if k not in _HARMLESS} for d in (was or {}, now or {}))
        if was != now:
            raise UserError(f"{workdir} holds a fine-tune with another {key} (saved {was!r}, now {now!r}); "
                             "use a new --workdir")


def training_epochs(epochs: int, steps_per_epoch: int, min_steps: int) -> int:
    """train.epochs, raised until the run takes at least train.min_steps steps: a 100-example subset gets as many
    updates as the few-sample fine-tuning literature asks for (Mosbach et al., 2021; Zhang et al., 2021)."""
    return max(epochs, math.ceil(min_steps / steps_per_epoch)) if min_steps > 0 else epochs


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_rows(seed: int, step: int, steps_per_epoch: int, batch_size: int, n: int) -> np.ndarray:
    """The global batch of train step `step` (0-based): a function of (seed, step) only."""
    epoch, i = divmod(step, steps_per_epoch)
    return epoch_order(seed, epoch, n)[i * batch_size : (i + 1) * batch_size]


def eval_batches(n: int, batch_size: int) -> Iterator[np.ndarray]:
    """Row indices of consecutive eval batches; the last is padded with -1."""
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n))
        yield np.concatenate([rows, -np.ones(batch_size - len(rows), rows.dtype)])
