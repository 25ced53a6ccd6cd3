"""Using a finished run: `evaluate` its splits, `predict` a file of new inputs, `export` it to Hugging Face,
`generate` text with a causal LM. Parameters are read without building an optimizer or a train step.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax

from plm_jax.errors import UserError
from plm_jax.files import write_atomic
from plm_jax.run import LoadedRun, int8_dir, load
from plm_jax.train.rundir import BEST, CHECKPOINTS, RunDir


def _finetune(workdir: str, command: str, int8: bool = False) -> LoadedRun:
    """A fine-tune's task and best parameters; a pretraining run or another directory is refused by name."""
    rundir = RunDir(workdir)
    if not rundir.is_finetune() and os.path.isdir(rundir.file(CHECKPOINTS)):
        raise UserError(f"{workdir} is a pretraining run; `{command}` needs a fine-tune (its held-out metrics are "
                         "in metrics.jsonl; `generate` continues text with a causal-LM run)")
    rundir.model_info()  # names a directory that is not a fine-tune
    return load(workdir, int8=int8)


def evaluate(workdir: str, splits: tuple[str, ...] = ("eval", "test"), int8: bool = False
             ) -> dict[str, dict[str, Any]]:
    """Metrics of the best checkpoint on the configured eval (and test, if any) splits; eval_results.json
    (`int8`: of its int8 weights, eval_results_int8.json, with the sizes on disk of both)."""
    run = _finetune(workdir, "evaluate", int8)
    available = [s for s in splits if s in run.task.eval_splits()]
    if not available:
        raise UserError(f"{workdir}: the task configures none of the splits {splits}")
    results: dict[str, Any] = {name: run.task.evaluate(run.params, name, run.setup.steps()) for name in available}
    if int8:
        rundir = RunDir(workdir)
        results["_size_on_disk"] = {"float_bytes": disk_bytes(rundir.file(BEST)),
                                    "int8_bytes": disk_bytes(int8_dir(rundir))}
    if jax.process_index() == 0:
        name = "eval_results_int8.json" if int8 else "eval_results.json"
        write_atomic(os.path.join(workdir, name), json.dumps(results, indent=2))
    return results


def disk_bytes(directory: str) -> int:
    """Bytes of the files under `directory`."""
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(directory) for f in files)


def predict(workdir: str, input_path: str, output_path: str, int8: bool = False) -> int:
    """The task's predictions for every input of `input_path` (labels, answers, translations) into output_path."""
    run = _finetune(workdir, "predict", int8)
    return run.task.predict_file(run.params, run.setup.steps(), input_path, output_path)


def export_hf(workdir: str, output_dir: str) -> str:
    """A fine-tuned run (best parameters) or a pretraining run (latest) as a Hugging Face BERT directory."""
    from plm_jax.interop.hf_bert import save_hf_checkpoint

    rundir = RunDir(workdir)
    if rundir.is_finetune():
        info = rundir.model_info()
        if info.model_cfg.architecture != "encoder":
            raise UserError(f"{workdir} fine-tuned a model.architecture={info.model_cfg.architecture!r} model; "
                             "`export` writes Hugging Face BERT checkpoints (architecture 'encoder') only")
        if info.kind in ("classification", "regression") and info.pooling != "cls":
            raise UserError(f"{workdir} classifies from task.pooling={info.pooling!r}; Hugging Face's "
                             "BertForSequenceClassification reads [CLS] only, so `export` needs pooling='cls'")
        run = load(workdir)
        tok_dir = os.path.dirname(info.tokenizer_path)
        files = [os.path.join(tok_dir, n) for n in sorted(os.listdir(tok_dir))]
        id2label = dict(enumerate(info.label_names)) if info.kind == "classification" else None
        problem = {"classification": "single_label_classification", "regression": "regression"}.get(info.kind)
        save_hf_checkpoint(output_dir, jax.device_get(run.params), info.model_cfg, id2label=id2label,
                           problem_type=problem, tokenizer_files=files)
        return f"{info.kind} model, best checkpoint"
    from plm_jax.tasks.starting_point import plm_jax_run_params

    model_cfg, tokenizer, params = plm_jax_run_params(workdir, heads=("encoder", "pooler", "mlm_head"))
    save_hf_checkpoint(output_dir, params, model_cfg, tokenizer_files=[tokenizer.path])
    return "masked-LM model, latest checkpoint"


def run_kind(workdir: str) -> str:
    """The kind of fine-tune a work directory holds, or "pretrain" for a pretraining run."""
    return RunDir(workdir).kind()


def generate_samples(workdir: str, input_path: str, output_path: str, *, max_new_tokens: int = 64,
                     temperature: float = 0.8, top_k: int = 0, top_p: float = 0.95, beam_size: int = 1,
                     seed: int = 0) -> int:
    """Continues each line of a text file (a prompt; an empty line starts a new document) with the latest
    checkpoint of a causal-LM pretraining run; one JSON object per line: {"prompt", "continuation"}."""
    from plm_jax.models.generation import CausalGenerator, strip_after_eos
    from plm_jax.tasks.starting_point import plm_jax_run_params

    if run_kind(workdir) != "pretrain":
        raise UserError(f"{workdir} is a fine-tune; `generate` continues text with a causal-LM pretraining run")
    model_cfg, tokenizer, params = plm_jax_run_params(workdir, heads=("embeddings", "decoder", "lm_head"))
    if model_cfg.architecture != "decoder":
        raise UserError(f"{workdir} trained a model.architecture={model_cfg.architecture!r}; `generate` needs a "
                         "causal LM (objective causal_lm)")
    if not os.path.isfile(input_path):
        raise FileNotFoundError(f"input file not found: {input_path}")
    try:
        with open(input_path, encoding="utf-8") as f:
            prompts = [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError:
        raise UserError(f"{input_path}: not UTF-8 text") from None
    if not prompts:
        raise UserError(f"{input_path}: no prompts")
    generator = CausalGenerator(model_cfg, params, eos_id=tokenizer.sep_id)
    tokens = generator([[tokenizer.cls_id, *tokenizer.encode(p)] for p in prompts], max_new_tokens=max_new_tokens,
                       seed=seed, temperature=temperature, top_k=top_k, top_p=top_p, beam_size=beam_size)
    records = [{"prompt": p, "continuation": tokenizer.decode(ids)}
               for p, ids in zip(prompts, strip_after_eos(tokens, tokenizer.sep_id, tokenizer.pad_id))]
    if jax.process_index() == 0:
        write_atomic(output_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return len(records)
