"""`launch.py sweep`: runs every stage of a sweep in its own work directory, one process per stage.

Each stage is a plain `launch.py pretrain|finetune` subprocess, so a crash (even an OOM kill) fails that point
only, memory is returned between points, and several stages can run side by side. A stage directory holds
stage.json (its base config and overrides), sweep_stage.json (status, key, command, timings, error, code
version, packages) and log.txt. A rerun skips stages whose key (the hash of the resolved config) is unchanged
and done, resumes interrupted ones (the runs checkpoint), and moves a stage whose config changed aside before
running it again, so that nothing saved is lost.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from importlib import metadata
from typing import Any

from tqdm import tqdm

from plm_jax.errors import UserError
from plm_jax.files import write_atomic
from plm_jax.parallel.distributed import config_cpu_device_count
from plm_jax.sweep.spec import Plan, StagePlan, expand, load_sweep, plan_summary

log = logging.getLogger("plm_jax")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH = os.path.join(REPO, "launch.py")
STAGE_CONFIG = os.path.join(REPO, "plm_jax", "sweep", "stage_config.py")
RECORD = "sweep_stage.json"
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow", "numpy")
CALIBRATION = {"train.steps": 25, "train.log_every": 5, "train.eval_every": 25, "train.checkpoint_every": 25,
               "train.eval_batches": 1}


def code_version() -> dict[str, Any]:
    """The git commit of the code that ran, and whether the working tree differed from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return {"commit": commit or "unknown (not a git checkout)", "dirty": dirty}


def package_versions() -> dict[str, str]:
    names = list(_PACKAGES)
    req = os.path.join(REPO, "requirements.txt")
    if os.path.exists(req):
        with open(req, encoding="utf-8") as f:
            names += [line.split("==")[0].split(">=")[0].strip() for line in f if line.strip()[:1].isalnum()]
    out = {}
    for name in dict.fromkeys(names):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


def read_record(directory: str, name: str = RECORD) -> dict[str, Any]:
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def configs_agree(old: Any, new: Any) -> bool:
    """Whether a stage's recorded config and its config now set every key they share to the same value. A key
    only one side has was added to (or removed from) plm_jax's config since, and holds its default: that alone
    must not rerun a finished sweep. The pretraining a fine-tune starts from is compared on its own stage."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(configs_agree(old[k], new[k]) for k in old.keys() & new.keys()
                   if not (k == "init" and str(old[k]).startswith("pretrain:") and str(new[k]).startswith("pretrain:")))
    return old == new


def _error_of(log_path: str, returncode: int) -> str:
    """The run's one-line error, or the last line of its traceback."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [line.rstrip() for line in f if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if line.startswith("error: ")]
    if errors:
        return errors[-1][len("error: "):]
    if returncode < 0:
        return f"killed by signal {signal.Signals(-returncode).name}"
    return lines[-1] if lines else f"exit status {returncode}, no output"


@dataclasses.dataclass
class _Running:
    stage: StagePlan
    process: subprocess.Popen
    started: float
    slot: int
    calibrating: bool = False


