"""Using a fine-tuned work directory: `evaluate` a split, `predict` a file of new texts or questions, and
`export` the model as a Hugging Face checkpoint (a pretraining run exports its encoder and MLM head).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from plm_jax.files import write_atomic
from plm_jax.models.heads import finetune_dummy_inputs
from plm_jax.parallel.sharding import batch_sharding, logical_to_shardings, make_mesh, rules_from_config
from plm_jax.tasks import qa
from plm_jax.tasks.classification import TextExample, encode
from plm_jax.tasks.text_tokenizer import load_text_tokenizer
from plm_jax.train import finetune_data as fdata
from plm_jax.train.finetune import FinetunedModel, evaluate_split, restore_best, run_batches
from plm_jax.train.finetune_step import jit_predict


class LoadedRun:
    """A fine-tuning work directory's model with its best parameters, ready to run batches."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.fm = FinetunedModel.load(workdir)
        with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
            self.config = ml_collections.ConfigDict(json.load(f))
        self.task = self.config.task
        self.tokenizer = load_text_tokenizer(self.fm.tokenizer_path)
        self.model = self.fm.module()
        mesh = make_mesh(self.config.mesh)
        rules = rules_from_config(self.config.logical_axis_rules)
        boxed = jax.eval_shape(self.model.init, jax.random.key(0),
                               **finetune_dummy_inputs(self.fm.model_cfg, 1, self.task.seq_len))["params"]
        shardings = logical_to_shardings(boxed, mesh, rules)
        abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                nn.unbox(boxed), shardings)
        self.params = restore_best(workdir, abstract)
        self.data_sharding = batch_sharding(mesh, rules)
        self.predict_step = jit_predict(self.model, self.fm.kind, shardings, self.data_sharding, rules)
        self.batch_size = int(self.config.train.eval_batch_size)

    def outputs(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs for every row of `arrays` (inputs only; no labels needed)."""
        return run_batches(self.predict_step, self.params, arrays, self.fm.kind, self.batch_size,
                           self.data_sharding)[0]


# ---------------------------------------------------------------- evaluate
def evaluate(workdir: str, splits: tuple[str, ...] = ("eval", "test")) -> dict[str, dict[str, float]]:
    """Metrics of the best checkpoint on the configured eval (and test, if any) splits; eval_results.json."""
    run = LoadedRun(workdir)
    task = run.task
    available = [s for s in splits if s == "eval" or getattr(task, f"{s}_split", "") or getattr(task, f"{s}_file")]
    if not available:
        raise ValueError(f"{workdir}: the task configures none of the splits {splits}")
    results = {}
    for name in available:
        split = fdata.load_task_split(task, run.tokenizer, name)
        results[name], _ = evaluate_split(run.predict_step, run.params, split, task, run.batch_size,
                                          run.data_sharding)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "eval_results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return results


# ---------------------------------------------------------------- predict
def _read_texts(path: str, text_a: str, text_b: str) -> Iterator[tuple[str, str | None]]:
    """Texts to label: .txt (one per line), .jsonl ({text_a: .., text_b: ..}), .csv/.tsv (header row)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if ext in (".csv", ".tsv"):
                reader = csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ",")
                for row in reader:
                    if text_a not in row or (text_b and text_b not in row):
                        raise ValueError(f"{path}: no column {text_a!r}{f' / {text_b!r}' if text_b else ''}; "
                                         f"columns: {reader.fieldnames}")
                    yield row[text_a], row[text_b] if text_b else None
            elif ext == ".jsonl":
                for n, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{n}: malformed JSON ({e.msg})") from None
                    if text_a not in obj:
                        raise ValueError(f"{path}:{n}: no key {text_a!r}")
                    yield str(obj[text_a]), str(obj[text_b]) if text_b else None
            else:
                for line in f:
                    if line.strip():
                        yield line.rstrip("\n"), None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None


def _read_questions(path: str) -> list[qa.QAExample]:
    """SQuAD JSON, or JSONL lines {"id"?, "question", "context"}."""
    if path.endswith(".jsonl"):
        examples = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    obj = json.loads(line)
                    if "question" not in obj or "context" not in obj:
                        raise ValueError(f"{path}:{n}: needs keys 'question' and 'context'")
                    examples.append(qa.QAExample(str(obj.get("id", n)), obj["question"], obj["context"], []))
        if not examples:
            raise ValueError(f"{path}: no questions")
        return examples
    return qa.load_squad_json(path)


