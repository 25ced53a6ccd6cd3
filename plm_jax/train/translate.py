"""Machine-translation fine-tuning: teacher-forced training, BLEU with beam search after each epoch, best by BLEU.

The work directory has the layout of every fine-tune (see finetune.py): config.json, model.json, tokenizer/,
checkpoints/, best/, metrics.jsonl, tensorboard/, curves.png, results.json; plus `test_translations.txt` of
the best model, and the sacrebleu signatures in results.json. Re-running the command resumes.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from plm_jax.evaluate.bleu import corpus_scores
from plm_jax.files import write_atomic
from plm_jax.models.encoder_decoder import EncoderDecoder, seq2seq_dummy_inputs
from plm_jax.models.generation import Seq2SeqGenerator, strip_after_eos
from plm_jax.parallel.sharding import batch_sharding, make_mesh, rules_from_config
from plm_jax.tasks import translation
from plm_jax.tasks.text_tokenizer import TextTokenizer
from plm_jax.train import finetune_data as fdata
from plm_jax.train import seq2seq_init
from plm_jax.train import state as state_lib
from plm_jax.train.checkpoint import Checkpointer
from plm_jax.train.finetune import (
    MODEL_FILE,
    FinetunedModel,
    _copy_tokenizer,
    check_workdir,
    close_all,
    keep_best,
    restore_best,
    save_on_signal,
    save_position,
    to_global,
)
from plm_jax.train.metrics_log import MetricWriter
from plm_jax.train.objectives import get_objective
from plm_jax.train.optimizer import make_optimizer
from plm_jax.train.pretrain import StopFlag
from plm_jax.train.step import eval_metrics, jit_steps

log = logging.getLogger("plm_jax")
INPUT_KEYS = ("encoder_input_ids", "encoder_segment_ids", "encoder_positions", "decoder_input_ids",
              "decoder_target_ids", "decoder_segment_ids", "decoder_positions", "decoder_weights")
SOURCE_KEYS = INPUT_KEYS[:3]


def validate(config: Any) -> None:
    translation.validate_translation_config(config.task)
    train = config.train
    for key in ("batch_size", "eval_batch_size", "epochs", "log_every", "grad_accum_steps", "keep_checkpoints"):
        if train[key] <= 0:
            raise ValueError(f"train.{key} must be positive, got {train[key]}")
    if config.task.beam_size <= 0:
        raise ValueError(f"task.beam_size must be positive, got {config.task.beam_size}")
    if train.batch_size % (train.grad_accum_steps * jax.process_count()):
        raise ValueError(f"train.batch_size={train.batch_size} does not split into {jax.process_count()} processes "
                         f"x train.grad_accum_steps={train.grad_accum_steps} microbatches")


def load_split(task: Any, tokenizer: TextTokenizer, split: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Encoded arrays of a split and its reference target texts."""
    pairs = translation.load_pairs(task, split)
    arrays = translation.encode_pairs(pairs, tokenizer, task, split)
    log.info("translation %s: %d pairs (%d truncated)", split, len(pairs), int(arrays["truncated"].sum()))
    return {k: arrays[k] for k in INPUT_KEYS}, [p.target for p in pairs]


def batch_of(arrays: dict[str, np.ndarray], rows: np.ndarray, bucket: int = 0) -> dict[str, np.ndarray]:
    """Rows < 0 are padding: their target weights are 0, so they add nothing to a loss. With `bucket` > 0 the
    batch is cut to its longest row rounded up to a multiple of `bucket` (a few shapes, each compiled once)."""
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
    order = fdata.epoch_order(seed, epoch, len(lengths))[: steps_per_epoch * batch_size]
    length_of = np.asarray(lengths)
    batches = []
    for start in range(0, len(order), batch_size * window):
        part = order[start : start + batch_size * window]
        part = part[np.argsort(length_of[part], kind="stable")]
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    shuffle = np.random.default_rng([seed, epoch, 1]).permutation(len(batches))
    return tuple(batches[i] for i in shuffle)


