"""What a sweep config says: stages, axes, seeds, a budget; and their expansion into checked stage configs.

A sweep config is a Python file whose `get_config()` returns a `Sweep`. Each point of the sweep is one choice of
value on every axis (the product of the axes; keys inside one axis move together, a zip) and one seed. A point
runs a pipeline: pretrain (optional), then fine-tune on each task; the fine-tune reads the metrics that decide.

Axis keys name where a value goes:
    "pretrain.data.mask_rate"   a key of the pretraining config
    "finetune.train.lr"         a key of every fine-tuning task's config
    "rotten_tomatoes.train.lr"  a key of one task's config
    "pretrain" / "<task>"       the stage's base config itself ("configs/x.py:arg"), for variants no key captures
A string value's "{seed}" becomes the point's seed: `distill.teacher="runs/teachers/seed={seed}"` gives each seed
its own teacher. Everything is resolved and checked before any point starts: a key that does not exist, a value of
the wrong type, a budget of zero, and two points with the same configs are errors that name the axis and the value.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import hashlib
import importlib.util
import itertools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from plm_jax.errors import UserError


class SweepError(UserError):
    """A sweep config that cannot run as written."""


@dataclasses.dataclass(frozen=True)
class Stage:
    config: str  # a config file, "path.py" or "path.py:arg", as for `launch.py --config`
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # dotted key -> value, every point


@dataclasses.dataclass(frozen=True)
class Axis:
    values: Mapping[str, Sequence[Any]]  # key -> one value per step of the axis; several keys form a zip
    name: str = ""  # default: the last part of the first key
    labels: Sequence[str] = ()  # default: the values, joined with "/" for a zip

    @property
    def size(self) -> int:
        return len(next(iter(self.values.values())))

    def display_name(self) -> str:
        return self.name or next(iter(self.values)).split(".")[-1]

    def label(self, i: int) -> str:
        if self.labels:
            return str(self.labels[i])
        return "/".join(_value_label(v[i]) for v in self.values.values())


def axis(key: str, values: Sequence[Any], name: str = "", labels: Sequence[str] = ()) -> Axis:
    return Axis({key: list(values)}, name, tuple(labels))


@dataclasses.dataclass(frozen=True)
class Budget:
    """Pretraining compute per point; exactly one field is set. It decides train.steps."""

    steps: int = 0
    tokens: int = 0  # steps = ceil(tokens / (batch_size * seq_len)): equal data for every point
    flops: float = 0.0  # MLM training FLOPs counted per matmul (models/flops.py): equal compute across shapes
    minutes: float = 0.0  # wall clock: each config is timed once and the steps recorded (cramming-style)

    def kind(self) -> tuple[str, float]:
        set_fields = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if getattr(self, f.name)]
        if len(set_fields) != 1:
            raise SweepError(f"budget {self}: give exactly one of steps, tokens, flops or minutes, and not zero")
        name, value = set_fields[0]
        if not value > 0:
            raise SweepError(f"budget {name}={value}: must be positive")
        return name, float(value)


@dataclasses.dataclass(frozen=True)
class Curve:
    """A learning curve in the report: each headline fine-tuning metric against the number of labeled examples
    (axis `x`, whose values are task.max_train_examples: 0 = all), one line per value of axis `series`, each line
    compared with the series' first value (e.g. random init), paired by seed, at every x."""

    x: str = "labels"
    series: str = "start"


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    finetune: Mapping[str, Stage]  # task name -> its stage; may be empty (a pretraining-only sweep)
    pretrain: Stage | None = None  # None: fine-tunes start from their configs' init
    axes: Sequence[Axis] = ()
    seeds: int = 3  # seeds 0 .. seeds-1, the `seed` key of every stage
    budget: Budget | None = None  # None: the pretraining config's train.steps
    metrics: Sequence[str] = ()  # headline metrics, e.g. "pretrain/accuracy", "rotten_tomatoes/test/accuracy"
    paired: bool = True  # differences pair runs by seed (the same data order and initial weights)
    curve: Curve | None = None  # report a learning curve over these two axes (configs/sweeps/curve.py)


@dataclasses.dataclass
class StagePlan:
    """One run: `launch.py <kind> --config plm_jax/sweep/stage_config.py:<dir>/stage.json --workdir <dir>`."""

    kind: str  # "pretrain" | "finetune"
    task: str  # "" for pretraining
    base: str  # the base config, absolute path[:arg]
    overrides: dict[str, Any]
    resolved: dict[str, Any]  # the config the run sees (JSON), init replaced by the pretraining hash
    key: str  # hash of the resolved config (and the pretraining it starts from)
    directory: str  # relative to the sweep's work directory
    depends_on: str = ""  # the pretraining stage's directory
    budget: tuple[str, float] | None = None  # ("minutes", m): steps fixed when the stage first runs


