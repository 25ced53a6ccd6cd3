"""General distillation while pretraining, so that a student transfers before it sees any label. Two kinds:

- `distill.kind="mlm"` (DistilBERT, Sanh et al., 2019): the student learns a plm_jax masked-LM run's masked-token
  distribution. Per masked token the loss is
      (1 - alpha) * cross-entropy to the original token + alpha * T^2 KL(softmax(teacher / T) || softmax(student / T))
- `distill.kind="relations"` (MiniLM v2, Wang et al., 2021): the student's last layer learns the self-attention
  relations (softmax(X X^T / sqrt(d)) of the queries, of the keys and of the values, split into
  `distill.relation_heads` relation heads) of one teacher layer. The teacher needs no MLM head, and the student may
  have another width and head count: any encoder start works (a plm_jax run, a Hugging Face BERT directory or Hub
  id, `minilm`). The loss is (1 - alpha) * the masked-LM cross-entropy + alpha * the sum of the three relation
  KLs over every real token, per masked token (the trainer's normalizer); MiniLM itself uses alpha = 1.

The student reads the same masked rows and the same tokenizer (the teacher's, copied into the student's run, as
continued pretraining copies its init's; a WordPiece vocabulary runs in tf.data through data/wordpiece.py); its
shape is the config's `model`, smaller than the teacher's.

The teacher is a frozen argument of the jitted train step (train/task.py `Frozen`): placed on the mesh by the same
logical-axis rules, never in the optimizer state or the student's checkpoints. Evaluation reports the student's own
masked-LM loss and accuracy, comparable with any MLM run's.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.traverse_util import flatten_dict

from plm_jax.errors import UserError
from plm_jax.models.config import TransformerConfig
from plm_jax.models.encoder import Encoder
from plm_jax.tasks.distillation import checked_weights, same_file
from plm_jax.tasks.distillation_losses import relation_kl, soft_cross_entropy_kl
from plm_jax.tasks.objectives import get_objective
from plm_jax.train.rundir import CHECKPOINTS, RunDir
from plm_jax.train.task import Frozen


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        teacher="",  # kind mlm: a plm_jax masked-LM run; kind relations: any encoder start; "" = plain pretraining
        kind="mlm",  # mlm (the teacher's masked-token distribution) | relations (MiniLM v2 attention relations)
        alpha=0.5,  # weight of the distillation term; 1 - alpha weighs the masked-LM cross-entropy
        temperature=2.0,  # kind mlm: softens both vocabulary distributions; the term is scaled by T^2
        relation_heads=0,  # kind relations: 0 = the teacher's attention heads; must divide both widths
        teacher_layer=-1,  # kind relations: the teacher layer the student's last layer learns (-1: its last)
    ))


KINDS = ("mlm", "relations")
QKV = ("query", "key", "value")


class TeacherEncoder(nn.Module):
    """A relations teacher: the encoder alone (params {"encoder": ...}), called with the student's batch fields."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, input_ids_BxL, segment_ids_BxL, positions_BxL, masked_positions_BxP=None, *,
                 deterministic: bool = True):
        return Encoder(self.cfg, name="encoder")(input_ids_BxL, segment_ids_BxL, positions_BxL,
                                                 deterministic=deterministic)


