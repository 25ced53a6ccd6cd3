"""Self-supervised pretraining as a task: masked LM (BERT), causal LM (GPT) or span corruption (T5).

The objective (tasks/objectives.py) says which model, batch fields and loss; this module adds the token stream:
a tf.data pipeline over packed rows whose masks are functions of (seed, row index), so the data position saved
with a checkpoint is the number of rows consumed. The SentencePiece model is trained into the run directory
unless `data.tokenizer` names one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from plm_jax.data.tokenizer import DEFAULT_CHARACTER_COVERAGE, Tokenizer, load_tokenizer, train_tokenizer
from plm_jax.errors import UserError
from plm_jax.models.config import TransformerConfig
from plm_jax.tasks import mlm_distillation
from plm_jax.tasks.distillation import same_file
from plm_jax.tasks.objectives import get_objective, vocab_needed
from plm_jax.train.rundir import RunDir
from plm_jax.train.task import Batch, Schedule, Steps, Task

log = logging.getLogger("plm_jax")
_TITLES = {"mlm": "masked-LM", "causal_lm": "causal-LM", "span_corruption": "span corruption"}


class PretrainingTask(Task):
    throughput_unit = "tokens"
    host_local_batches = True  # each host reads its own rows of the token stream
    plot_keys = ("loss", "accuracy")

    def __init__(self, config: ml_collections.ConfigDict):
        """The model and shapes from the config alone: `bench` and `compile-only` need no data."""
        self.config = config
        self.name = config.get("objective", "mlm")
        # continued pretraining: the init run's tokenizer, copied into the work directory by `prepare`
        self.init_tokenizer = adopt_init_run(config) if config.get("init") else None
        self.plot_title = _TITLES.get(self.name, self.name)
        self.model_cfg = validate(config, data=False)
        self.objective = get_objective(self.name, self.model_cfg)
        self.model = self.objective.model(self.model_cfg)
        self.init_inputs = self.objective.init_inputs(config.data)
        self.teacher = mlm_distillation.resolve(config)  # general distillation: a frozen MLM teacher
        if self.teacher is not None:
            if self.init_tokenizer and not same_file(self.init_tokenizer, self.teacher.tokenizer_path):
                raise UserError(f"init={config.init!r} and distill.teacher={self.teacher.run!r} use other tokenizers; "
                                "the student reads the teacher's inputs")
            self.frozen = self.teacher.frozen(self.init_inputs)
        train = config.train
        self.schedule = Schedule(total_steps=int(train.steps), eval_every=int(train.eval_every),
                                 log_every=int(train.log_every), checkpoint_every=int(train.checkpoint_every),
                                 checkpoint_at_eval=False, eval_at_start=bool(train.get("eval_at_start", True)))
        self.optimizer_config = train
        self.tokenizer: Tokenizer | None = None
        self._eval_batches: list[Batch] | None = None
        self._start: tuple[int, int] = (0, 0)  # (step, rows consumed) the train batches started from

    def describe(self) -> str:
        return f"{self.name} pretraining" + (f", distilled from {self.teacher.run}" if self.teacher else "")

    @classmethod
    def tokenizer_text(cls, config: Any) -> tuple[Iterator[str], int, dict[str, Any]]:
        """The train split of config.data (at most data.tokenizer_max_docs documents), less the sentinels."""
        from plm_jax.data import sources

        docs = sources.iter_documents(config.data, "train", config.data.tokenizer_max_docs)
        return docs, tokenizer_pieces(config), tokenizer_options(config)

    def initial_params(self, params: Any, param_shardings: Any) -> Any:
        """Continued pretraining starts from every subtree of the init run, its prediction head included."""
        if not self.config.get("init"):
            return params
        from plm_jax.tasks import starting_point

        _, _, pretrained = starting_point.plm_jax_run_params(self.config.init, heads=tuple(params))
        return starting_point.graft(params, pretrained, param_shardings)

    def batch_shapes(self, batch_size: int) -> dict[str, tuple[tuple[int, ...], Any]]:
        return self.objective.batch_shapes(self.config.data, batch_size)

    def loss_sums(self, params: Any, batch: Batch, *, deterministic: bool, rngs: dict | None = None,
                  frozen: Any = None):
        if frozen is None:
            return self.objective.loss_sums(self.model, params, batch, deterministic=deterministic, rngs=rngs)
        return self.teacher.loss_sums(self.objective, self.model, params, batch, deterministic, rngs, frozen)

    # ------------------------------------------------------------ the run
    def prepare(self, workdir: str) -> None:
        from plm_jax.data import sources

        config = self.config
        validate(config)
        if config.data.source != "tfds":
            log.info("data: %s", sources.scan_local_files(config.data))
        run = RunDir(workdir)
        resolved = check_config(config, run)
        os.makedirs(workdir, exist_ok=True)
        inherited = self.init_tokenizer or (self.teacher.tokenizer_path if self.teacher and not
                                            config.data.tokenizer else None)
        if inherited and not any(os.path.exists(os.path.join(workdir, n)) for n in RUN_TOKENIZER_FILES):
            from plm_jax.data.wordpiece import is_wordpiece_path

            name = os.path.basename(inherited) if is_wordpiece_path(inherited) else "tokenizer.model"
            shutil.copyfile(inherited, os.path.join(workdir, name))  # the run needs no init, no teacher
        self.tokenizer = prepare_tokenizer(config, workdir)
        # once the inputs are checked; a first start that failed before saving a step pins nothing
        run.write_config(resolved, replace=not run.has_trained())

    def _dataset_args(self) -> dict[str, Any]:
        return dict(batch_size=int(self.config.train.batch_size), seed=int(self.config.seed),
                    process_index=jax.process_index(), process_count=jax.process_count())

    def train_batches(self, start_step: int, position: dict[str, Any]) -> Iterator[Batch]:
        from plm_jax.data import pipeline

        rows = int(position.get("rows_consumed", 0))
        self._start = (start_step, rows)
        return pipeline.pretrain_dataset(self.name, self.config.data, self.tokenizer, split="train", repeat=True,
                                         start_row=rows, **self._dataset_args()).as_numpy_iterator()

    def position(self, step: int) -> dict[str, Any]:
        """A resumed run skips exactly the rows this run consumed."""
        start_step, start_rows = self._start
        batch = int(self.config.train.batch_size)
        return {"rows_consumed": start_rows + (step - start_step) * batch, "global_batch": batch}

    def count(self, batch: Batch) -> int:
        return int(np.count_nonzero(batch[self.objective.token_key])) * jax.process_count()

    def eval_splits(self) -> tuple[str, ...]:
        return ("eval",)

    def evaluate(self, params: Any, split: str, steps: Steps) -> dict[str, Any]:
        """Token loss, accuracy and perplexity on the same held-out batches (same masks) every time."""
        if self._eval_batches is None:
            from plm_jax.data import pipeline

            dataset = pipeline.pretrain_dataset(self.name, eval_data_config(self.config.data), self.tokenizer,
                                                split="eval", repeat=False, **self._dataset_args())
            self._eval_batches = [
                {k: jax.make_array_from_process_local_data(steps.data_sharding, v) for k, v in b.items()}
                for b in dataset.take(int(self.config.train.eval_batches)).as_numpy_iterator()]
            if not self._eval_batches:
                raise UserError(f"the eval split holds less than one batch of {self.config.train.batch_size} rows; "
                                 "lower train.batch_size or add text")
        totals: dict[str, float] = {}
        for batch in self._eval_batches:
            for k, v in jax.device_get(steps.eval_sums(params, batch)).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        return token_metrics(totals)


def token_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Token loss, accuracy and perplexity from summed statistics."""
    weight = max(float(sums["weight_sum"]), 1.0)
    loss = float(sums["loss_sum"]) / weight
    return {"loss": loss, "accuracy": float(sums["correct_sum"]) / weight,
            "perplexity": float(np.exp(min(loss, 50.0))), "tokens": float(sums["weight_sum"])}