def train_rows(seed: int, step: int, steps_per_epoch: int, batch_size: int, lengths: tuple[int, ...],
               window: int) -> np.ndarray:
    """The rows of train step `step`: random batches (window 0) or length-bucketed ones."""
    if not window:
        return fdata.train_rows(seed, step, steps_per_epoch, batch_size, len(lengths))
    epoch, i = divmod(step, steps_per_epoch)
    return _epoch_batches(seed, epoch, steps_per_epoch, batch_size, lengths, window)[i]


def translate_arrays(generator: Seq2SeqGenerator, arrays: dict[str, np.ndarray], tokenizer: TextTokenizer,
                     batch_size: int, desc: str = "translate") -> list[str]:
    """Beam-search translations of every row (padded batches of one shape: one compilation)."""
    out: list[str] = []
    n = arrays["encoder_input_ids"].shape[0]
    for rows in tqdm(list(fdata.eval_batches(n, batch_size)), desc=desc, unit="batch", leave=False,
                     disable=jax.process_index() != 0):
        take = np.maximum(rows, 0)
        tokens = generator(*(arrays[k][take] for k in SOURCE_KEYS))
        texts = [tokenizer.decode(ids) for ids in strip_after_eos(tokens, tokenizer.sep_id, tokenizer.pad_id)]
        out.extend(t for t, r in zip(texts, rows) if r >= 0)
    return out