@dataclasses.dataclass
class Point:
    label: str  # "mask_rate=0.3", one part per axis
    values: dict[str, str]  # axis name -> value label
    seed: int
    stages: dict[str, str]  # "pretrain" / task name -> stage directory


@dataclasses.dataclass
class Plan:
    sweep: Sweep
    points: list[Point]
    stages: dict[str, StagePlan]  # directory -> stage, in run order: point by point, pretraining first


def config_arg(arg: str, where: str, first_choices: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """A sweep config's argument "task,key=value,...": the task (one of `first_choices`) and the settings,
    each value a Python literal or else a string (a path, a name)."""
    first, *settings = [part.strip() for part in arg.split(",") if part.strip()] or [""]
    if first not in first_choices:
        raise SweepError(f"{where}:{arg}: the first part must be a task, one of {sorted(first_choices)}")
    parsed: dict[str, Any] = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep:
            raise SweepError(f"{where}:{arg}: {setting!r} is not key=value")
        try:
            parsed[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed[key] = text
    return first, parsed


def load_sweep(spec: str) -> Sweep:
    """A sweep config file ("path.py" or "path.py:arg") -> its Sweep."""
    config = load_python_config(spec)
    if not isinstance(config, Sweep):
        raise SweepError(f"{spec}: get_config() returned a {type(config).__name__}, not a plm_jax.sweep.spec.Sweep")
    return config


def load_python_config(spec: str) -> Any:
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise SweepError(f"config file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_plm_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # a config that does not import: its own error, with the file named
        raise SweepError(f"{path} does not load: {type(e).__name__}: {e}") from None
    if not hasattr(module, "get_config"):
        raise SweepError(f"{path} has no get_config()")
    return module.get_config(arg) if arg else module.get_config()


def set_key(config: ml_collections.ConfigDict, dotted: str, value: Any, where: str, source: str = "the config") -> None:
    """config[dotted] = value, refusing a key that does not exist or a value of another type."""
    node, parts = config, dotted.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(part, known, n=1)
            hint = f" (did you mean {'.'.join(parts[:depth] + close)}?)" if close else ""
            raise SweepError(f"{where}: {dotted} is not a key of {source}{hint}")
        if depth < len(parts) - 1:
            node = node[part]
    old = node[parts[-1]]
    if isinstance(old, ml_collections.ConfigDict):
        raise SweepError(f"{where}: {dotted} is a group of keys; name one of {sorted(old.keys())}")
    if isinstance(value, bool) != isinstance(old, bool) and old is not None:
        raise SweepError(f"{where}: {dotted}={value!r} is a {type(value).__name__}; the key holds a "
                         f"{type(old).__name__} ({old!r})")
    try:
        node[parts[-1]] = value
    except TypeError:
        raise SweepError(f"{where}: {dotted}={value!r} is a {type(value).__name__}; the key holds a "
                         f"{type(old).__name__} ({old!r})") from None


def build_stage_config(base: str, overrides: Mapping[str, Any], where: str) -> ml_collections.ConfigDict:
    config = load_python_config(base)
    if not isinstance(config, ml_collections.ConfigDict):
        raise SweepError(f"{where}: {base} is not a plm_jax run config (get_config() gave {type(config).__name__})")
    for key, value in overrides.items():
        set_key(config, key, value, where, base)
    return config


def _value_label(value: Any) -> str:
    if isinstance(value, str) and value.endswith(".py") or ".py:" in str(value):
        return str(value).rsplit(":", 1)[-1] if ":" in str(value) else os.path.basename(str(value))[:-3]
    return str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", text)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _absolute(spec: str) -> str:
    path, sep, arg = spec.partition(":")
    return os.path.abspath(path) + sep + arg


def _check(sweep: Sweep) -> None:
    if not sweep.name or _safe(sweep.name) != sweep.name:
        raise SweepError(f"sweep name {sweep.name!r}: letters, digits and _.=,+- only")
    if not isinstance(sweep.seeds, int) or sweep.seeds < 1:
        raise SweepError(f"seeds={sweep.seeds!r}: need at least one seed")
    if sweep.pretrain is None and not sweep.finetune:
        raise SweepError("the sweep has no stage: give pretrain and/or finetune")
    if sweep.budget is not None:
        sweep.budget.kind()
        if sweep.pretrain is None:
            raise SweepError("a budget sets the pretraining steps, and this sweep has no pretrain stage")
    stages = {"pretrain", "finetune", *sweep.finetune}
    names = set()
    for ax in sweep.axes:
        if not ax.values:
            raise SweepError(f"axis {ax.name!r} names no key")
        sizes = {k: len(v) for k, v in ax.values.items()}
        if len(set(sizes.values())) != 1 or not min(sizes.values()):
            raise SweepError(f"axis {ax.display_name()}: zipped keys need the same number of values, got {sizes}")
        if ax.labels and len(ax.labels) != ax.size:
            raise SweepError(f"axis {ax.display_name()}: {len(ax.labels)} labels for {ax.size} values")
        for key in ax.values:
            stage = key.split(".")[0]
            if stage not in stages or (stage == "pretrain" and sweep.pretrain is None):
                raise SweepError(f"axis key {key!r}: the part before the first dot must be a stage of this "
                                 f"sweep: {sorted(stages if sweep.pretrain else stages - {'pretrain'})}")
            if key.endswith(".seed") or (key.endswith(".init") and sweep.pretrain is not None):
                raise SweepError(f"axis key {key!r}: seeds and init are set by the sweep (seeds=, pretrain=)")
            if sweep.budget is not None and key == "pretrain.train.steps":
                raise SweepError("axis pretrain.train.steps conflicts with the budget; drop one of them")
        labels = [ax.label(i) for i in range(ax.size)]
        if len(set(labels)) != len(labels):
            raise SweepError(f"axis {ax.display_name()}: two values share a label {labels}; give labels=")
        if ax.display_name() in names:
            raise SweepError(f"two axes are named {ax.display_name()!r}; give name=")
        names.add(ax.display_name())
    if sweep.curve is not None:
        _check_curve(sweep)


def _check_curve(sweep: Sweep) -> None:
    by_name = {ax.display_name(): ax for ax in sweep.axes}
    curve = sweep.curve
    for role, name in (("x", curve.x), ("series", curve.series)):
        if name not in by_name:
            raise SweepError(f"curve {role}={name!r} is not an axis of the sweep: {sorted(by_name)}")
    if curve.x == curve.series:
        raise SweepError(f"curve x and series are the same axis {curve.x!r}")
    x_axis = by_name[curve.x]
    for key, values in x_axis.values.items():
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise SweepError(f"curve x axis {curve.x!r}: {key} values must be example counts >= 0 (0 = all), "
                             f"got {list(values)}")


def budget_steps(budget: tuple[str, float], config: ml_collections.ConfigDict, where: str) -> int | None:
    """The pretraining steps a budget buys for this config; None for minutes (timed when the stage runs)."""
    kind, value = budget
    tokens_per_step = int(config.train.batch_size) * int(config.data.seq_len)
    if kind == "steps":
        return int(value)
    if kind == "tokens":
        return max(1, math.ceil(value / tokens_per_step))
    if kind == "flops":
        if config.objective != "mlm":
            raise SweepError(f"{where}: a flops budget is counted for objective mlm only, not {config.objective}")
        from plm_jax.data.data_config import resolve_max_predictions
        from plm_jax.models.config import TransformerConfig
        from plm_jax.models.flops import mlm_train_flops_per_step

        per_step = mlm_train_flops_per_step(TransformerConfig.from_config(config.model), int(config.train.batch_size),
                                            int(config.data.seq_len), resolve_max_predictions(config.data))
        return max(1, round(value / per_step))
    return None


def expand(sweep: Sweep) -> Plan:
    """Every point and stage, with configs resolved and checked; raises SweepError before anything runs."""
    _check(sweep)
    budget = sweep.budget.kind() if sweep.budget is not None else None
    stages: dict[str, StagePlan] = {}
    points: list[Point] = []
    identity: dict[str, str] = {}
    for choice in itertools.product(*(range(ax.size) for ax in sweep.axes)):
        values = {ax.display_name(): ax.label(i) for ax, i in zip(sweep.axes, choice)}
        assigned: dict[str, Any] = {}
        for ax, i in zip(sweep.axes, choice):
            assigned.update({k: v[i] for k, v in ax.values.items()})
        label = ",".join(f"{n}={v}" for n, v in values.items()) or "base"
        for seed in range(sweep.seeds):
            point = Point(label, values, seed, {})
            pretrain_key = ""
            if sweep.pretrain is not None:
                pretrain = _pretrain_stage(sweep, assigned, values, seed, budget)
                stages.setdefault(pretrain.directory, pretrain)
                if stages[pretrain.directory].key != pretrain.key:
                    raise SweepError(f"{pretrain.directory}: two points give it different configs (internal)")
                point.stages["pretrain"], pretrain_key = pretrain.directory, pretrain.key
            for task in sweep.finetune:
                stage = _finetune_stage(sweep, task, assigned, label, seed, point.stages.get("pretrain", ""),
                                        pretrain_key)
                stages[stage.directory] = stage
                point.stages[task] = stage.directory
            whole = _digest([stages[d].key for d in point.stages.values()])
            if whole in identity:
                raise SweepError(f"points {identity[whole]} and {label},seed={seed} resolve to the same configs; "
                                 "an axis value changes nothing")
            identity[whole] = f"{label},seed={seed}"
            points.append(point)
    return Plan(sweep, points, stages)  # point by point, each pretraining before the fine-tunes that use it


def _stage_values(assigned: Mapping[str, Any], prefixes: Sequence[str]) -> tuple[str | None, dict[str, Any]]:
    base, overrides = None, {}
    for key, value in assigned.items():
        head, _, rest = key.partition(".")
        if head in prefixes:
            if rest:
                overrides[rest] = value
            else:
                base = value
    return base, overrides


def _pretrain_stage(sweep: Sweep, assigned: Mapping[str, Any], values: Mapping[str, str], seed: int,
                    budget: tuple[str, float] | None) -> StagePlan:
    base, axis_overrides = _stage_values(assigned, ("pretrain",))
    base = base or sweep.pretrain.config
    overrides = _seeded({**sweep.pretrain.overrides, **axis_overrides}, seed)
    touching = [ax.display_name() for ax in sweep.axes if any(k.split(".")[0] == "pretrain" for k in ax.values)]
    label = ",".join(f"{n}={values[n]}" for n in touching)
    where = f"pretrain ({label or 'base'}, seed {seed})"
    config = build_stage_config(base, overrides, where)
    pending = None
    if budget is not None:
        steps = budget_steps(budget, config, where)
        if steps is None:
            pending = budget
        else:
            overrides["train.steps"] = steps
            set_key(config, "train.steps", steps, where)
    resolved = json.loads(config.to_json_best_effort())
    if pending:
        resolved["train"]["steps"] = f"{budget[0]}={budget[1]}"
    directory = os.path.join("pretrain", _safe(f"{label},seed={seed}" if label else f"seed={seed}"))
    return StagePlan("pretrain", "", _absolute(base), overrides, resolved, _digest(resolved), directory,
                     budget=pending)


def _seeded(overrides: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The overrides with the point's seed: as `seed`, and for "{seed}" inside a string value."""
    return {**{k: v.replace("{seed}", str(seed)) if isinstance(v, str) else v for k, v in overrides.items()},
            "seed": seed}


def _finetune_stage(sweep: Sweep, task: str, assigned: Mapping[str, Any], label: str, seed: int,
                    pretrain_dir: str, pretrain_key: str) -> StagePlan:
    stage = sweep.finetune[task]
    base, task_overrides = _stage_values(assigned, (task,))
    _, all_overrides = _stage_values(assigned, ("finetune",))
    base = base or stage.config
    overrides = _seeded({**stage.overrides, **all_overrides, **task_overrides}, seed)
    where = f"{task} ({label}, seed {seed})"
    config = build_stage_config(base, overrides, where)
    resolved = json.loads(config.to_json_best_effort())
    if pretrain_dir:
        overrides["init"] = pretrain_dir  # relative to the sweep directory; the runner makes it a path
        resolved["init"] = f"pretrain:{pretrain_key}"
    directory = os.path.join("finetune", _safe(task), _safe(f"{label},seed={seed}"))
    return StagePlan("finetune", task, _absolute(base), overrides, resolved, _digest(resolved), directory,
                     depends_on=pretrain_dir)


def plan_summary(plan: Plan) -> dict[str, Any]:
    """What sweep.json records: the axes, the points and their stage directories (the report reads it)."""
    sweep = plan.sweep
    return {
        "name": sweep.name,
        "axes": [{"name": ax.display_name(), "keys": list(ax.values),
                  "labels": [ax.label(i) for i in range(ax.size)]} for ax in sweep.axes],
        "seeds": list(range(sweep.seeds)),
        "budget": dict(zip(("kind", "value"), sweep.budget.kind())) if sweep.budget else None,
        "metrics": list(sweep.metrics),
        "paired": sweep.paired,
        "curve": dataclasses.asdict(sweep.curve) if sweep.curve else None,
        "tasks": list(sweep.finetune),
        "points": [dataclasses.asdict(p) for p in plan.points],
        "stages": {d: {"kind": s.kind, "task": s.task, "key": s.key} for d, s in plan.stages.items()},
    }
