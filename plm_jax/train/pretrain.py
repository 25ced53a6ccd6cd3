"""The pretraining loop (masked LM, causal LM or span corruption): setup, resume, train, evaluate, checkpoint, log.

Resuming is exact: the state and the data position (rows consumed) are saved together; masks are a function of
(seed, row index) and dropout of (seed, step), so a killed and resumed run retraces an uninterrupted one bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from plm_jax.data import masking, pipeline, sources, span_corruption
from plm_jax.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from plm_jax.models.config import TransformerConfig
from plm_jax.train import state as state_lib
from plm_jax.train.checkpoint import Checkpointer
from plm_jax.train.metrics_log import JSONL_NAME, MetricWriter, read_jsonl
from plm_jax.train.objectives import get_objective, vocab_needed
from plm_jax.train.setup import build
from plm_jax.train.step import eval_metrics

log = logging.getLogger("plm_jax")
CONFIG_NAME = "config.json"


# ---------------------------------------------------------------- setup: work directory, tokenizer, model
def check_config(config: Any, workdir: str) -> dict[str, Any]:
    """The work directory remembers its config; a resume with another model shape is refused up front."""
    path = os.path.join(workdir, CONFIG_NAME)
    resolved = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            saved_config = json.load(f)
        saved = saved_config.get("model", {})
        saved_objective = saved_config.get("objective", "mlm")
        if saved_objective != resolved.get("objective", "mlm"):
            raise ValueError(f"{workdir} holds a run of objective={saved_objective!r}, the config asks for "
                             f"objective={resolved.get('objective')!r}; use a new --workdir")
        defaults = TransformerConfig().to_dict()  # keys added since the run started hold their defaults
        diff = {k: (saved.get(k, defaults.get(k)), v) for k, v in resolved["model"].items()
                if saved.get(k, defaults.get(k)) != v}
        if diff:
            raise ValueError(f"{workdir} holds a run of another model shape (saved vs config: {diff}); "
                             "use a new --workdir")
    return resolved


def write_config(resolved: dict[str, Any], workdir: str) -> None:
    """Written once the run's inputs have been checked, so a failed first start does not pin a bad config."""
    path = os.path.join(workdir, CONFIG_NAME)
    if os.path.exists(path):
        return
    tmp = f"{path}.tmp{os.getpid()}"  # hosts sharing a file system may write at once; the content is the same
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(resolved, f, indent=2)
    os.replace(tmp, path)


def prepare_tokenizer(config: Any, workdir: str) -> Tokenizer:
    """The configured SentencePiece model, or one trained on the training split into the work directory."""
    if config.data.tokenizer:
        tokenizer = load_tokenizer(config.data.tokenizer)
    else:
        path = os.path.join(workdir, "tokenizer.model")

        def train() -> None:
            log.info("training a %d-piece SentencePiece model on the training text -> %s",
                     tokenizer_pieces(config), path)
            docs = sources.iter_documents(config.data, "train", config.data.tokenizer_max_docs)
            train_tokenizer(docs, tokenizer_pieces(config), path, seed=config.seed)

        # Process 0 alone decides whether to train: had every host looked for the file itself, a host that found
        # it already written would skip the barrier the others wait at (a race CI once hit).
        if jax.process_index() == 0 and not os.path.exists(path):
            train()
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("plm_jax: tokenizer ready")
            if not os.path.exists(path):  # no shared file system: each host trains the same model
                train()
        tokenizer = load_tokenizer(path)
    needed = vocab_needed(config.objective, tokenizer.vocab_size, config.data)
    if needed != config.model.vocab_size:
        hint = "" if config.data.tokenizer else f" (trained earlier into {path}: delete it to train a new one)"
        extra = f" + {needed - tokenizer.vocab_size} sentinels" if needed != tokenizer.vocab_size else ""
        raise ValueError(f"tokenizer vocabulary ({tokenizer.vocab_size} pieces{extra}) does not match "
                         f"model.vocab_size={config.model.vocab_size}{hint}")
    return tokenizer


def tokenizer_pieces(config: Any) -> int:
    """SentencePiece vocabulary to train: the model's, less the sentinel ids span corruption appends."""
    return config.model.vocab_size - vocab_needed(config.objective, 0, config.data)