def finetune_translation(config: Any, workdir: str) -> dict[str, Any]:
    validate(config)
    resolved = check_workdir(config, workdir)
    start_time = time.perf_counter()
    task, train_cfg = config.task, config.train
    sp = seq2seq_init.resolve(config)
    model_cfg = sp.model_cfg
    for key in ("max_source_len", "max_target_len"):
        if task[key] > model_cfg.max_len:
            raise ValueError(f"task.{key}={task[key]} exceeds the model's max_len={model_cfg.max_len}")
    splits = {"train": load_split(task, sp.tokenizer, "train")}
    if task.eval_file or (task.source == "tfds" and task.eval_split):
        splits["eval"] = load_split(task, sp.tokenizer, "eval")
    if task.test_file or (task.source == "tfds" and task.test_split):
        splits["test"] = load_split(task, sp.tokenizer, "test")
    train_arrays = splits["train"][0]
    lengths = tuple(np.maximum((train_arrays["encoder_segment_ids"] != 0).sum(1),
                               (train_arrays["decoder_segment_ids"] != 0).sum(1)).tolist())
    n_train, batch_size = train_arrays["encoder_input_ids"].shape[0], int(train_cfg.batch_size)
    if n_train < batch_size:
        raise ValueError(f"the train split holds {n_train} pairs, fewer than train.batch_size={batch_size}")

    os.makedirs(workdir, exist_ok=True)
    tok_rel = _copy_tokenizer(sp.tokenizer, workdir) if jax.process_index() == 0 else ""
    fm = FinetunedModel(model_cfg, "translation", (), tok_rel)
    if jax.process_index() == 0:
        write_atomic(os.path.join(workdir, "config.json"), json.dumps(resolved, indent=2))
        write_atomic(os.path.join(workdir, MODEL_FILE), json.dumps(fm.to_json(), indent=2))

    # ------------------------------------------------ setup: model, optimizer, mesh, steps
    steps_per_epoch = n_train // batch_size
    total_steps = steps_per_epoch * int(train_cfg.epochs)
    opt_cfg = ml_collections.ConfigDict({**train_cfg.to_dict(), "steps": total_steps,
                                         "warmup_steps": round(float(train_cfg.warmup_frac) * total_steps)})
    tx, schedule = make_optimizer(opt_cfg)
    model = EncoderDecoder(model_cfg)
    objective = get_objective("seq2seq", model_cfg)
    mesh = make_mesh(config.mesh)
    rules = rules_from_config(config.logical_axis_rules)
    init_inputs = seq2seq_dummy_inputs(model_cfg, 1, int(task.max_source_len), int(task.max_target_len))
    abstract, shardings = state_lib.state_shardings(model, tx, init_inputs, mesh, rules)
    data_sharding = batch_sharding(mesh, rules)
    dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    train_step, eval_step = jit_steps(model, objective, tx, schedule, shardings, data_sharding, dropout_key,
                                      accum_steps=int(train_cfg.grad_accum_steps), rules=rules)

    # ------------------------------------------------ state
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=train_cfg.keep_checkpoints,
                        use_async=train_cfg.async_checkpoints)
    best_ckpt = Checkpointer(os.path.join(workdir, "best"), keep=1, use_async=False)
    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    latest = ckpt.latest_step()
    best: dict[str, Any] = {}
    if latest is None:
        state = state_lib.init_state(model, tx, init_inputs, shardings, jax.random.key(config.seed))
        if sp.params is not None:
            state = state.replace(params=seq2seq_init.graft_partial(state.params, sp.params, shardings.params))
        log.info("translation from %s (%s): %d pairs, %d epochs x %d steps, %s parameters", sp.source, sp.kind,
                 n_train, train_cfg.epochs, steps_per_epoch, f"{state_lib.count_params(state.params):,}")
    else:
        state, position = ckpt.restore(latest, abstract)
        best = position.get("best") or {}
        writer.truncate_after(latest)
        log.info("resumed from %s at step %d", ckpt.directory / str(latest), latest)

    eval_bs = int(train_cfg.eval_batch_size)

    def generator(params: Any) -> Seq2SeqGenerator:
        return Seq2SeqGenerator(model_cfg, params, max_len=int(task.max_target_len), bos_id=sp.tokenizer.cls_id,
                                eos_id=sp.tokenizer.sep_id, beam_size=int(task.beam_size),
                                length_penalty=float(task.length_penalty), data_sharding=data_sharding)

    def evaluate(params: Any, name: str) -> tuple[dict[str, Any], list[str]]:
        arrays, references = splits[name]
        totals: dict[str, float] = {}
        for rows in fdata.eval_batches(arrays["encoder_input_ids"].shape[0], eval_bs):
            batch = to_global(batch_of(arrays, rows, int(train_cfg.length_bucket)), data_sharding)
            for k, v in jax.device_get(eval_step(params, batch)).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        metrics: dict[str, Any] = {k: v for k, v in eval_metrics(totals).items() if k != "tokens"}
        limit = int(task.max_bleu_examples) or len(references)
        hyps = translate_arrays(generator(params), {k: v[:limit] for k, v in arrays.items()}, sp.tokenizer,
                                eval_bs, desc=f"beam search ({name})")
        scores = corpus_scores(hyps, references[:limit])
        metrics.update(bleu=scores["bleu"], chrf=scores["chrf"], bleu_sentences=limit)
        metrics["_signatures"] = {"bleu": scores["bleu_signature"], "chrf": scores["chrf_signature"]}
        return metrics, hyps

    def log_eval(step: int, metrics: dict[str, Any]) -> None:
        writer.write(step, "eval", {k: v for k, v in metrics.items() if not k.startswith("_")})

    stop = StopFlag()
    step = int(jax.device_get(state.step))
    pending: list[dict[str, jax.Array]] = []
    bar = tqdm(total=total_steps, initial=step, desc="translate-finetune", unit="step", dynamic_ncols=True,
               disable=jax.process_index() != 0)
    tokens_since, time_since = 0, time.perf_counter()
    try:
        while step < total_steps:
            if (jax.process_count() == 1 or step % train_cfg.log_every == 0) and stop.agreed():
                break
            rows = train_rows(config.seed, step, steps_per_epoch, batch_size, lengths, int(train_cfg.sort_window))
            batch = batch_of(train_arrays, rows, int(train_cfg.length_bucket))
            state, metrics = train_step(state, to_global(batch, data_sharding))
            pending.append(metrics)
            tokens_since += int(np.count_nonzero(batch["encoder_segment_ids"]) + batch["decoder_weights"].sum())
            step += 1
            bar.update(1)
            if step % train_cfg.log_every == 0 or step % steps_per_epoch == 0:
                fetched = jax.device_get(pending)
                now = time.perf_counter()
                means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                means["tokens_per_sec"] = tokens_since / (now - time_since)  # source + target tokens
                writer.write(step, "train", means)
                bar.set_postfix(loss=f"{means['loss']:.3f}", tok_s=f"{means['tokens_per_sec']:,.0f}")
                pending, tokens_since, time_since = [], 0, now
            end_of_epoch = step % steps_per_epoch == 0
            if end_of_epoch and "eval" in splits:
                metrics, _ = evaluate(state.params, "eval")
                metrics["epoch"] = step // steps_per_epoch
                log_eval(step, metrics)
                bar.write(f"epoch {metrics['epoch']} (step {step}): eval loss {metrics['loss']:.3f}, "
                          f"BLEU {metrics['bleu']:.2f}, chrF {metrics['chrf']:.2f}")
                best = keep_best(best, step, metrics, "bleu", best_ckpt, state.params)
                writer.plot_finetune("bleu")
            elif end_of_epoch:  # no eval split: the last epoch is the best
                best = keep_best(best, step, {"epoch": step // steps_per_epoch}, "", best_ckpt, state.params)
            save_position(ckpt, state, step, best, end_of_epoch, train_cfg.checkpoint_every)
        save_on_signal(stop, ckpt, state, step, total_steps, best)
    finally:
        close_all(bar, stop, ckpt, best_ckpt, writer)

    results: dict[str, Any] = {"starting_point": {"kind": sp.kind, "source": sp.source}, "task": "translation",
                               "main_metric": "bleu", "steps": step, "total_steps": total_steps,
                               "train_examples": n_train, "best": best}
    if step < total_steps:
        results["interrupted_at"] = step
        return results
    if best.get("metrics"):
        results["eval"] = best["metrics"]  # the best epoch's dev scores: no need to decode the dev set again
    if "test" in splits:
        results["test"], hyps = evaluate(restore_best(workdir, abstract.params), "test")
        if jax.process_index() == 0:
            write_atomic(os.path.join(workdir, "test_translations.txt"), "".join(h + "\n" for h in hyps))
    results["wall_s"] = round(time.perf_counter() - start_time, 1)
    results["curves"] = writer.plot_finetune("bleu")
    if jax.process_index() == 0:
        write_atomic(os.path.join(workdir, "results.json"), json.dumps(results, indent=2))
    return results


# ---------------------------------------------------------------- using a trained translation model
def load_translation_run(workdir: str) -> tuple[FinetunedModel, Any, TextTokenizer, Any]:
    """(model description, saved config, tokenizer, best parameters) of a translation work directory."""
    import flax.linen as nn

    from plm_jax.parallel.sharding import logical_to_shardings
    from plm_jax.tasks.text_tokenizer import load_text_tokenizer

    fm = FinetunedModel.load(workdir)
    if fm.kind != "translation":
        raise ValueError(f"{workdir} holds a {fm.kind} fine-tune, not a translation model")
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        config = ml_collections.ConfigDict(json.load(f))
    mesh = make_mesh(config.mesh)
    rules = rules_from_config(config.logical_axis_rules)
    model = fm.module()
    boxed = jax.eval_shape(model.init, jax.random.key(0), **seq2seq_dummy_inputs(fm.model_cfg, 1, 8, 8))["params"]
    shardings = logical_to_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed),
                            shardings)
    return fm, config, load_text_tokenizer(fm.tokenizer_path), restore_best(workdir, abstract)