@dataclasses.dataclass(frozen=True)
class MlmTeacher:
    run: str
    kind: str
    model: Any  # kind mlm: the teacher's BertForMaskedLM; kind relations: its TeacherEncoder
    model_cfg: TransformerConfig
    tokenizer_path: str
    alpha: float
    temperature: float
    relation_heads: int = 0
    teacher_layer: int = 0  # kind relations: the teacher layer read (0-based)
    encoder_params: Any = None  # kind relations: the start's encoder weights, host arrays

    def frozen(self, init_inputs: tuple) -> Frozen:
        def load(abstract_params: Any) -> Any:
            if self.encoder_params is not None:  # placed by the abstract tree's shardings (the same rules)
                return jax.tree.map(lambda x, a: jax.device_put(np.asarray(x, a.dtype), a.sharding),
                                    {"encoder": self.encoder_params}, abstract_params)
            params, _ = RunDir(self.run).params(abstract_params, CHECKPOINTS)
            return params

        return Frozen(self.model, init_inputs, load, f"teacher {self.run}")

    def loss_sums(self, objective: Any, student: nn.Module, params: Any, batch: dict[str, jax.Array],
                  deterministic: bool, rngs: dict | None, frozen: Any) -> dict[str, jax.Array]:
        """The student's masked-LM sums with the distillation term mixed into loss_sum (accuracy stays its own)."""
        from plm_jax.tasks.objectives import token_loss_sums

        inputs = tuple(batch[k] for k in objective.input_keys)
        weights_BxP = batch[objective.weight_key]
        if self.kind == "mlm":
            logits_BxPxV = student.apply({"params": params}, *inputs, deterministic=deterministic, rngs=rngs)
            teacher_BxPxV = self.model.apply({"params": frozen}, *inputs, deterministic=True)
            kd_BxP = soft_cross_entropy_kl(logits_BxPxV, jax.lax.stop_gradient(teacher_BxPxV), self.temperature)
            distill_sum = jnp.sum(kd_BxP * weights_BxP)
        else:
            logits_BxPxV, mine = attention_qkv(student, params, inputs, student.cfg.num_layers - 1,  # its last
                                               deterministic, rngs)
            _, theirs = attention_qkv(self.model, frozen, inputs, self.teacher_layer, True, None)
            segment_ids_BxL = batch["segment_ids"]
            distill_sum = sum(jnp.sum(relation_kl(mine[n], jax.lax.stop_gradient(theirs[n]), self.relation_heads,
                                                  segment_ids_BxL)) for n in QKV)
        sums = token_loss_sums(logits_BxPxV, batch[objective.target_key], weights_BxP)
        return {**sums, "loss_sum": (1.0 - self.alpha) * sums["loss_sum"] + self.alpha * distill_sum}


def attention_qkv(model: nn.Module, params: Any, inputs: tuple, layer: int, deterministic: bool,
                  rngs: dict | None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The model's output and the query, key and value projections of encoder layer `layer`, each BxLxD (heads
    joined), read with Flax's capture_intermediates: the model code stays as it is."""
    name = f"layer_{layer}"

    def wanted(module: nn.Module, method: str) -> bool:
        return method == "__call__" and module.name in QKV and name in module.scope.path

    out, state = model.apply({"params": params}, *inputs, deterministic=deterministic, rngs=rngs,
                             capture_intermediates=wanted, mutable=["intermediates"])
    found = {path[-2]: value[0] for path, value in flatten_dict(state["intermediates"]).items()
             if path[-1] == "__call__" and path[-2] in QKV and name in path}
    if sorted(found) != sorted(QKV):  # a layout that hides the layer's modules (stacked or rematerialized layers)
        raise UserError(f"distill.kind='relations' could not read {name}'s query, key and value (found "
                        f"{sorted(found)}): set model.scan_layers=False and model.remat='none'")
    return out, {n: x.reshape(*x.shape[:2], -1) for n, x in found.items()}


