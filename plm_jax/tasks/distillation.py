"""Task distillation: a fine-tune whose loss also reads a frozen teacher (Hinton et al., 2015; DistilBERT).

`config.distill.teacher` names a finished plm_jax fine-tune of the same kind and labels. The teacher is rebuilt
from its run directory (model.json, best/), and its parameters are placed on the student's mesh by the same
logical-axis rules (train/setup.py). They are an argument of the jitted train step, never part of the train
state: no gradient, no optimizer moments, not in the student's checkpoints (a resume reads them again from the
teacher's run). The student reads the teacher's inputs, so it must use the teacher's tokenizer.

The loss per example is (1 - alpha) * label loss + alpha * the task's distillation term (classification: T^2 KL
of the temperature-softened class distributions; regression: squared error to the teacher's score; extractive QA:
the mean of that KL over the start and the end positions).

Unlabeled in-domain text can join the training set, labeled by the teacher alone (`distill.unlabeled`; Hinton's
transfer set, TinyBERT's augmented data): classification and regression only. Such a row carries the distillation
term without a label term, so with 1,000 labels and the rest of the train split unlabeled (`unlabeled="rest"`), the
student learns the teacher's view of every training text.
"""

from __future__ import annotations

import dataclasses
import filecmp
import os
from typing import Any

import ml_collections

from plm_jax.errors import UserError
from plm_jax.train.rundir import BEST, RunDir
from plm_jax.train.task import Frozen


def default_distill_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        teacher="",  # a fine-tuned plm_jax run directory; "" = no distillation (`finetune --teacher RUN`)
        alpha=0.5,  # weight of the distillation term; 1 - alpha weighs the label loss (1.0: teacher only)
        temperature=2.0,  # softens both distributions (classification); the term is scaled by T^2
        # text the teacher alone labels, added to the train split (classification/regression): "" none; "rest" the
        # train rows that task.max_train_examples leaves out (their labels unread); or a file of texts: .txt (one a
        # line), .csv/.tsv/.jsonl (columns task.text_a/task.text_b)
        unlabeled="",
        max_unlabeled=0,  # 0 = all of it, else N rows drawn by the seed
    ))


UNLABELED_KINDS = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class Teacher:
    run: str
    task: Any  # the teacher's FinetuneTask, rebuilt from its run directory: its model and forward pass
    alpha: float
    temperature: float

    def frozen(self) -> Frozen:
        def load(abstract_params: Any) -> Any:
            params, _ = RunDir(self.run).params(abstract_params, BEST)
            return params

        return Frozen(self.task.model, self.task.init_inputs, load, f"teacher {self.run}")


def check(config: ml_collections.ConfigDict, kind: str) -> tuple[RunDir, Any] | None:
    """(the teacher's run, its model.json) after the checks that need no tokenizer and no data; None: no teacher."""
    distill = config.get("distill") or default_distill_config()
    unlabeled = str(distill.get("unlabeled", ""))
    if not distill.teacher:
        if unlabeled:
            raise UserError(f"distill.unlabeled={unlabeled!r} needs a teacher to label it (distill.teacher)")
        return None
    if unlabeled:
        if kind not in UNLABELED_KINDS:
            raise UserError(f"distill.unlabeled is for {' and '.join(UNLABELED_KINDS)}; this run is {kind}")
        if unlabeled == "rest" and not int(config.task.get("max_train_examples", 0)):
            raise UserError('distill.unlabeled="rest" adds the train rows that task.max_train_examples leaves out; '
                            "set task.max_train_examples (0 keeps every row labeled)")
        if unlabeled != "rest" and not os.path.isfile(unlabeled):
            raise FileNotFoundError(f"distill.unlabeled {unlabeled}: no such file (a file of texts, or \"rest\")")
    if int(distill.get("max_unlabeled", 0)) < 0:
        raise UserError(f"distill.max_unlabeled={distill.max_unlabeled} must be 0 (all) or positive")
    checked_weights(distill)
    run = str(distill.teacher)
    if not os.path.isdir(run):
        raise FileNotFoundError(f"distill.teacher {run}: no such directory (a fine-tuned plm_jax run)")
    rundir = RunDir(run)
    if not rundir.is_finetune():
        raise UserError(f"distill.teacher {run} is not a fine-tuned plm_jax run (no model.json): fine-tune the "
                        "teacher first, e.g. `launch.py finetune --init minilm`")
    info = rundir.model_info()
    if info.kind != kind:
        raise UserError(f"distill.teacher {run} is a {info.kind} fine-tune; this run is {kind}")
    seq_len = int(config.task.get("seq_len", 0))
    if seq_len > info.model_cfg.max_len:
        raise UserError(f"task.seq_len={seq_len} exceeds distill.teacher {run}'s max_len={info.model_cfg.max_len}: "
                        "the teacher reads the student's inputs")
    return rundir, info


def resolve(config: ml_collections.ConfigDict, kind: str, tokenizer: Any) -> Teacher | None:
    """The teacher that `config.distill` names, checked against the student (kind, tokenizer)."""
    checked = check(config, kind)
    if checked is None:
        return None
    rundir, info = checked
    if not same_file(info.tokenizer_path, tokenizer.path):
        raise UserError(f"distill.teacher {rundir.path} uses another tokenizer ({info.tokenizer_path}) than the "
                        f"student ({tokenizer.path}): the student reads the teacher's inputs, so give it the "
                        f"teacher's tokenizer (--config.tokenizer={info.tokenizer_path}, with --config.model for "
                        "its shape)")
    from plm_jax.data.text_tokenizer import load_text_tokenizer
    from plm_jax.tasks import task_class

    teacher = task_class(info.kind)(rundir.load_config(), info, load_text_tokenizer(info.tokenizer_path))
    distill = config.distill
    return Teacher(rundir.path, teacher, float(distill.alpha), float(distill.temperature))


def checked_weights(distill: ml_collections.ConfigDict) -> tuple[float, float]:
    """(alpha, temperature) of a `distill` section (task or general distillation), checked."""
    alpha, temperature = float(distill.alpha), float(distill.temperature)
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"distill.alpha={alpha} must be in [0, 1]")
    if temperature <= 0:
        raise UserError(f"distill.temperature={temperature} must be positive")
    return alpha, temperature


def same_file(a: str, b: str) -> bool:
    """Both files exist with the same bytes: a student reads its teacher's tokenizer, wherever each copy lies."""
    return os.path.isfile(a) and os.path.isfile(b) and filecmp.cmp(a, b, shallow=False)