def predict_translations(workdir: str, input_path: str, output_path: str) -> int:
    """Translates every line of a UTF-8 text file (one sentence per line) into output_path, line for line."""
    fm, config, tokenizer, params = load_translation_run(workdir)
    task = config.task
    if not os.path.isfile(input_path):
        raise FileNotFoundError(f"input file not found: {input_path}")
    pairs = [translation.TranslationPair(text, "-", f"{input_path}:{n}")
             for n, text in enumerate(translation._lines(input_path), start=1)]
    for pair in pairs:
        if not pair.source.strip():
            raise ValueError(f"{pair.where}: empty line (one sentence per line; remove blank lines)")
    if not pairs:
        raise ValueError(f"{input_path}: no sentences")
    arrays = translation.encode_pairs(pairs, tokenizer, task, "predict")
    generator = Seq2SeqGenerator(fm.model_cfg, params, max_len=int(task.max_target_len), bos_id=tokenizer.cls_id,
                                 eos_id=tokenizer.sep_id, beam_size=int(task.beam_size),
                                 length_penalty=float(task.length_penalty))
    hyps = translate_arrays(generator, arrays, tokenizer, int(config.train.eval_batch_size))
    if jax.process_index() == 0:
        write_atomic(output_path, "".join(h + "\n" for h in hyps))
    return len(hyps)
