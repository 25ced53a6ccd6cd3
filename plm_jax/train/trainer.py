"""The one training loop, for every task: pretraining objectives and fine-tunes alike (train/task.py).

It builds the setup (setup.py), starts or resumes the state, and steps: it logs throughput with the compile
time and the input pipeline's waits accounted for, evaluates at the task's schedule, keeps the best parameters,
saves the state with the data position, profiles the steps asked for, and leaves cleanly on SIGTERM/SIGINT.
Resuming is exact: the state and the data position are saved together, data and masks are functions of
(seed, position) and dropout of (seed, step), so a killed and resumed run retraces an uninterrupted one bit for bit.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from plm_jax.errors import UserError
from plm_jax.train import state as state_lib
from plm_jax.train.checkpoint import Checkpointer
from plm_jax.train.lock import run_lock
from plm_jax.train.metrics_log import JSONL_NAME, MetricWriter, read_jsonl
from plm_jax.train.rundir import RunDir
from plm_jax.train.setup import TrainingSetup, build
from plm_jax.train.stop import StopFlag
from plm_jax.train.task import Task

log = logging.getLogger("plm_jax")


def train(task: Task, workdir: str) -> dict[str, Any]:
    """Runs (or resumes) `task` in `workdir`, holding its lock (train/lock.py); returns what results.json holds."""
    with run_lock(workdir):
        return _train(task, workdir)


def _train(task: Task, workdir: str) -> dict[str, Any]:
    start_time = time.perf_counter()
    run = RunDir(workdir)
    task.prepare(workdir)
    setup = build(task)
    train_cfg, schedule = task.config.train, task.schedule
    profile = _profile_steps(train_cfg)
    ckpt = run.checkpointer(keep=int(train_cfg.keep_checkpoints), use_async=bool(train_cfg.async_checkpoints))
    best_ckpt = run.best_checkpointer() if task.keeps_best else None
    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)  # one host writes the logs
    restored = ckpt.restore_latest(setup.abstract_state)  # the newest intact checkpoint; damaged ones moved aside
    best: dict[str, Any] = {}
    position: dict[str, Any] = {}
    if restored is None:
        writer.truncate_after(-1)  # the records of an earlier start that saved no step are not this run's
        state = setup.init_state(int(task.config.seed))
        log.info("%s: %s parameters, %d steps, mesh %s", task.describe(), f"{state_lib.count_params(state.params):,}",
                 schedule.total_steps, dict(setup.mesh.shape))
    else:
        state, position, latest = restored
        if not _all_finite(state.params):
            raise NonFiniteError(f"{ckpt.directory / str(latest)} holds non-finite parameters (a run that diverged "
                                 "before plm_jax guarded against it): delete that step's directory to resume from "
                                 "the one before it")
        best = position.get("best") or {}
        writer.truncate_after(latest)
        log.info("resumed from %s at step %d", ckpt.directory / str(latest), latest)

    steps = setup.steps()
    has_eval = "eval" in task.eval_splits()

    def evaluate(step: int) -> dict[str, Any]:
        metrics = task.evaluate(state.params, "eval", steps)
        if schedule.epoch(step) is not None:
            metrics["epoch"] = schedule.epoch(step)
        writer.write(step, "eval", _public(metrics))
        return metrics

    start_step = step = int(jax.device_get(state.step))
    if start_step == 0 and schedule.eval_at_start and has_eval:
        log.info("eval at step 0: %s", _fmt(evaluate(0)))

    to_global = setup.to_global_local if task.host_local_batches else setup.to_global
    batches = task.train_batches(start_step, position)
    stop = StopFlag()
    pending: list[dict[str, jax.Array]] = []
    units_since, time_since, data_wait = 0, time.perf_counter(), 0.0
    bar = tqdm(total=schedule.total_steps, initial=start_step, desc=task.name, unit="step", dynamic_ncols=True,
               disable=jax.process_index() != 0)
    tracing = False
    try:
        while step < schedule.total_steps:
            # one process: every step; several: at log steps, where the hosts wait for each other anyway
            if (jax.process_count() == 1 or step == start_step or step % schedule.log_every == 0) and stop.agreed():
                break
            if profile and step + 1 == profile[0]:
                jax.profiler.start_trace(os.path.join(workdir, "profile"))
                tracing = True
            wait_start = time.perf_counter()
            host_batch = next(batches)  # the device works on the previous step meanwhile (async dispatch)
            data_wait += time.perf_counter() - wait_start
            units_since += task.count(host_batch)
            state, step_metrics = setup.train_step(state, to_global(host_batch), *setup.frozen_args)
            pending.append(step_metrics)
            step += 1
            bar.update(1)
            if tracing and step == profile[1]:
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
                tracing = False
                log.info("profile of steps %d-%d written to %s", *profile, os.path.join(workdir, "profile"))
            if step == start_step + 1:  # the first step includes compilation: keep it out of the throughput
                jax.block_until_ready(step_metrics)
                units_since, time_since, data_wait = 0, time.perf_counter(), 0.0
            end_of_period = step % schedule.eval_every == 0 or step == schedule.total_steps
            if step % schedule.log_every == 0 or end_of_period:
                fetched = jax.device_get(pending)  # waits for the dispatched steps, so the clock below is honest
                _check_finite(fetched, step - len(fetched) + 1, ckpt, train_cfg)
                ckpt.check()
                now = time.perf_counter()
                means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                if units_since:
                    means[f"{task.throughput_unit}_per_sec"] = units_since / (now - time_since)
                    means["data_wait_frac"] = data_wait / (now - time_since)  # input pipeline stalls
                writer.write(step, "train", means)
                bar.set_postfix(loss=f"{means['loss']:.4f}")
                pending, units_since, time_since, data_wait = [], 0, now, 0.0
            saving = ((schedule.checkpoint_every and step % schedule.checkpoint_every == 0)
                      or (end_of_period and schedule.checkpoint_at_eval) or step == schedule.total_steps)
            if end_of_period or saving:  # nothing non-finite is evaluated, kept as best, or saved
                _check_finite([jax.device_get(step_metrics)], step, ckpt, train_cfg)
            if end_of_period and has_eval:
                metrics = evaluate(step)
                bar.write(f"eval at step {step}: {_fmt(metrics)}")
                if best_ckpt is not None:
                    best = keep_best(best, step, metrics, task.main_metric, best_ckpt, state.params)
                writer.plot(task.plot_keys, task.plot_title)
            elif end_of_period and best_ckpt is not None and best_ckpt.latest_step() != step:
                # no eval split: the last evaluation point is the best
                best = keep_best(best, step, {"epoch": schedule.epoch(step)}, "", best_ckpt, state.params)
            if saving:
                ckpt.save(step, state, {"step": step, "best": best, **task.position(step)})
        if stop.signal is not None and step < schedule.total_steps:
            if step > start_step:
                _check_finite([jax.device_get(step_metrics)], step, ckpt, train_cfg)
            log.warning("signal %d: saving a checkpoint at step %d and exiting", stop.signal, step)
            ckpt.save(step, state, {"step": step, "best": best, **task.position(step)}, force=True)
    finally:
        if tracing:
            jax.profiler.stop_trace()
        bar.close()
        stop.restore()
        for closable in (ckpt, best_ckpt, writer):
            if closable is not None:
                closable.close()

    results = {"task": task.name, "main_metric": task.main_metric, "steps": step,
               "total_steps": schedule.total_steps, **task.results()}
    if best_ckpt is not None:
        results["best"] = best
    evals = {r["step"]: r for r in read_jsonl(os.path.join(workdir, JSONL_NAME)) if r["split"] == "eval"}
    if not task.keeps_best:
        results.update(eval_at_start=evals.get(0), eval_at_end=evals.get(step))
    if step < schedule.total_steps:
        results["interrupted_at"] = step
    else:
        results.update(_final_evaluations(task, setup, run, best))
        results["wall_s"] = round(time.perf_counter() - start_time, 1)
    results["curves"] = writer.plot(task.plot_keys, task.plot_title)
    run.write_results(results)
    return results


def _final_evaluations(task: Task, setup: TrainingSetup, run: RunDir, best: dict[str, Any]) -> dict[str, Any]:
    """The test split with the best parameters; the best evaluation's metrics stand for the eval split."""
    out: dict[str, Any] = {}
    if best.get("metrics"):
        out["eval"] = best["metrics"]
    if "test" in task.eval_splits():
        params, _ = run.params(setup.abstract_state.params)
        out["test"] = task.evaluate(params, "test", setup.steps())
    return out