class SweepRunner:
    def __init__(self, plan: Plan, workdir: str, workers: int = 1, devices: str = "", sweep_config: str = ""):
        if workers < 1:
            raise UserError(f"--workers={workers}: need at least one")
        self.plan, self.workdir, self.workers = plan, os.path.abspath(workdir), workers
        self.slot_devices = [d.strip() for d in devices.split(";")] if devices else []
        if self.slot_devices and len(self.slot_devices) != workers:
            raise UserError(f"--worker_devices gives {len(self.slot_devices)} groups for --workers={workers}; "
                             "separate the groups with ';', e.g. '0,1;2,3'")
        self.sweep_config = sweep_config
        self.code, self.packages = code_version(), package_versions()
        self.durations: dict[str, list[float]] = {}
        self.status: dict[str, str] = {}

    def path(self, stage: StagePlan) -> str:
        return os.path.join(self.workdir, stage.directory)

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def _write_record(self, stage: StagePlan, **fields: Any) -> None:
        record = read_record(self.path(stage))
        if record.get("key") != stage.key:
            record = {}
        record.update(kind=stage.kind, task=stage.task, key=stage.key, base=stage.base, resolved=stage.resolved,
                      host=platform.node(), code=self.code, packages=self.packages, **fields)
        write_atomic(os.path.join(self.path(stage), RECORD), json.dumps(record, indent=2))

    def _prepare(self) -> list[StagePlan]:
        """Stages to run now; done ones are counted, changed ones moved aside (with the fine-tunes that started
        from a changed pretraining)."""
        todo, replaced = [], set()
        for stage in self.plan.stages.values():
            directory = self.path(stage)
            record = read_record(directory)
            if record and record.get("key") != stage.key:
                if stage.depends_on not in replaced and configs_agree(record.get("resolved"), stage.resolved):
                    record["key"] = stage.key  # only keys added to plm_jax since (at their defaults) differ
                    write_atomic(os.path.join(directory, RECORD), json.dumps({**record, "resolved": stage.resolved},
                                                                             indent=2))
                else:
                    aside = f"{directory}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
                    os.replace(directory, aside)
                    log.warning("%s: its config changed since it ran; the old run is kept in %s", stage.directory,
                                aside)
                    replaced.add(stage.directory)
                    record = {}
            elif not record and os.path.isdir(directory) and os.listdir(directory):
                aside = f"{directory}.unknown-{time.strftime('%Y%m%d-%H%M%S')}"
                os.replace(directory, aside)
                log.warning("%s held files the sweep did not write; moved to %s", stage.directory, aside)
            if record.get("status") == "done":
                self.status[stage.directory] = "done"
                continue
            self.status[stage.directory] = "pending"
            todo.append(stage)
        return todo

    def _stage_json(self, stage: StagePlan, overrides: dict[str, Any], name: str = "stage.json") -> str:
        overrides = dict(overrides)
        if "init" in overrides and stage.depends_on:
            overrides["init"] = os.path.join(self.workdir, stage.depends_on)
        path = os.path.join(self.path(stage), name)
        write_atomic(path, json.dumps({"base": stage.base, "overrides": overrides}, indent=2))
        return path

    def _command(self, stage: StagePlan, stage_json: str, workdir: str) -> list[str]:
        command = [sys.executable, LAUNCH, stage.kind, f"--config={STAGE_CONFIG}:{stage_json}", f"--workdir={workdir}"]
        cpu_devices = self._cpu_devices(stage)
        return command + ([f"--cpu_devices={cpu_devices}"] if cpu_devices else [])

    def _cpu_devices(self, stage: StagePlan) -> int:
        """Stages side by side share the cores: with `mesh.cpu_devices=-1` (one CPU device per core), each of the
        `workers` gets its share of them. 0 leaves the count to launch.py and the stage's config."""
        if self.workers == 1 or int(stage.resolved.get("mesh", {}).get("cpu_devices", 0)) != -1:
            return 0
        return config_cpu_device_count([stage.resolved], max(1, len(os.sched_getaffinity(0)) // self.workers))

    def _start(self, stage: StagePlan, slot: int) -> _Running:
        directory = self.path(stage)
        os.makedirs(directory, exist_ok=True)
        record = read_record(directory)
        overrides = dict(stage.overrides)
        calibrating = False
        if stage.budget is not None:  # minutes: time this config once, then fix its steps
            if "calibrated_steps" in record:
                overrides["train.steps"] = record["calibrated_steps"]
            else:
                calibrating = True
                overrides.update(CALIBRATION)
        if calibrating:
            stage_json = self._stage_json(stage, overrides, "calibration.json")
            workdir = os.path.join(directory, "calibration")
            shutil.rmtree(workdir, ignore_errors=True)  # a fresh timing, never a resumed one
        else:
            stage_json = self._stage_json(stage, overrides)
            workdir = directory
        command = self._command(stage, stage_json, workdir)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.slot_devices:
            env["CUDA_VISIBLE_DEVICES"] = self.slot_devices[slot]
        log_name = "calibration.log" if calibrating else "log.txt"
        with open(os.path.join(directory, log_name), "a", encoding="utf-8") as log_file:
            log_file.write(f"\n$ {' '.join(command)}\n")
            log_file.flush()
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                       cwd=os.getcwd(), start_new_session=True)
        if not calibrating:
            self._write_record(stage, status="running", command=command, overrides=overrides,
                               started=time.strftime("%Y-%m-%dT%H:%M:%S"), log="log.txt")
        return _Running(stage, process, time.time(), slot, calibrating)

    def _calibrated_steps(self, stage: StagePlan) -> int:
        """Steps that fit the minutes budget at the median tokens/s of the timing run (compile excluded)."""
        metrics = os.path.join(self.path(stage), "calibration", "metrics.jsonl")
        with open(metrics, encoding="utf-8") as f:
            rates = [r["tokens_per_sec"] for r in map(json.loads, f) if r.get("split") == "train"
                     and "tokens_per_sec" in r]
        if len(rates) < 2:
            raise RuntimeError(f"the timing run wrote {len(rates)} tokens/s measurements")
        tokens_per_step = int(stage.resolved["train"]["batch_size"]) * int(stage.resolved["data"]["seq_len"])
        rate = statistics.median(rates[1:])
        return max(1, int(stage.budget[1] * 60 * rate / tokens_per_step))

    def _finish(self, run: _Running) -> str:
        stage, code = run.stage, run.process.returncode
        duration = time.time() - run.started
        if run.calibrating:
            if self._stopping:  # the timing run was cut short: time it again on the next run
                shutil.rmtree(os.path.join(self.path(stage), "calibration"), ignore_errors=True)
                self._write_record(stage, status="interrupted")
                return "interrupted"
            try:
                if code != 0:
                    raise RuntimeError(_error_of(os.path.join(self.path(stage), "calibration.log"), code))
                steps = self._calibrated_steps(stage)
            except (OSError, ValueError, RuntimeError) as e:
                self._write_record(stage, status="failed", error=f"timing run: {e}", returncode=code)
                return "failed"
            self._write_record(stage, status="pending", calibrated_steps=steps, calibration_s=duration)
            return "calibrated"
        fields: dict[str, Any] = dict(ended=time.strftime("%Y-%m-%dT%H:%M:%S"), returncode=code)
        record = read_record(self.path(stage))
        fields["duration_s"] = duration + float(record.get("previous_duration_s", 0.0))
        # a run stopped by a signal saves a checkpoint and exits 0; its results.json says where it stopped
        stopped_early = code == 0 and "interrupted_at" in read_record(self.path(stage), "results.json")
        if code == 0 and not stopped_early:
            status, fields["error"] = "done", None
            self.durations.setdefault(stage.kind, []).append(duration)
        elif stopped_early or code in (-signal.SIGTERM, -signal.SIGINT) or self._stopping:
            status = "interrupted"
            fields["previous_duration_s"] = fields["duration_s"]
        else:
            status, fields["error"] = "failed", _error_of(os.path.join(self.path(stage), "log.txt"), code)
        self._write_record(stage, status=status, **fields)
        return status

    # -- the loop ----------------------------------------------------------------------------------------------
    def _eta(self, waiting: list[StagePlan], running: list[_Running]) -> str:
        known = [d for ds in self.durations.values() for d in ds]
        if not known:
            return "ETA ? (after the first stage)"
        def mean(kind: str) -> float:
            return statistics.mean(self.durations.get(kind) or known)
        left = sum(mean(s.kind) for s in waiting)
        left += sum(max(0.0, mean(r.stage.kind) - (time.time() - r.started)) for r in running)
        return f"ETA {_minutes(left / self.workers)}"

    def run(self) -> dict[str, Any]:
        os.makedirs(self.workdir, exist_ok=True)
        summary = plan_summary(self.plan)
        summary.update(sweep_config=self.sweep_config, code=self.code, written=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_atomic(os.path.join(self.workdir, "sweep.json"), json.dumps(summary, indent=2))
        waiting = self._prepare()
        done_before = len(self.plan.stages) - len(waiting)
        print(f"sweep {self.plan.sweep.name}: {len(self.plan.points)} runs ({len(summary['axes'])} axes x "
              f"{self.plan.sweep.seeds} seeds), {len(self.plan.stages)} stages, {done_before} already done; "
              f"{self.workers} worker(s); {self.workdir}", flush=True)
        running: list[_Running] = []
        self._stopping = False
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def stop(signum: int, _frame: Any) -> None:
            self._stopping = True
            for r in running:
                r.process.send_signal(signal.SIGTERM)  # the runs checkpoint and leave; a rerun resumes them

        for s in previous:
            signal.signal(s, stop)
        bar = tqdm(total=len(waiting), desc="stages", unit="stage", dynamic_ncols=True)
        try:
            while (waiting or running) and not (self._stopping and not running):
                for run in [r for r in running if r.process.poll() is not None]:
                    running.remove(run)
                    status = self._finish(run)
                    self.status[run.stage.directory] = status
                    if status == "calibrated":
                        waiting.insert(0, run.stage)
                        continue
                    bar.update(1)
                    tail = f": {read_record(self.path(run.stage)).get('error')}" if status == "failed" else ""
                    bar.write(f"{status:>11} {run.stage.directory} in {_minutes(time.time() - run.started)}"
                              f"{tail} · {self._eta(waiting, running)}")
                for stage in list(waiting):
                    if self._stopping or len(running) >= self.workers:
                        break
                    dependency = self.status.get(stage.depends_on, "pending") if stage.depends_on else "done"
                    if dependency in ("failed", "skipped"):
                        waiting.remove(stage)
                        os.makedirs(self.path(stage), exist_ok=True)
                        error = f"its pretraining ({stage.depends_on}) failed"
                        self._write_record(stage, status="failed", error=error)
                        self.status[stage.directory] = "failed"
                        bar.update(1)
                        bar.write(f"{'failed':>11} {stage.directory}: {error}")
                        continue
                    if dependency != "done":
                        continue
                    waiting.remove(stage)
                    slot = min(set(range(self.workers)) - {r.slot for r in running})
                    running.append(self._start(stage, slot))
                    bar.write(f"{'started':>11} {stage.directory}"
                              f"{' (timing the config for the minutes budget)' if running[-1].calibrating else ''}")
                time.sleep(0.2)
        finally:
            bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
        counts: dict[str, int] = {}
        for directory in self.plan.stages:
            status = self.status.get(directory, "not started")
            counts[status] = counts.get(status, 0) + 1
        print(f"sweep {self.plan.sweep.name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) +
              (" (interrupted: run the same command to resume)" if self._stopping else "") +
              f"; report: python launch.py report {self.workdir}", flush=True)
        return {"counts": counts, "interrupted": self._stopping, "workdir": self.workdir}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def run_sweep(sweep_config: str, workdir: str, workers: int = 1, devices: str = "") -> dict[str, Any]:
    """Checks the whole sweep, then runs what is not done yet."""
    plan = expand(load_sweep(sweep_config))
    return SweepRunner(plan, workdir, workers, devices, sweep_config).run()