def predict(workdir: str, input_path: str, output_path: str) -> int:
    """Labels (or answers) every input and writes one JSON object per line to output_path."""
    run = LoadedRun(workdir)
    task, fm = run.task, run.fm
    records: list[dict[str, Any]] = []
    if fm.kind == "qa":
        examples = _read_questions(input_path)
        features = qa.make_features(examples, run.tokenizer, seq_len=task.seq_len, doc_stride=task.doc_stride,
                                    max_query_len=task.max_query_len)
        out = run.outputs({k: getattr(features, k) for k in fdata.INPUT_KEYS})
        preds, nbest = qa.postprocess(examples, features, out["start_logits"], out["end_logits"],
                                      n_best=task.n_best, max_answer_len=task.max_answer_len,
                                      version_2=task.version_2, null_threshold=task.null_threshold)
        for ex in examples:
            top = nbest.get(ex.qid) or [{}]
            records.append({"id": ex.qid, "question": ex.question, "answer": preds[ex.qid],
                            "probability": top[0].get("probability")})
    else:
        texts = list(_read_texts(input_path, task.text_a, task.text_b))
        if not texts:
            raise ValueError(f"{input_path}: no texts")
        arrays = encode([TextExample(a, b, 0.0 if fm.kind == "regression" else 0) for a, b in texts],
                        run.tokenizer, task.seq_len)
        logits = run.outputs(arrays)["logits"]
        for (a, b), row in zip(texts, logits):
            record: dict[str, Any] = {"text_a": a} if b is None else {"text_a": a, "text_b": b}
            if fm.kind == "regression":
                record["prediction"] = float(row[0])
            else:
                p = np.exp(row - row.max())
                p /= p.sum()
                record["label"] = fm.label_names[int(np.argmax(row))]
                record["probabilities"] = {name: round(float(x), 6) for name, x in zip(fm.label_names, p)}
            records.append(record)
    if jax.process_index() == 0:
        write_atomic(output_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return len(records)


# ---------------------------------------------------------------- export
def export_hf(workdir: str, output_dir: str) -> str:
    """A fine-tuned run (best parameters) or a pretraining run (latest) as a Hugging Face BERT directory."""
    from plm_jax.interop.hf_bert import save_hf_checkpoint

    if os.path.isfile(os.path.join(workdir, "model.json")):
        fm = FinetunedModel.load(workdir)
        if fm.model_cfg.architecture != "encoder":
            raise ValueError(f"{workdir} fine-tuned a model.architecture={fm.model_cfg.architecture!r} model; "
                             "`export` writes Hugging Face BERT checkpoints (architecture 'encoder') only")
        run = LoadedRun(workdir)
        tok_dir = os.path.dirname(run.fm.tokenizer_path)
        files = [os.path.join(tok_dir, n) for n in sorted(os.listdir(tok_dir))]
        id2label = dict(enumerate(run.fm.label_names)) if run.fm.kind == "classification" else None
        problem = {"classification": "single_label_classification", "regression": "regression"}.get(run.fm.kind)
        save_hf_checkpoint(output_dir, jax.device_get(run.params), run.fm.model_cfg, id2label=id2label,
                           problem_type=problem, tokenizer_files=files)
        return f"{run.fm.kind} model, best checkpoint"
    from plm_jax.train.starting_point import plm_jax_run_params

    model_cfg, tokenizer, params = plm_jax_run_params(workdir, heads=("encoder", "pooler", "mlm_head"))
    save_hf_checkpoint(output_dir, params, model_cfg, tokenizer_files=[tokenizer.path])
    return "masked-LM model, latest checkpoint"


def run_kind(workdir: str) -> str:
    """The kind of fine-tune a work directory holds, or "pretrain" for a pretraining run."""
    if os.path.isfile(os.path.join(workdir, "model.json")):
        return FinetunedModel.load(workdir).kind
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        return "pretrain"
    raise FileNotFoundError(f"{workdir} is neither a fine-tuning nor a pretraining work directory")


# ---------------------------------------------------------------- generate (causal LM)
def generate_samples(workdir: str, input_path: str, output_path: str, *, max_new_tokens: int = 64,
                     temperature: float = 0.8, top_k: int = 0, top_p: float = 0.95, beam_size: int = 1,
                     seed: int = 0) -> int:
    """Continues each line of a text file (a prompt; an empty line starts a new document) with the latest
    checkpoint of a causal-LM pretraining run; one JSON object per line: {"prompt", "continuation"}."""
    from plm_jax.models.generation import CausalGenerator, strip_after_eos
    from plm_jax.train.starting_point import plm_jax_run_params

    if run_kind(workdir) != "pretrain":
        raise ValueError(f"{workdir} is a fine-tune; `generate` continues text with a causal-LM pretraining run")
    model_cfg, tokenizer, params = plm_jax_run_params(workdir, heads=("embeddings", "decoder", "lm_head"))
    if model_cfg.architecture != "decoder":
        raise ValueError(f"{workdir} trained a model.architecture={model_cfg.architecture!r}; `generate` needs a "
                         "causal LM (objective causal_lm)")
    if not os.path.isfile(input_path):
        raise FileNotFoundError(f"input file not found: {input_path}")
    try:
        with open(input_path, encoding="utf-8") as f:
            prompts = [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError:
        raise ValueError(f"{input_path}: not UTF-8 text") from None
    if not prompts:
        raise ValueError(f"{input_path}: no prompts")
    generator = CausalGenerator(model_cfg, params, eos_id=tokenizer.sep_id)
    tokens = generator([[tokenizer.cls_id, *tokenizer.encode(p)] for p in prompts], max_new_tokens=max_new_tokens,
                       seed=seed, temperature=temperature, top_k=top_k, top_p=top_p, beam_size=beam_size)
    records = [{"prompt": p, "continuation": tokenizer.decode(ids)}
               for p, ids in zip(prompts, strip_after_eos(tokens, tokenizer.sep_id, tokenizer.pad_id))]
    if jax.process_index() == 0:
        write_atomic(output_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return len(records)
