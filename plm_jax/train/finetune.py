"""The fine-tuning loop: start from a checkpoint, train for some epochs, evaluate after each, keep the best.

The work directory is self-contained: `config.json`, `model.json` (the model's shape, the task's labels),
`tokenizer/`, `checkpoints/` (latest train state, for resuming), `best/` (the best parameters by the task's main
metric), `metrics.jsonl`, `tensorboard/`, `curves.png` and `results.json`. Re-running the command resumes; the
batches and dropout are functions of (seed, step), so a resumed run retraces an uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from plm_jax.files import write_atomic
from plm_jax.models.config import TransformerConfig
from plm_jax.models.heads import check_finetune_head, finetune_dummy_inputs, finetune_model
from plm_jax.parallel.sharding import batch_sharding, from_whole_batch, make_mesh, rules_from_config
from plm_jax.tasks.text_tokenizer import TextTokenizer
from plm_jax.train import finetune_data as fdata
from plm_jax.train import starting_point
from plm_jax.train import state as state_lib
from plm_jax.train.checkpoint import Checkpointer
from plm_jax.train.finetune_step import TASK_KINDS, jit_steps
from plm_jax.train.metrics_log import MetricWriter
from plm_jax.train.optimizer import make_optimizer
from plm_jax.train.pretrain import StopFlag

log = logging.getLogger("plm_jax")
MODEL_FILE = "model.json"
_HARMLESS = ("log_every", "eval_batch_size", "async_checkpoints", "keep_checkpoints", "checkpoint_every")


# ---------------------------------------------------------------- the model a work directory holds
@dataclasses.dataclass
class FinetunedModel:
    """Everything needed to rebuild the fine-tuned model: written to model.json at the start of a run."""

    model_cfg: TransformerConfig
    kind: str
    label_names: tuple[str, ...]
    tokenizer_path: str
    classifier_dropout: float | None = None

    def module(self) -> nn.Module:
        if self.kind == "translation":
            from plm_jax.models.encoder_decoder import EncoderDecoder

            return EncoderDecoder(self.model_cfg)
        num_labels = 1 if self.kind == "regression" else len(self.label_names)
        return finetune_model(self.model_cfg, self.kind, num_labels, self.classifier_dropout)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model_cfg.to_dict(), "kind": self.kind, "label_names": list(self.label_names),
                "tokenizer": self.tokenizer_path, "classifier_dropout": self.classifier_dropout}

    @classmethod
    def load(cls, workdir: str) -> FinetunedModel:
        path = os.path.join(workdir, MODEL_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: {workdir} is not a fine-tuning work directory")
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return cls(TransformerConfig.from_config(d["model"]), d["kind"], tuple(d["label_names"]),
                   os.path.join(workdir, d["tokenizer"]), d.get("classifier_dropout"))


def _copy_tokenizer(tokenizer: TextTokenizer, workdir: str) -> str:
    """Copies the tokenizer file(s) into workdir/tokenizer/; returns the path relative to workdir."""
    folder = os.path.join(workdir, "tokenizer")
    os.makedirs(folder, exist_ok=True)
    names = [os.path.basename(tokenizer.path)]
    src_dir = os.path.dirname(os.path.abspath(tokenizer.path))
    if tokenizer.kind == "wordpiece":  # keep the companions a Hugging Face export needs
        names += [n for n in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
                  if n not in names and os.path.isfile(os.path.join(src_dir, n))]
    for name in names:
        dst = os.path.join(folder, name)
        if not os.path.exists(dst):
            shutil.copyfile(os.path.join(src_dir, name), dst)
    return os.path.join("tokenizer", names[0])


# ---------------------------------------------------------------- checks
def validate(config: Any) -> None:
    task, train = config.task, config.train
    if task.kind not in TASK_KINDS:
        raise ValueError(f"task.kind={task.kind!r}; expected one of {TASK_KINDS}")
    for key in ("batch_size", "eval_batch_size", "epochs", "log_every", "grad_accum_steps", "keep_checkpoints"):
        if train[key] <= 0:
            raise ValueError(f"train.{key} must be positive, got {train[key]}")
    if not 0.0 <= train.warmup_frac <= 1.0:
        raise ValueError(f"train.warmup_frac={train.warmup_frac} must be in [0, 1]")
    for key in ("batch_size", "eval_batch_size"):
        if train[key] % jax.process_count():
            raise ValueError(f"train.{key}={train[key]} does not split over {jax.process_count()} processes")
    if train.batch_size % train.grad_accum_steps:
        raise ValueError(f"train.batch_size={train.batch_size} does not split into "
                         f"train.grad_accum_steps={train.grad_accum_steps} microbatches")


def check_workdir(config: Any, workdir: str) -> dict[str, Any]:
    """A work directory holds one fine-tune: resuming with another task, init or shape is refused."""
    resolved = json.loads(config.to_json_best_effort())
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        for key in ("init", "from_scratch", "tokenizer", "task", "model_overrides", "seed", "train"):
            was, now = saved.get(key), resolved.get(key)
            if key == "train":  # these change how a run reports, not what it computes
                was, now = ({k: v for k, v in d.items() if k not in _HARMLESS} for d in (was or {}, now or {}))
            if was != now:
                raise ValueError(f"{workdir} holds a fine-tune with another {key} (saved {was!r}, now {now!r}); "
                                 "use a new --workdir")
    return resolved


# ---------------------------------------------------------------- the loop
def finetune(config: Any, workdir: str) -> dict[str, Any]:
    validate(config)
    resolved = check_workdir(config, workdir)
    start_time = time.perf_counter()
    task, train_cfg = config.task, config.train
    sp = starting_point.resolve(config)
    check_finetune_head(sp.model_cfg.architecture, task.kind)  # before any data is read or file written
    splits = {s: fdata.load_task_split(task, sp.tokenizer, s) for s in ("train", "eval")
              if s == "train" or task.eval_split or task.eval_file}
    if task.test_split or task.test_file:
        splits["test"] = fdata.load_task_split(task, sp.tokenizer, "test")
    if task.seq_len > sp.model_cfg.max_len:
        raise ValueError(f"task.seq_len={task.seq_len} exceeds the model's max_len={sp.model_cfg.max_len}")
    n_train, batch_size = len(splits["train"]), int(train_cfg.batch_size)
    if n_train < batch_size:
        raise ValueError(f"the train split holds {n_train} examples, fewer than train.batch_size={batch_size}")

    os.makedirs(workdir, exist_ok=True)
    dropout = None if task.classifier_dropout < 0 else float(task.classifier_dropout)
    tok_rel = _copy_tokenizer(sp.tokenizer, workdir) if jax.process_index() == 0 else ""
    fm = FinetunedModel(sp.model_cfg, task.kind, splits["train"].label_names, tok_rel, dropout)
    if jax.process_index() == 0:
        write_atomic(os.path.join(workdir, "config.json"), json.dumps(resolved, indent=2))
        write_atomic(os.path.join(workdir, MODEL_FILE), json.dumps(fm.to_json(), indent=2))

    # ------------------------------------------------ setup: model, optimizer, mesh, steps
    steps_per_epoch = n_train // batch_size  # the remainder of each epoch's permutation is left out
    total_steps = steps_per_epoch * int(train_cfg.epochs)
    opt_cfg = ml_collections.ConfigDict({**train_cfg.to_dict(), "steps": total_steps,
                                         "warmup_steps": round(float(train_cfg.warmup_frac) * total_steps)})
    tx, schedule = make_optimizer(opt_cfg, layer_decay=float(train_cfg.layer_decay),
                                  num_layers=sp.model_cfg.num_layers)
    model = fm.module()
    mesh = make_mesh(config.mesh)
    rules = rules_from_config(config.logical_axis_rules)
    init_inputs = finetune_dummy_inputs(sp.model_cfg, 1, task.seq_len)
    abstract, shardings = state_lib.state_shardings(model, tx, init_inputs, mesh, rules)
    data_sharding = batch_sharding(mesh, rules)
    dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    train_step, predict_step = jit_steps(model, task.kind, tx, schedule, shardings, data_sharding, dropout_key,
                                         accum_steps=int(train_cfg.grad_accum_steps), rules=rules)
    pi, pc = jax.process_index(), jax.process_count()

    # ------------------------------------------------ state: resume, or start from the pretrained weights
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=train_cfg.keep_checkpoints,
                        use_async=train_cfg.async_checkpoints)
    best_ckpt = Checkpointer(os.path.join(workdir, "best"), keep=1, use_async=False)
    writer = MetricWriter(workdir, enabled=pi == 0)
    latest = ckpt.latest_step()
    best: dict[str, Any] = {}
    if latest is None:
        state = state_lib.init_state(model, tx, init_inputs, shardings, jax.random.key(config.seed))
        if sp.params is not None:
            state = state.replace(params=starting_point.graft(state.params, sp.params, shardings.params))
        log.info("fine-tuning %s (%s) on %d %s examples: %d epochs x %d steps, %s parameters", sp.source, sp.kind,
                 n_train, task.kind, train_cfg.epochs, steps_per_epoch,
                 f"{state_lib.count_params(state.params):,}")
    else:
        state, position = ckpt.restore(latest, abstract)
        best = position.get("best") or {}
        writer.truncate_after(latest)
        log.info("resumed from %s at step %d", ckpt.directory / str(latest), latest)

    main_metric = task.main_metric or fdata.MAIN_METRIC[task.kind]

    def evaluate(params: Any, split: fdata.TaskSplit) -> tuple[dict[str, float], Any]:
        return evaluate_split(predict_step, params, split, task, int(train_cfg.eval_batch_size), data_sharding)

    step = int(jax.device_get(state.step))
    if step == 0 and train_cfg.eval_at_start and "eval" in splits:
        metrics, _ = evaluate(state.params, splits["eval"])
        writer.write(0, "eval", metrics)
        log.info("eval at start: %s", _fmt(metrics))

    stop = StopFlag()
    pending: list[dict[str, jax.Array]] = []
    bar = tqdm(total=total_steps, initial=step, desc="finetune", unit="step", dynamic_ncols=True, disable=pi != 0)
    examples_since, time_since = 0, time.perf_counter()
    try:
        while step < total_steps:
            if (pc == 1 or step % train_cfg.log_every == 0) and stop.agreed():
                break
            rows = fdata.train_rows(config.seed, step, steps_per_epoch, batch_size, n_train)
            batch = fdata.model_inputs(splits["train"].arrays, rows, task.kind)
            state, metrics = train_step(state, to_global(batch, data_sharding))
            pending.append(metrics)
            step += 1
            examples_since += batch_size
            bar.update(1)
            if step % train_cfg.log_every == 0 or step % steps_per_epoch == 0:
                fetched = jax.device_get(pending)
                now = time.perf_counter()
                means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                means["examples_per_sec"] = examples_since / (now - time_since)
                writer.write(step, "train", means)
                bar.set_postfix(loss=f"{means['loss']:.4f}")
                pending, examples_since, time_since = [], 0, now
            end_of_epoch = step % steps_per_epoch == 0
            if end_of_epoch and "eval" in splits:
                metrics, _ = evaluate(state.params, splits["eval"])
                metrics["epoch"] = step // steps_per_epoch
                writer.write(step, "eval", metrics)
                bar.write(f"epoch {metrics['epoch']:.0f} (step {step}) eval: {_fmt(metrics)}")
                best = keep_best(best, step, metrics, main_metric, best_ckpt, state.params)
                writer.plot_finetune(main_metric)
            elif end_of_epoch and not best_ckpt.latest_step() == step:  # no eval split: the last epoch is best
                best = keep_best(best, step, {"epoch": step // steps_per_epoch}, "", best_ckpt, state.params)
            save_position(ckpt, state, step, best, end_of_epoch, train_cfg.checkpoint_every)
        save_on_signal(stop, ckpt, state, step, total_steps, best)
    finally:
        close_all(bar, stop, ckpt, best_ckpt, writer)

    results: dict[str, Any] = {"starting_point": {"kind": sp.kind, "source": sp.source}, "task": task.kind,
                               "main_metric": main_metric, "steps": step, "total_steps": total_steps,
                               "train_examples": n_train, "best": best}
    if step < total_steps:
        results["interrupted_at"] = step
        return results
    if "test" in splits:
        params = restore_best(workdir, abstract.params)
        results["test"], _ = evaluate(params, splits["test"])
    results["wall_s"] = round(time.perf_counter() - start_time, 1)
    results["curves"] = writer.plot_finetune(main_metric)
    if pi == 0:
        write_atomic(os.path.join(workdir, "results.json"), json.dumps(results, indent=2))
    return results


def keep_best(best: dict[str, Any], step: int, metrics: dict[str, Any], metric: str, best_ckpt: Checkpointer,
              params: Any) -> dict[str, Any]:
    """The best epoch so far; its parameters are saved when `metrics` beat it (metric "": always, no eval)."""
    if metric and best and metrics[metric] <= best["metrics"][metric]:
        return best
    best = {"step": step, "epoch": int(metrics["epoch"]), "metric": metric, "metrics": metrics if metric else {}}
    best_ckpt.save(step, params, best, force=True)
    return best


def save_position(ckpt: Checkpointer, state: Any, step: int, best: dict[str, Any], end_of_epoch: bool,
                  every: int) -> None:
    """The train state for resuming, at each epoch's end and every `every` steps (0 = epoch ends only)."""
    if end_of_epoch or (every and step % every == 0):
        ckpt.save(step, state, {"step": step, "best": best})