def resolve(config: ml_collections.ConfigDict) -> MlmTeacher | None:
    """The teacher `config.distill` names, checked against the student before any data is read."""
    distill = config.get("distill")
    if distill is None or not distill.teacher:
        return None
    run, kind = str(distill.teacher), str(distill.get("kind", "mlm"))
    if kind not in KINDS:
        raise UserError(f"distill.kind={kind!r}; expected one of {KINDS}")
    alpha, temperature = checked_weights(distill)
    if config.get("objective", "mlm") != "mlm":
        raise UserError(f"distill.teacher: general distillation trains a masked LM; objective={config.objective!r}")
    if kind == "mlm":
        model_cfg, tokenizer_path = _mlm_run(run)
        teacher = MlmTeacher(run, kind, get_objective("mlm", model_cfg).model(model_cfg), model_cfg,
                             tokenizer_path, alpha, temperature)
    else:
        teacher = _relations_teacher(run, config, alpha, temperature)
    model_cfg = teacher.model_cfg
    if int(config.model.vocab_size) != model_cfg.vocab_size:
        raise UserError(f"model.vocab_size={config.model.vocab_size}, but distill.teacher {run} has "
                        f"{model_cfg.vocab_size}: the student uses the teacher's tokenizer, so give it "
                        f"--config.model.vocab_size={model_cfg.vocab_size}")
    mine = config.data.get("tokenizer", "")
    if mine and not same_file(mine, teacher.tokenizer_path):
        raise UserError(f"data.tokenizer={mine!r} is not distill.teacher {run}'s tokenizer "
                        f"({teacher.tokenizer_path}): the student reads the teacher's inputs; leave data.tokenizer "
                        "empty to use the teacher's")
    if config.data.seq_len > model_cfg.max_len:
        raise UserError(f"data.seq_len={config.data.seq_len} exceeds distill.teacher {run}'s "
                        f"max_len={model_cfg.max_len}: the teacher reads the student's rows")
    return teacher


def _mlm_run(run: str) -> tuple[TransformerConfig, str]:
    if not os.path.isdir(run):
        raise FileNotFoundError(f"distill.teacher {run}: no such directory (a plm_jax masked-LM pretraining run)")
    if not RunDir(run).is_pretraining():
        raise UserError(f"distill.teacher {run}: not a plm_jax pretraining run (config.json and checkpoints/)")
    from plm_jax.tasks.starting_point import plm_jax_run_config

    saved, model_cfg, tokenizer = plm_jax_run_config(run)
    if saved.get("objective", "mlm") != "mlm":
        raise UserError(f"distill.teacher {run} is a run of objective={saved.get('objective')!r}; distill.kind='mlm' "
                        "reads a masked-LM teacher's predictions (distill.kind='relations' reads any encoder)")
    return model_cfg, tokenizer.path


def _relations_teacher(run: str, config: ml_collections.ConfigDict, alpha: float, temperature: float
                       ) -> MlmTeacher:
    from plm_jax.config_base import finetune_config
    from plm_jax.models import layout
    from plm_jax.tasks import starting_point

    start_config = finetune_config()
    start_config.init = run
    start = starting_point.resolve(start_config)  # a plm_jax run, a Hugging Face directory or Hub id, minilm
    model_cfg = start.model_cfg
    if model_cfg.architecture != "encoder" or "encoder" not in (start.params or {}):
        raise UserError(f"distill.teacher {run}: distill.kind='relations' reads an encoder (BERT-style) teacher")
    if model_cfg.scan_layers or bool(config.model.get("scan_layers", False)):
        raise UserError("distill.kind='relations' reads layers one by one: set model.scan_layers=False")
    layers = model_cfg.num_layers
    layer = int(config.distill.teacher_layer)
    if not -layers <= layer < layers:
        raise UserError(f"distill.teacher_layer={layer}: distill.teacher {run} has {layers} layers")
    heads = int(config.distill.relation_heads) or model_cfg.num_heads
    for who, width in (("the teacher", model_cfg.hidden_size), ("the student", int(config.model.hidden_size))):
        if heads <= 0 or width % heads:
            raise UserError(f"distill.relation_heads={heads} does not divide {who}'s width {width}: set "
                            "distill.relation_heads to a common divisor of both widths")
    params = layout.to_unscanned(start.params)["encoder"]
    return MlmTeacher(run, "relations", TeacherEncoder(model_cfg), model_cfg, start.tokenizer.path, alpha,
                      temperature, heads, layer % layers, params)
