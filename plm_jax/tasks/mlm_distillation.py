"""General distillation while pretraining: a student MLM learns its teacher's masked-token distribution (DistilBERT,
Sanh et al., 2019), before it sees any label.

`config.distill.teacher` names a finished plm_jax masked-LM pretraining run. The student reads the same masked rows
and the same tokenizer (the teacher's, copied into the student's run, as continued pretraining copies its init's);
its shape is the config's `model`, smaller than the teacher's. Per masked token the loss is

    (1 - alpha) * cross-entropy to the original token + alpha * T^2 KL(softmax(teacher / T) || softmax(student / T))

The teacher is a frozen argument of the jitted train step (train/task.py `Frozen`): placed on the mesh by the same
logical-axis rules, never in the optimizer state or the student's checkpoints. Evaluation reports the student's own
masked-LM loss and accuracy, comparable with any MLM run's.
"""

from __future__ import annotations

import dataclasses
import filecmp
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from plm_jax.errors import UserError
from plm_jax.tasks.distillation_losses import soft_cross_entropy_kl
from plm_jax.train.task import Frozen


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        teacher="",  # a plm_jax masked-LM pretraining run; "" = plain pretraining
        alpha=0.5,  # weight of the distillation term; 1 - alpha weighs the masked-LM cross-entropy
        temperature=2.0,  # softens both vocabulary distributions; the term is scaled by T^2
    ))


@dataclasses.dataclass(frozen=True)
class MlmTeacher:
    run: str
    model: Any  # the teacher's BertForMaskedLM
    tokenizer_path: str
    alpha: float
    temperature: float

    def frozen(self, init_inputs: tuple) -> Frozen:
        def load(abstract_params: Any) -> Any:
            from plm_jax.train.rundir import CHECKPOINTS, RunDir

            params, _ = RunDir(self.run).params(abstract_params, CHECKPOINTS)
            return params

        return Frozen(self.model, init_inputs, load, f"teacher {self.run}")


def resolve(config: ml_collections.ConfigDict) -> MlmTeacher | None:
    """The teacher `config.distill` names, checked against the student before any data is read."""
    distill = config.get("distill")
    if distill is None or not distill.teacher:
        return None
    run = str(distill.teacher)
    alpha, temperature = float(distill.alpha), float(distill.temperature)
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"distill.alpha={alpha} must be in [0, 1]")
    if temperature <= 0:
        raise UserError(f"distill.temperature={temperature} must be positive")
    if config.get("objective", "mlm") != "mlm":
        raise UserError(f"distill.teacher: general distillation trains a masked LM; objective={config.objective!r}")
    if not os.path.isdir(run):
        raise FileNotFoundError(f"distill.teacher {run}: no such directory (a plm_jax masked-LM pretraining run)")
    if not os.path.isfile(os.path.join(run, "config.json")) or not os.path.isdir(os.path.join(run, "checkpoints")):
        raise UserError(f"distill.teacher {run}: not a plm_jax pretraining run (config.json and checkpoints/)")
    from plm_jax.tasks.objectives import get_objective
    from plm_jax.tasks.starting_point import plm_jax_run_config

    saved, model_cfg, tokenizer = plm_jax_run_config(run)
    if saved.get("objective", "mlm") != "mlm":
        raise UserError(f"distill.teacher {run} is a run of objective={saved.get('objective')!r}; general "
                        "distillation reads a masked-LM teacher's predictions")
    if int(config.model.vocab_size) != model_cfg.vocab_size:
        raise UserError(f"model.vocab_size={config.model.vocab_size}, but distill.teacher {run} has "
                        f"{model_cfg.vocab_size}: the student uses the teacher's tokenizer, so give it "
                        f"--config.model.vocab_size={model_cfg.vocab_size}")
    mine = config.data.get("tokenizer", "")
    if mine and not (os.path.isfile(mine) and filecmp.cmp(mine, tokenizer.path, shallow=False)):
        raise UserError(f"data.tokenizer={mine!r} is not distill.teacher {run}'s tokenizer ({tokenizer.path}): the "
                        "student reads the teacher's inputs; leave data.tokenizer empty to use the teacher's")
    if config.data.seq_len > model_cfg.max_len:
        raise UserError(f"data.seq_len={config.data.seq_len} exceeds distill.teacher {run}'s "
                        f"max_len={model_cfg.max_len}: the teacher reads the student's rows")
    model = get_objective("mlm", model_cfg).model(model_cfg)
    return MlmTeacher(run, model, tokenizer.path, alpha, temperature)


def loss_sums(student_logits_BxPxV: jax.Array, teacher_logits_BxPxV: jax.Array, sums: dict[str, jax.Array],
              weights_BxP: jax.Array, teacher: MlmTeacher) -> dict[str, jax.Array]:
    """The masked-LM sums with the distillation term mixed into loss_sum (accuracy stays the student's own)."""
    kd_BxP = soft_cross_entropy_kl(student_logits_BxPxV, jax.lax.stop_gradient(teacher_logits_BxPxV),
                                   teacher.temperature)
    distill_sum = jnp.sum(kd_BxP * weights_BxP)
    return {**sums, "loss_sum": (1.0 - teacher.alpha) * sums["loss_sum"] + teacher.alpha * distill_sum}