# ---------------------------------------------------------------- checks, config and tokenizer
def adopt_init_run(config: Any) -> str:
    """Continued pretraining: the init run's model replaces the config's (the config's data is what the run
    continues on); returns the init's tokenizer, which the run copies and uses."""
    from plm_jax.tasks.starting_point import plm_jax_run_config

    init = str(config.init)
    if not RunDir(init).is_pretraining():
        raise UserError(f"init={init!r}: not a plm_jax pretraining run directory (config.json and checkpoints/)")
    if config.data.tokenizer:
        raise UserError(f"data.tokenizer={config.data.tokenizer!r}: continued pretraining uses its init run's "
                        "tokenizer; leave data.tokenizer empty")
    saved, _, tokenizer = plm_jax_run_config(init)
    if saved.get("objective", "mlm") != config.get("objective", "mlm"):
        raise UserError(f"init={init!r} is a run of objective={saved.get('objective', 'mlm')!r}; continued "
                        f"pretraining keeps the objective, and this config's is {config.get('objective', 'mlm')!r}")
    config.model = saved.model
    return tokenizer.path


def validate(config: Any, data: bool = True) -> TransformerConfig:
    """The config's model for its objective, and its train keys; `data`: the masking or span settings too (these
    checks need TensorFlow, which `bench` and `compile-only` do without)."""
    model_cfg = TransformerConfig.from_config(config.model)
    objective = config.get("objective", "mlm")
    get_objective(objective, model_cfg)
    if data:
        from plm_jax.data import masking, span_corruption
    if data and objective == "mlm":
        masking.validate_mlm_config(config.data)
        masking.validate_mlm_config(eval_data_config(config.data))
    elif data and objective == "span_corruption":
        span_corruption.validate_span_config(config.data)
    if config.data.seq_len > model_cfg.max_len:
        raise UserError(f"data.seq_len={config.data.seq_len} exceeds model.max_len={model_cfg.max_len}")
    for key in ("steps", "log_every", "eval_every", "checkpoint_every", "eval_batches", "grad_accum_steps"):
        if config.train[key] <= 0:
            raise UserError(f"train.{key} must be positive, got {config.train[key]}")
    if config.train.batch_size % (config.train.grad_accum_steps * jax.process_count()):
        raise UserError(f"train.batch_size={config.train.batch_size} does not split into "
                         f"{jax.process_count()} processes x train.grad_accum_steps="
                         f"{config.train.grad_accum_steps} microbatches")
    return model_cfg


