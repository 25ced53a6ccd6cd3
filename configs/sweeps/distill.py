r"""Task distillation at few labels: a 1-layer student cut from MiniLM, trained on the labels alone, with its
teacher's soft labels, and with the teacher also labeling the rest of the training text; 3 seeds, each student
paired with the teacher of its own seed (the same 1,000 labels).

    # the teachers: all-MiniLM-L6-v2 fine-tuned on 1,000 labels, one per seed (the learning curve's MiniLM runs)
    for s in 0 1 2; do python launch.py finetune --config configs/finetune/rotten_tomatoes.py --init minilm \
        --workdir runs/teachers_rotten_tomatoes/seed=$s --config.seed=$s --config.task.max_train_examples=1000 \
        --config.train.lr=1e-4 --config.train.epochs=1 --config.train.min_steps=150 --config.train.max_evals=5; done
    python launch.py sweep configs/sweeps/distill.py:rotten_tomatoes --workdir runs/distill_rotten_tomatoes \
        --workers=2
    python launch.py report runs/distill_rotten_tomatoes   # each student against the labels-only one, by seed
    python benchmarks/distill_table.py --task rotten_tomatoes   # + teacher, int8, sizes and predict throughput

The argument is a task (`rotten_tomatoes`, `wiki_topics`), then optional comma-separated settings:
`teachers=DIR` (default runs/teachers_<task>; it holds seed=0, seed=1, ...), `labels=1000`, `seeds=3`,
`layers=0` (the layers of `init` the student keeps, `+`-separated: `0+3`; `all`), `students=labels+distilled+rest`
(which of the three students to train), and any key of the fine-tuning config (`train.lr=3e-4`,
`distill.temperature=4`). A student from general distillation (configs/pretrain/distill.py) is
`init=runs/minilm_student,layers=all`:

    python launch.py sweep configs/sweeps/distill.py:rotten_tomatoes,init=runs/minilm_student,layers=all,\
students=labels+rest --workdir runs/distill_general_rotten_tomatoes --workers=2

The student keeps the embeddings and layer 0 of MiniLM's six (`init_layers`, as DistilBERT keeps every other
layer): 1/6 of the teacher's encoder FLOPs per token, with the teacher's tokenizer, as distillation needs.
"""

from __future__ import annotations

import os

from plm_jax.sweep.spec import Axis, Stage, Sweep, SweepError, config_arg

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = {task: os.path.join(HERE, "..", "finetune", f"{task}.py") for task in ("rotten_tomatoes", "wiki_topics")}
STUDENT = {"init": "minilm", "train.lr": 3e-4, "train.epochs": 3, "train.min_steps": 300, "train.max_evals": 5,
           "train.log_every": 20}
STUDENT_KEYS = {"labels": "labels only", "distilled": "distilled", "rest": "distilled + unlabeled rest"}


def get_config(arg: str = "rotten_tomatoes") -> Sweep:
    task, settings = config_arg(arg, "distill.py", TASKS)
    teachers = str(settings.pop("teachers", f"runs/teachers_{task}"))
    labels = int(settings.pop("labels", 1000))
    seeds = int(settings.pop("seeds", 3))
    kept = str(settings.pop("layers", 0))
    layers = () if kept == "all" else tuple(int(i) for i in kept.split("+"))
    teacher = os.path.join(teachers, "seed={seed}")  # the sweep puts each point's seed here
    students = {"labels only": ("", ""), "distilled": (teacher, ""), "distilled + unlabeled rest": (teacher, "rest")}
    chosen = str(settings.pop("students", "labels+distilled+rest")).split("+")
    if not chosen or set(chosen) - set(STUDENT_KEYS):
        raise SweepError(f"distill.py:{arg}: students={'+'.join(chosen)}; choose from {'+'.join(STUDENT_KEYS)}")
    students = {name: students[name] for key, name in STUDENT_KEYS.items() if key in chosen}
    student_axis = Axis({"finetune.distill.teacher": [t for t, _ in students.values()],
                         "finetune.distill.unlabeled": [u for _, u in students.values()]},
                        name="student", labels=tuple(students))
    overrides = {**STUDENT, "init_layers": layers, "task.max_train_examples": labels, **settings}
    return Sweep(
        name=f"distill_{task}",
        finetune={task: Stage(TASKS[task], overrides)},
        axes=[student_axis],
        seeds=seeds,
        metrics=[f"{task}/test/accuracy", f"{task}/test/f1_macro"],
    )
