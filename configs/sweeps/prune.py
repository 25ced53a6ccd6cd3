r"""Head pruning at few labels: each seed's fine-tuned MiniLM teacher (configs/sweeps/distill.py's teachers, 1,000
labels) keeps the most important `heads` of its 12 attention heads in every layer (Michel et al., 2019;
plm_jax/tasks/pruning.py), then re-fine-tunes briefly on the same 1,000 labels. The first evaluation (step 0) is
the pruned model before the re-fine-tune. `heads=12` keeps every head: the same re-fine-tune without pruning, the
baseline that the report compares the pruned models with (the re-fine-tune alone changes the teacher too).

    python launch.py sweep configs/sweeps/prune.py:rotten_tomatoes --workdir runs/prune_rotten_tomatoes --workers=2
    python launch.py report runs/prune_rotten_tomatoes
    python benchmarks/distill_table.py --task rotten_tomatoes \
        --sweep "runs/prune_rotten_tomatoes=teacher re-fine-tuned, heads a layer"

The argument is a task (`rotten_tomatoes`, `wiki_topics`), then optional comma-separated settings: `teachers=DIR`
(default runs/teachers_<task>; it holds seed=0, seed=1, ...), `heads=12+6+3` (heads kept per layer, one point each),
`labels=1000`, `seeds=3`, and any key of the fine-tuning config (`train.epochs=3`).
"""

from __future__ import annotations

import os

from plm_jax.sweep.spec import Stage, Sweep, axis, config_arg

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = {task: os.path.join(HERE, "..", "finetune", f"{task}.py") for task in ("rotten_tomatoes", "wiki_topics")}
# a short re-fine-tune: 0.3x the teacher's lr, two passes over its 1,000 labels; evaluated before and after
RETRAIN = {"train.lr": 3e-5, "train.epochs": 2, "train.min_steps": 0, "train.max_evals": 2, "train.warmup_frac": 0.1,
           "train.eval_at_start": True, "train.log_every": 10, "prune.examples": 1000}


def get_config(arg: str = "rotten_tomatoes") -> Sweep:
    task, settings = config_arg(arg, "prune.py", TASKS)
    teachers = str(settings.pop("teachers", f"runs/teachers_{task}"))
    labels = int(settings.pop("labels", 1000))
    seeds = int(settings.pop("seeds", 3))
    heads = [int(h) for h in str(settings.pop("heads", "12+6+3")).split("+")]
    overrides = {**RETRAIN, "init": os.path.join(teachers, "seed={seed}"), "task.max_train_examples": labels,
                 **settings}
    return Sweep(
        name=f"prune_{task}",
        finetune={task: Stage(TASKS[task], overrides)},
        axes=[axis("finetune.prune.heads", heads, name="heads")],
        seeds=seeds,
        metrics=[f"{task}/test/accuracy", f"{task}/test/f1_macro"],
    )