def check_config(config: Any, run: RunDir) -> dict[str, Any]:
    """The run directory remembers its config; a resume with another model shape is refused up front."""
    resolved = json.loads(config.to_json_best_effort())
    saved_config = run.saved_config(if_trained=True)
    if saved_config is not None:
        saved = saved_config.get("model", {})
        saved_objective = saved_config.get("objective", "mlm")
        if saved_objective != resolved.get("objective", "mlm"):
            raise UserError(f"{run.path} holds a run of objective={saved_objective!r}, the config asks for "
                             f"objective={resolved.get('objective')!r}; use a new --workdir")
        defaults = TransformerConfig().to_dict()  # keys added since the run started hold their defaults
        diff = {k: (saved.get(k, defaults.get(k)), v) for k, v in resolved["model"].items()
                if saved.get(k, defaults.get(k)) != v}
        if diff:
            raise UserError(f"{run.path} holds a run of another model shape (saved vs config: {diff}); "
                             "use a new --workdir")
        changed = {k: v for k, v in config_changes(saved_config, resolved).items() if not k.startswith("model.")}
        if changed:
            listed = "; ".join(f"{k}: {was!r} -> {now!r}" for k, (was, now) in changed.items())
            raise UserError(f"{run.path} was started with other settings, and a resume with them would not continue "
                            f"the same run ({listed}); put them back, or start a new --workdir (--init this run to "
                            f"build on it). Keys safe to change on resume: {', '.join(RESUME_SAFE)}")
    return resolved