class NonFiniteError(UserError):
    """The loss or gradient norm stopped being finite: the run stops before anything non-finite is saved."""


def _all_finite(params: Any) -> bool:
    leaves = [x for x in jax.tree_util.tree_leaves(params) if np.issubdtype(x.dtype, np.floating)]
    return bool(jax.device_get(jax.jit(lambda xs: jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in xs])))(
        leaves))) if leaves else True


def _check_finite(fetched: list[dict[str, Any]], first_step: int, ckpt: Checkpointer, train_cfg: Any) -> None:
    """Stops the run, naming the step and the last checkpoint (which is intact), at a non-finite loss or
    gradient norm among the fetched steps' metrics."""
    for offset, metrics in enumerate(fetched):
        bad = {k: float(metrics[k]) for k in ("loss", "grad_norm") if k in metrics
               and not math.isfinite(float(metrics[k]))}
        if bad:
            last = ckpt.latest_step()
            found = ", ".join(f"{k} is {v}" for k, v in bad.items())
            if last is None:
                where = "no checkpoint was saved: rerun with a lower train.lr (or more warmup) in the same --workdir"
            else:
                where = (f"the last checkpoint, step {last} in {ckpt.directory}, is intact; a resume keeps the "
                         "learning rate, so to go on with a lower train.lr, start a new --workdir")
            raise NonFiniteError(f"{found} at step {first_step + offset} (train.lr={train_cfg.lr}); stopped before "
                                 f"saving it: {where}")


def keep_best(best: dict[str, Any], step: int, metrics: dict[str, Any], metric: str, best_ckpt: Checkpointer,
              params: Any) -> dict[str, Any]:
    """The best evaluation so far; its parameters are saved when `metrics` beat it (metric "": always). A
    non-finite metric never becomes the best."""
    if metric and not math.isfinite(float(metrics.get(metric, math.nan))):
        log.warning("eval at step %d: %s is %s; not kept as the best", step, metric, metrics.get(metric))
        return best
    if metric and best and metrics[metric] <= best["metrics"][metric]:
        return best
    best = {"step": step, "epoch": metrics.get("epoch"), "metric": metric, "metrics": metrics if metric else {}}
    best_ckpt.save(step, params, best, force=True)
    return best


def _profile_steps(train_cfg: Any) -> tuple[int, ...]:
    profile = tuple(train_cfg.get("profile_steps", ()) or ())
    if profile and (len(profile) != 2 or not 0 < profile[0] <= profile[1]):
        raise UserError(f"train.profile_steps={profile}: expected (first, last) with 0 < first <= last")
    return profile


def _public(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


def _fmt(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                     if not k.startswith("_") and not k.endswith("_total") and k not in ("epoch", "tokens"))
