"""Machine translation as a fine-tuning task: teacher-forced token cross-entropy on an encoder-decoder,
BLEU and chrF (sacrebleu) of beam-search translations after each epoch, best by BLEU.

Starting points: random weights, a span-corruption run (the whole model) or an MLM run (BERT2BERT;
tasks/seq2seq_init.py). Batches of similar lengths, cut to their longest row, keep padding out of the steps.
Data loading and encoding: tasks/translation.py. The test split's translations go to test_translations.txt.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from tqdm import tqdm

from plm_jax.data.text_tokenizer import TextTokenizer
from plm_jax.errors import UserError
from plm_jax.evaluate.bleu import corpus_scores
from plm_jax.files import write_atomic
from plm_jax.models.encoder_decoder import EncoderDecoder, seq2seq_dummy_inputs
from plm_jax.models.generation import Seq2SeqGenerator, strip_after_eos
from plm_jax.tasks import translation
from plm_jax.tasks.finetuning import FinetuneTask, Split, epoch_order, eval_batches, train_rows
from plm_jax.tasks.objectives import get_objective
from plm_jax.tasks.pretraining import token_metrics
from plm_jax.tasks.starting_point import StartingPoint
from plm_jax.train.rundir import ModelInfo
from plm_jax.train.task import Batch, Steps

log = logging.getLogger("plm_jax")
INPUT_KEYS = ("encoder_input_ids", "encoder_segment_ids", "encoder_positions", "decoder_input_ids",
              "decoder_target_ids", "decoder_segment_ids", "decoder_positions", "decoder_weights")
SOURCE_KEYS = INPUT_KEYS[:3]


class TranslationTask(FinetuneTask):
    input_keys = INPUT_KEYS
    throughput_unit = "tokens"  # source + target tokens
    default_main_metric = "bleu"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.main_metric = "bleu"
        self.plot_keys = ("loss", "bleu")
        self.objective = get_objective("seq2seq", self.model_cfg)
        if "train" in self.splits:
            arrays = self.splits["train"].arrays
            self.lengths = tuple(np.maximum((arrays["encoder_segment_ids"] != 0).sum(1),
                                            (arrays["decoder_segment_ids"] != 0).sum(1)).tolist())

    @classmethod
    def validate(cls, config: Any) -> None:
        translation.validate_translation_config(config.task)
        train = config.train
        for key in ("batch_size", "eval_batch_size", "epochs", "log_every", "grad_accum_steps", "keep_checkpoints"):
            if train[key] <= 0:
                raise UserError(f"train.{key} must be positive, got {train[key]}")
        if config.task.beam_size <= 0:
            raise UserError(f"task.beam_size must be positive, got {config.task.beam_size}")
        if train.batch_size % (train.grad_accum_steps * jax.process_count()):
            raise UserError(f"train.batch_size={train.batch_size} does not split into {jax.process_count()} "
                             f"processes x train.grad_accum_steps={train.grad_accum_steps} microbatches")

    @classmethod
    def tokenizer_text(cls, config: Any) -> tuple[Iterator[str], int, dict[str, Any]]:
        """One vocabulary for both languages: the training text of each side, model.vocab_size pieces."""
        options = dict(character_coverage=float(config.task.character_coverage),
                       byte_fallback=bool(config.task.byte_fallback))
        return translation.iter_tokenizer_text(config.task, int(config.seed)), int(config.model.vocab_size), options

    @classmethod
    def starting_point(cls, config: Any) -> StartingPoint:
        from plm_jax.tasks import seq2seq_init

        if config.get("init_layers"):
            raise UserError("init_layers is for encoder or decoder fine-tunes; a translation model keeps its init's "
                            "layers")
        return seq2seq_init.resolve(config)

    @classmethod
    def check_start(cls, config: Any, start: StartingPoint) -> None:
        for key in ("max_source_len", "max_target_len"):
            if config.task[key] > start.model_cfg.max_len:
                raise UserError(f"task.{key}={config.task[key]} exceeds the model's max_len={start.model_cfg.max_len}")

    @classmethod
    def info_for(cls, config: Any, start: StartingPoint, labels: tuple[str, ...]) -> ModelInfo:
        return ModelInfo(start.model_cfg, "translation", (), start.tokenizer.path)

    def build_model(self) -> nn.Module:
        return EncoderDecoder(self.model_cfg)

    def dummy_inputs(self) -> dict[str, Any]:
        task = self.config.task
        return seq2seq_dummy_inputs(self.model_cfg, 1, int(task.max_source_len), int(task.max_target_len))

    def load_split(self, name: str) -> Split:
        task = self.config.task
        pairs = translation.load_pairs(task, name, int(self.config.seed))
        arrays = translation.encode_pairs(pairs, self.tokenizer, task, name)
        log.info("translation %s: %d pairs (%d truncated)", name, len(pairs), int(arrays["truncated"].sum()))
        return Split(name, {k: arrays[k] for k in INPUT_KEYS}, extra=[p.target for p in pairs])

    def initial_params(self, params: Any, param_shardings: Any) -> Any:
        from plm_jax.tasks import seq2seq_init

        if self.start is None or self.start.params is None:
            return params
        return seq2seq_init.graft_partial(params, self.start.params, param_shardings)

    # ------------------------------------------------------------ pure functions
    def loss_sums(self, params: Any, batch: Batch, *, deterministic: bool, rngs: dict | None = None):
        return self.objective.loss_sums(self.model, params, batch, deterministic=deterministic, rngs=rngs)

    def predict(self, params: Any, batch: Batch) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------ batches
    def batch(self, arrays: dict[str, np.ndarray], rows: np.ndarray) -> Batch:
        """Rows < 0 are padding: their target weights are 0. With train.length_bucket > 0 the batch is cut to its
        longest row rounded up to a multiple of it (a few shapes, each compiled once)."""
        return batch_of(arrays, rows, int(self.config.train.length_bucket))

    def train_rows(self, step: int) -> np.ndarray:
        return length_bucketed_rows(int(self.config.seed), step, self.schedule.steps_per_epoch,
                                    int(self.config.train.batch_size), self.lengths, int(self.config.train.sort_window))

    def count(self, batch: Batch) -> int:
        return int(np.count_nonzero(batch["encoder_segment_ids"]) + batch["decoder_weights"].sum())

    # ------------------------------------------------------------ evaluation
    def generator(self, params: Any, data_sharding: Any = None) -> Seq2SeqGenerator:
        task = self.config.task
        return Seq2SeqGenerator(self.model_cfg, params, max_len=int(task.max_target_len), bos_id=self.tokenizer.cls_id,
                                eos_id=self.tokenizer.sep_id, beam_size=int(task.beam_size),
                                length_penalty=float(task.length_penalty), data_sharding=data_sharding,
                                banned_ids=(self.tokenizer.unk_id,))

    def evaluate(self, params: Any, split: str, steps: Steps) -> dict[str, Any]:
        """Teacher-forced loss, then BLEU and chrF of beam-search translations (of the first
        task.max_bleu_examples pairs; 0 = all)."""
        data = self.split(split)
        arrays, references = data.arrays, data.extra
        eval_bs = int(self.config.train.eval_batch_size)
        totals: dict[str, float] = {}
        for rows in eval_batches(arrays["encoder_input_ids"].shape[0], eval_bs):
            for k, v in jax.device_get(steps.eval_sums(params, steps.to_global(self.batch(arrays, rows)))).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        metrics: dict[str, Any] = {k: v for k, v in token_metrics(totals).items() if k != "tokens"}
        limit = int(self.config.task.max_bleu_examples) or len(references)
        hyps = translate_arrays(self.generator(params, steps.data_sharding), {k: v[:limit] for k, v in arrays.items()},
                                self.tokenizer, eval_bs, desc=f"beam search ({split})")
        scores = corpus_scores(hyps, references[:limit])
        metrics.update(bleu=scores["bleu"], chrf=scores["chrf"], bleu_sentences=limit)
        metrics["_signatures"] = {"bleu": scores["bleu_signature"], "chrf": scores["chrf_signature"]}
        if split == "test" and self.workdir and jax.process_index() == 0:
            write_atomic(os.path.join(self.workdir, "test_translations.txt"), "".join(h + "\n" for h in hyps))
        return metrics

    def predict_file(self, params: Any, steps: Steps, input_path: str, output_path: str) -> int:
        """Translates every line of a UTF-8 text file (one sentence per line), line for line."""
        if not os.path.isfile(input_path):
            raise FileNotFoundError(f"input file not found: {input_path}")
        pairs = [translation.TranslationPair(text, "-", f"{input_path}:{n}")
                 for n, text in enumerate(translation._lines(input_path), start=1)]
        for pair in pairs:
            if not pair.source.strip():
                raise UserError(f"{pair.where}: empty line (one sentence per line; remove blank lines)")
        if not pairs:
            raise UserError(f"{input_path}: no sentences")
        arrays = translation.encode_pairs(pairs, self.tokenizer, self.config.task, "predict")
        hyps = translate_arrays(self.generator(params), arrays, self.tokenizer, int(self.config.train.eval_batch_size))
        if jax.process_index() == 0:
            write_atomic(output_path, "".join(h + "\n" for h in hyps))
        return len(hyps)


def batch_of(arrays: dict[str, np.ndarray], rows: np.ndarray, bucket: int = 0) -> dict[str, np.ndarray]:
    """Rows < 0 are padding: their target weights are 0, so they add nothing to a loss. With `bucket` > 0 the
    batch is cut to its longest row rounded up to a multiple of `bucket`."""
    batch = {k: v[np.maximum(rows, 0)] for k, v in arrays.items()}
    batch["decoder_weights"] = batch["decoder_weights"] * (rows >= 0)[:, None]
    if bucket:
        for prefix in ("encoder", "decoder"):
            full = batch[f"{prefix}_segment_ids"].shape[1]
            longest = int((batch[f"{prefix}_segment_ids"] != 0).sum(axis=1).max())
            keep = min(full, -(-max(longest, 1) // bucket) * bucket)
            for k in batch:
                if k.startswith(prefix):
                    batch[k] = batch[k][:, :keep]
    return batch


@functools.lru_cache(maxsize=2)
def _epoch_batches(seed: int, epoch: int, steps_per_epoch: int, batch_size: int, lengths: tuple[int, ...],
                   window: int) -> tuple[np.ndarray, ...]:
    """An epoch's batches of similar lengths: the epoch's permutation cut into windows of `window` batches,
    each window sorted by length and cut into batches, and the batches shuffled (fairseq / tensor2tensor style).
    A function of (seed, epoch) only, so a resumed run gets the same batches."""
    order = epoch_order(seed, epoch, len(lengths))[: steps_per_epoch * batch_size]
    length_of = np.asarray(lengths)
    batches = []
    for start in range(0, len(order), batch_size * window):
        part = order[start : start + batch_size * window]
        part = part[np.argsort(length_of[part], kind="stable")]
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    shuffle = np.random.default_rng([seed, epoch, 1]).permutation(len(batches))
    return tuple(batches[i] for i in shuffle)


def length_bucketed_rows(seed: int, step: int, steps_per_epoch: int, batch_size: int, lengths: tuple[int, ...],
                         window: int) -> np.ndarray:
    """The rows of train step `step`: random batches (window 0) or length-bucketed ones."""
    if not window:
        return train_rows(seed, step, steps_per_epoch, batch_size, len(lengths))
    epoch, i = divmod(step, steps_per_epoch)
    return _epoch_batches(seed, epoch, steps_per_epoch, batch_size, lengths, window)[i]


def translate_arrays(generator: Seq2SeqGenerator, arrays: dict[str, np.ndarray], tokenizer: TextTokenizer,
                     batch_size: int, desc: str = "translate") -> list[str]:
    """Beam-search translations of every row (padded batches of one shape: one compilation)."""
    out: list[str] = []
    n = arrays["encoder_input_ids"].shape[0]
    for rows in tqdm(list(eval_batches(n, batch_size)), desc=desc, unit="batch", leave=False,
                     disable=jax.process_index() != 0):
        take = np.maximum(rows, 0)
        tokens = generator(*(arrays[k][take] for k in SOURCE_KEYS))
        texts = [tokenizer.decode(ids) for ids in strip_after_eos(tokens, tokenizer.sep_id, tokenizer.pad_id)]
        out.extend(t for t, r in zip(texts, rows) if r >= 0)
    return out