# What a resume may change: how the run reports, evaluates, saves and is laid out (grad_accum_steps: the same
# update in more microbatches, for a smaller machine); train.steps too, to extend a run (the LR decay then
# stretches from that step on: documented, not bit-exact with a run that had those steps from the start).
RESUME_SAFE = ("train.steps", "train.log_every", "train.eval_every", "train.eval_batches", "train.eval_at_start",
               "train.checkpoint_every", "train.keep_checkpoints", "train.async_checkpoints", "train.profile_steps",
               "train.grad_accum_steps", "mesh.*", "logical_axis_rules", "model.remat", "model.scan_layers",
               "model.attention", "data.tfds_data_dir", "data.tokenizer_max_docs", "data.eval_mask_rate", "bench.*")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_changes(saved: dict[str, Any], resolved: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose value differs from the saved config's, less the RESUME_SAFE ones and keys the run predates."""
    was, now = _flat(saved), _flat(resolved)

    def safe(key: str) -> bool:
        return any(key == s or (s.endswith(".*") and key.startswith(s[:-1])) for s in RESUME_SAFE)

    return {k: (was[k], now.get(k)) for k in was if k in now and was[k] != now[k] and not safe(k)}


def prepare_tokenizer(config: Any, workdir: str) -> Tokenizer:
    """The configured SentencePiece model, or one trained on the training split into the work directory."""
    if config.data.tokenizer:
        tokenizer = load_tokenizer(config.data.tokenizer)
    elif os.path.basename(run_tokenizer_file(workdir)) != "tokenizer.model":  # a teacher's WordPiece vocabulary
        tokenizer = load_tokenizer(run_tokenizer_file(workdir))
    else:
        path = os.path.join(workdir, "tokenizer.model")

        def train() -> None:
            docs, pieces, options = PretrainingTask.tokenizer_text(config)  # what `launch.py tokenizer` trains on
            log.info("training a %d-piece SentencePiece model on the training text -> %s", pieces, path)
            train_tokenizer(docs, pieces, path, seed=config.seed, **options)

        # Process 0 alone decides whether to train: had every host looked for the file itself, a host that found
        # it already written would skip the barrier the others wait at (a race CI once hit).
        if jax.process_index() == 0 and not os.path.exists(path):
            train()
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("plm_jax: tokenizer ready")
            if not os.path.exists(path):  # no shared file system: each host trains the same model
                train()
        tokenizer = load_tokenizer(path)
    objective = config.get("objective", "mlm")
    needed = vocab_needed(objective, tokenizer.vocab_size, config.data)
    if needed != config.model.vocab_size:
        hint = "" if config.data.tokenizer or tokenizer.kind == "wordpiece" else \
            f" (trained earlier into {path}: delete it to train a new one)"
        extra = f" + {needed - tokenizer.vocab_size} sentinels" if needed != tokenizer.vocab_size else ""
        raise UserError(f"tokenizer vocabulary ({tokenizer.vocab_size} pieces{extra}) does not match "
                         f"model.vocab_size={config.model.vocab_size}{hint}")
    return tokenizer


RUN_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "vocab.txt")  # trained here, or inherited


def run_tokenizer_file(workdir: str) -> str:
    """The tokenizer a run directory holds: its SentencePiece model, or the WordPiece vocabulary it inherited from
    a teacher (tokenizer.model when there is none yet)."""
    for name in RUN_TOKENIZER_FILES:
        if os.path.isfile(os.path.join(workdir, name)):
            return os.path.join(workdir, name)
    return os.path.join(workdir, RUN_TOKENIZER_FILES[0])


def tokenizer_options(config: Any) -> dict[str, Any]:
    """train_tokenizer's coverage settings from config.data (configs that predate them get the defaults)."""
    return dict(character_coverage=float(config.data.get("character_coverage", DEFAULT_CHARACTER_COVERAGE)),
                byte_fallback=bool(config.data.get("byte_fallback", True)))


def tokenizer_pieces(config: Any) -> int:
    """SentencePiece vocabulary to train: the model's, less the sentinel ids span corruption appends."""
    return config.model.vocab_size - vocab_needed(config.get("objective", "mlm"), 0, config.data)


def eval_data_config(data_cfg: Any) -> Any:
    """The held-out batches' data config: `eval_mask_rate` lets runs that train at different mask rates be
    compared on one yardstick (MosaicBERT trains at 0.30 and reports accuracy at 0.15)."""
    rate = float(data_cfg.get("eval_mask_rate", 0.0) or 0.0)
    if not 0.0 <= rate <= 1.0:
        raise UserError(f"data.eval_mask_rate must be in (0, 1], or 0 for data.mask_rate; got {rate}")
    if not rate or rate == float(data_cfg.mask_rate):
        return data_cfg
    out = data_cfg.copy_and_resolve_references()
    out.mask_rate = rate
    return out