def eval_data_config(data_cfg: Any) -> Any:
    """The held-out batches' data config: `eval_mask_rate` lets runs that train at different mask rates be
    compared on one yardstick (MosaicBERT trains at 0.30 and reports accuracy at 0.15)."""
    rate = float(data_cfg.get("eval_mask_rate", 0.0) or 0.0)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"data.eval_mask_rate must be in (0, 1], or 0 for data.mask_rate; got {rate}")
    if not rate or rate == float(data_cfg.mask_rate):
        return data_cfg
    out = data_cfg.copy_and_resolve_references()
    out.mask_rate = rate
    return out


def validate(config: Any) -> TransformerConfig:
    model_cfg = TransformerConfig.from_config(config.model)
    get_objective(config.objective, model_cfg)
    if config.objective == "mlm":
        masking.validate_mlm_config(config.data)
        masking.validate_mlm_config(eval_data_config(config.data))
    elif config.objective == "span_corruption":
        span_corruption.validate_span_config(config.data)
    if config.data.seq_len > model_cfg.max_len:
        raise ValueError(f"data.seq_len={config.data.seq_len} exceeds model.max_len={model_cfg.max_len}")
    for key in ("steps", "log_every", "eval_every", "checkpoint_every", "eval_batches", "grad_accum_steps"):
        if config.train[key] <= 0:
            raise ValueError(f"train.{key} must be positive, got {config.train[key]}")
    if config.train.batch_size % (config.train.grad_accum_steps * jax.process_count()):
        raise ValueError(f"train.batch_size={config.train.batch_size} does not split into "
                         f"{jax.process_count()} processes x train.grad_accum_steps="
                         f"{config.train.grad_accum_steps} microbatches")
    return model_cfg


class StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint and leave at a step boundary.

    With several processes, each may get the signal at a different step; `agreed` turns the local flags into one
    decision at the same step on every host (a collective), so that all of them save the same step and leave.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signum

    def agreed(self) -> bool:
        if jax.process_count() == 1:
            return self.signal is not None
        flags = multihost_utils.process_allgather(np.int32(self.signal or 0))
        if self.signal is None and flags.max():
            self.signal = int(flags.max())
        return bool(flags.max())

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------- the loop
def pretrain(config: Any, workdir: str) -> dict[str, Any]:
    """Runs (or resumes) pretraining in `workdir`; returns the eval metrics at the start and the end."""
    validate(config)
    if config.data.source != "tfds":
        stats = sources.scan_local_files(config.data)
        log.info("data: %s", stats)
    resolved = check_config(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    tokenizer = prepare_tokenizer(config, workdir)
    write_config(resolved, workdir)

    setup = build(config)
    mesh, data_sharding, abstract = setup.mesh, setup.data_sharding, setup.abstract_state
    train_step, eval_step = setup.train_step, setup.eval_step

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints,
                        use_async=config.train.async_checkpoints)
    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)  # one host writes the logs
    latest = ckpt.latest_step()
    if latest is None:
        state = setup.init_state(config.seed)
        rows_consumed = 0
        log.info("model: %s parameters; mesh %s", f"{state_lib.count_params(state.params):,}", dict(mesh.shape))
    else:
        state, data_position = ckpt.restore(latest, abstract)
        rows_consumed = int(data_position["rows_consumed"])
        writer.truncate_after(latest)
        log.info("resumed from %s at step %d (%d rows consumed)", ckpt.directory / str(latest), latest,
                 rows_consumed)

    global_batch, steps = config.train.batch_size, config.train.steps
    host_batch_args = dict(batch_size=global_batch, seed=config.seed, process_index=jax.process_index(),
                           process_count=jax.process_count())

    def to_global(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.make_array_from_process_local_data(data_sharding, v) for k, v in batch.items()}

    eval_ds = pipeline.pretrain_dataset(config.objective, eval_data_config(config.data), tokenizer, split="eval",
                                        repeat=False, **host_batch_args)
    eval_batches = [to_global(b) for b in eval_ds.take(config.train.eval_batches).as_numpy_iterator()]
    if not eval_batches:
        raise ValueError(f"the eval split holds less than one batch of {global_batch} rows; "
                         "lower train.batch_size or add text")

    def evaluate(step: int) -> dict[str, float]:
        totals: dict[str, float] = {}
        for batch in eval_batches:
            for k, v in jax.device_get(eval_step(state.params, batch)).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        metrics = eval_metrics(totals)
        writer.write(step, "eval", metrics)
        return metrics

    start_step = int(jax.device_get(state.step))
    results: dict[str, Any] = {}
    if start_step == 0:
        log.info("eval at step 0: %s", _fmt(evaluate(0)))

    def data_position(step: int) -> dict[str, int]:
        """Saved beside the state: a resumed run skips exactly the rows this run consumed."""
        return {"rows_consumed": rows_consumed + (step - start_step) * global_batch, "step": step,
                "global_batch": global_batch}

    train_ds = pipeline.pretrain_dataset(config.objective, config.data, tokenizer, split="train", repeat=True,
                                         start_row=rows_consumed, **host_batch_args)
    train_iter = train_ds.as_numpy_iterator()
    stop = StopFlag()
    pending: list[dict[str, jax.Array]] = []
    tokens_since, time_since, data_wait = 0, time.perf_counter(), 0.0
    bar = tqdm(total=steps, initial=start_step, desc="pretrain", unit="step", dynamic_ncols=True,
               disable=jax.process_index() != 0)
    step = start_step
    profile = tuple(config.train.profile_steps)
    if profile and (len(profile) != 2 or not 0 < profile[0] <= profile[1]):
        raise ValueError(f"train.profile_steps={profile}: expected (first, last) with 0 < first <= last")
    tracing = False
    try:
        while step < steps:
            # one process: every step; several: at log steps, where the hosts wait for each other anyway
            check = jax.process_count() == 1 or step == start_step or step % config.train.log_every == 0
            if check and stop.agreed():
                break
            if profile and step + 1 == profile[0]:
                jax.profiler.start_trace(os.path.join(workdir, "profile"))
                tracing = True
            wait_start = time.perf_counter()
            host_batch = next(train_iter)  # the device works on the previous step meanwhile (async dispatch)
            data_wait += time.perf_counter() - wait_start
            tokens_since += int(np.count_nonzero(host_batch[setup.objective.token_key])) * jax.process_count()
            state, metrics = train_step(state, to_global(host_batch))
            pending.append(metrics)
            step += 1
            bar.update(1)
            if tracing and step == profile[1]:
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
                tracing = False
                log.info("profile of steps %d-%d written to %s", *profile, os.path.join(workdir, "profile"))
            if step == start_step + 1:  # the first step includes compilation: keep it out of tokens/s
                jax.block_until_ready(metrics)
                tokens_since, time_since, data_wait = 0, time.perf_counter(), 0.0
            if step % config.train.log_every == 0 or step == steps:
                fetched = jax.device_get(pending)  # waits for the dispatched steps, so the clock below is honest
                now = time.perf_counter()
                means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                if tokens_since:
                    means["tokens_per_sec"] = tokens_since / (now - time_since)
                    means["data_wait_frac"] = data_wait / (now - time_since)  # input pipeline stalls
                writer.write(step, "train", means)
                bar.set_postfix(loss=f"{means['loss']:.3f}", acc=f"{means['accuracy']:.3f}",
                                tok_s=f"{means.get('tokens_per_sec', 0):,.0f}")
                pending, tokens_since, time_since, data_wait = [], 0, now, 0.0
            if step % config.train.eval_every == 0 or step == steps:
                bar.write(f"eval at step {step}: {_fmt(evaluate(step))}")
                writer.plot()
            if step % config.train.checkpoint_every == 0 or step == steps:
                ckpt.save(step, state, data_position(step))
        if stop.signal is not None and step < steps:
            log.warning("signal %d: saving a checkpoint at step %d and exiting", stop.signal, step)
            ckpt.save(step, state, data_position(step), force=True)
            results["interrupted_at"] = step
    finally:
        if tracing:
            jax.profiler.stop_trace()
        bar.close()
        stop.restore()
        ckpt.close()
        writer.close()

    evals = {r["step"]: r for r in _read_eval(workdir)}
    results.update(steps=step, eval_at_start=evals.get(0), eval_at_end=evals.get(step))
    results["curves"] = writer.plot()
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return results


def _read_eval(workdir: str) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(os.path.join(workdir, JSONL_NAME)) if r["split"] == "eval"]


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "tokens")