def save_on_signal(stop: StopFlag, ckpt: Checkpointer, state: Any, step: int, total_steps: int,
                   best: dict[str, Any]) -> None:
    if stop.signal is not None and step < total_steps:
        log.warning("signal %d: saving a checkpoint at step %d and exiting", stop.signal, step)
        ckpt.save(step, state, {"step": step, "best": best}, force=True)


def close_all(bar: Any, stop: StopFlag, *closables: Any) -> None:
    bar.close()
    stop.restore()
    for c in closables:
        c.close()


def to_global(batch: dict[str, np.ndarray], data_sharding: Any) -> dict[str, jax.Array]:
    """Every host builds the same global batch; each feeds only its own share of the rows."""
    return {k: from_whole_batch(v, data_sharding) for k, v in batch.items()}


def run_batches(predict_step: Any, params: Any, arrays: dict[str, np.ndarray], kind: str, batch_size: int,
                data_sharding: Any) -> tuple[dict[str, np.ndarray], float, float]:
    """All rows of `arrays` through the model in padded batches: outputs of the real rows, loss and weight sums
    (the sums are 0 when `arrays` holds no targets)."""
    outputs: dict[str, list[np.ndarray]] = {}
    loss_sum = weight_sum = 0.0
    for rows in fdata.eval_batches(arrays["input_ids"].shape[0], batch_size):
        batch = to_global(fdata.model_inputs(arrays, rows, kind), data_sharding)
        out = jax.device_get(predict_step(params, batch))
        for k in ("logits", "start_logits", "end_logits"):
            if k in out:
                outputs.setdefault(k, []).append(np.asarray(out[k])[rows >= 0])
        loss_sum += float(out.get("loss_sum", 0.0))
        weight_sum += float(out.get("weight_sum", 0.0))
    return {k: np.concatenate(v) for k, v in outputs.items()}, loss_sum, weight_sum


def evaluate_split(predict_step: Any, params: Any, split: fdata.TaskSplit, task: Any, batch_size: int,
                   data_sharding: Any) -> tuple[dict[str, float], Any]:
    """Runs the whole split through the model; the task's metrics and predictions."""
    outputs, loss_sum, weight_sum = run_batches(predict_step, params, split.arrays, task.kind, batch_size,
                                                data_sharding)
    metrics, preds = fdata.task_metrics(task, split, outputs)
    if weight_sum:
        metrics["loss"] = loss_sum / weight_sum
    return metrics, preds


def restore_best(workdir: str, abstract_params: Any) -> Any:
    best_ckpt = Checkpointer(os.path.join(workdir, "best"), keep=1, use_async=False)
    try:
        step = best_ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(f"no best checkpoint in {workdir}/best: the fine-tune has not finished an epoch")
        params, _ = best_ckpt.restore(step, abstract_params)
        return params
    finally:
        best_ckpt.close()


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if not k.endswith("_total") and k != "epoch")
