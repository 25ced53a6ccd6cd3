r"""Learning curves: fine-tuned test accuracy and macro-F1 against the number of labeled examples (100, 300, 1,000,
3,000 and all), from several starting points, 3 seeds each, with 95% intervals and each start's gain over random
init paired by seed.

    python launch.py pretrain --config configs/pretrain/cpu_hour.py --workdir runs/cpu_hour   # the starts first
    python launch.py pretrain --config configs/quickstart.py --workdir runs/quickstart
    python launch.py sweep configs/sweeps/curve.py:rotten_tomatoes --workdir runs/curve_rt --workers=2
    python launch.py report runs/curve_rt   # report.md, curve.csv, plots/curve_*.png

The argument is a task, then optional settings, comma-separated:
- the task: `rotten_tomatoes`, `wiki_topics`, or `local` (your own CSV/JSONL files through
  configs/finetune/local.py:classification; give `task.train_file=...` and the other files as settings);
- `pretrained=runs/a+runs/b`: plm_jax pretraining runs to start from (default runs/cpu_hour+runs/quickstart); each
  is one line, named after its directory. `scratch` uses the shape and tokenizer of the first one;
- `minilm=0`: leave out the packaged all-MiniLM-L6-v2;
- `sizes=100+1000+0`: the label counts (0 = all); `seeds=5`;
- any other `key=value` is a key of the fine-tuning config, for every start (`train.lr=1e-3`).

Subsets are drawn by the seed, stratified by class and nested across sizes (plm_jax/tasks/subsets.py); the eval and
test splits are whole, the same for every point. Small subsets train for at least `train.min_steps` updates.
"""

from __future__ import annotations

import os

from plm_jax.sweep.spec import Axis, Curve, Stage, Sweep, SweepError, axis, config_arg

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = {
    "rotten_tomatoes": os.path.join(HERE, "..", "finetune", "rotten_tomatoes.py"),
    "wiki_topics": os.path.join(HERE, "..", "finetune", "wiki_topics.py"),
    "local": os.path.join(HERE, "..", "finetune", "local.py") + ":classification",
}
SIZES = (100, 300, 1000, 3000, 0)
# Every start fine-tunes with the same keys, but the 12x larger MiniLM at its own (lower) learning rate and for
# fewer steps, as the Hugging Face examples do for a BERT-size model. The small model fine-tunes with 10% dropout
# although the CPU-hour recipe pretrains without (as cramming does): on Rotten Tomatoes at 1,000 labels, +1.7 points
# from the recipe and +0.5 from random init, 3 seeds, intervals that include zero (docs/benchmarks.md).
SMALL_MODEL = {"train.lr": 1e-3, "train.epochs": 3, "train.min_steps": 300,
               "model_overrides.dropout_rate": 0.1, "model_overrides.attention_dropout_rate": 0.1}
MINILM = {"train.lr": 1e-4, "train.epochs": 1, "train.min_steps": 150,
          "model_overrides.dropout_rate": None, "model_overrides.attention_dropout_rate": None}  # its own (0.1)
COMMON = {"train.max_evals": 5, "train.log_every": 20}


def get_config(arg: str = "rotten_tomatoes") -> Sweep:
    task, settings = config_arg(arg, "curve.py", TASKS)
    pretrained = str(settings.pop("pretrained", "runs/cpu_hour+runs/quickstart")).split("+")
    with_minilm = bool(settings.pop("minilm", 1))
    sizes = [int(s) for s in str(settings.pop("sizes", "+".join(map(str, SIZES)))).split("+")]
    seeds = int(settings.pop("seeds", 3))
    names = [os.path.basename(os.path.normpath(p)) for p in pretrained]
    if len(set(names)) != len(names) or "scratch" in names or "minilm" in names:
        raise SweepError(f"curve.py: pretrained runs need distinct directory names other than scratch and minilm: "
                         f"{pretrained}")
    starts = {"scratch": {"finetune.init": pretrained[0], "finetune.from_scratch": True,
                          **{f"finetune.{k}": v for k, v in SMALL_MODEL.items()}}}
    for name, path in zip(names, pretrained):
        starts[name] = {"finetune.init": path, "finetune.from_scratch": False,
                        **{f"finetune.{k}": v for k, v in SMALL_MODEL.items()}}
    if with_minilm:
        starts["minilm"] = {"finetune.init": "minilm", "finetune.from_scratch": False,
                            **{f"finetune.{k}": v for k, v in MINILM.items()}}
    for key in [k for k in settings if any(f"finetune.{k}" in values for values in starts.values())]:
        value = settings.pop(key)  # a setting beats every start's default
        for values in starts.values():
            values[f"finetune.{key}"] = value
    keys = list(dict.fromkeys(k for values in starts.values() for k in values))
    start_axis = Axis({k: [values[k] for values in starts.values()] for k in keys}, name="start",
                      labels=tuple(starts))
    label = "local" if task == "local" else task
    return Sweep(
        name=f"curve_{label}",
        finetune={label: Stage(TASKS[task], {**COMMON, **settings})},
        axes=[axis("finetune.task.max_train_examples", sizes, name="labels",
                   labels=[str(n) if n else "all" for n in sizes]), start_axis],
        seeds=seeds,
        metrics=[f"{label}/test/accuracy", f"{label}/test/f1_macro"],
        curve=Curve(x="labels", series="start"),
    )
