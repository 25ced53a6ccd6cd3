"""The full set of config keys for pretraining and fine-tuning, with defaults. Configs in configs/ start from it.

Every key a run can read is here, so that a `--config.x.y=` override naming a key that does not exist fails
with a clear error instead of being ignored.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from plm_jax.data.data_config import default_data_config
from plm_jax.errors import UserError
from plm_jax.models.config import TransformerConfig
from plm_jax.parallel.sharding import DEFAULT_RULES

# The model each objective trains, and the shape conventions of its family (BERT, GPT-2, BART/T5).
_OBJECTIVE_MODELS = {
    "mlm": dict(architecture="encoder"),
    "causal_lm": dict(architecture="decoder", pre_layer_norm=True, type_vocab_size=0, embedding_layer_norm=False,
                      use_pooler=False, layer_norm_eps=1e-5),
    # post-LN with token types like BERT, so that an MLM checkpoint's encoder drops in (BERT2BERT)
    "span_corruption": dict(architecture="encoder_decoder", use_pooler=False),
}


def pretrain_config(objective: str = "mlm") -> ml_collections.ConfigDict:
    """All keys of a pretraining run; `objective` picks the model family: mlm | causal_lm | span_corruption."""
    if objective not in _OBJECTIVE_MODELS:
        raise UserError(f"objective={objective!r}; expected one of {tuple(_OBJECTIVE_MODELS)}")
    config = ml_collections.ConfigDict()
    config.seed = 0  # parameters, dropout, shuffling and masks all derive from it
    config.objective = objective  # mlm (BERT) | causal_lm (GPT) | span_corruption (T5): must match model.architecture
    # A pretraining run of the same objective to continue from (domain- or task-adaptive pretraining, Gururangan et
    # al. 2020): its latest parameters, model shape and tokenizer, with a fresh optimizer and schedule on this
    # config's data; `model` is then the init run's, and its tokenizer is copied into the run. "" = random weights.
    config.init = ""
    # General distillation (masked LM only): a plm_jax MLM run whose masked-token distribution the student also
    # learns (tasks/mlm_distillation.py); the student uses the teacher's tokenizer. teacher "" = off.
    from plm_jax.tasks.mlm_distillation import default_config as default_mlm_distill_config

    config.distill = default_mlm_distill_config()

    config.model = ml_collections.ConfigDict(
        dataclasses.asdict(dataclasses.replace(TransformerConfig(), **_OBJECTIVE_MODELS[objective])))

    config.data = default_data_config()
    config.data.tokenizer_max_docs = 200_000  # documents read when training a SentencePiece model

    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=32,  # global, in packed rows of data.seq_len tokens
            grad_accum_steps=1,  # the batch runs as this many sequential microbatches: same update, less memory
            steps=1000,
            lr=5e-4,
            warmup_steps=100,
            decay="linear",  # linear | cosine | constant
            end_lr_fraction=0.0,
            weight_decay=0.01,
            b1=0.9,
            b2=0.999,
            eps=1e-6,
            clip_norm=1.0,  # 0 = off
            log_every=10,
            eval_every=200,
            eval_batches=20,  # held-out batches; the same ones (same masks) at every evaluation
            checkpoint_every=200,
            keep_checkpoints=3,
            async_checkpoints=True,
            profile_steps=(),  # (first, last): a jax.profiler trace of those steps in workdir/profile (TensorBoard)
            eval_at_start=True,  # also evaluate the initial model (step 0)
            layer_decay=1.0,  # layer-wise LR decay: layer i of N gets lr * layer_decay ** (N - i); 1 = off
        )
    )

    # -1: all remaining devices. strategy: "" (these sizes) or dp | fsdp | tp | dp+fsdp | fsdp+tp | dp+tp |
    # dp+fsdp+tp (parallel/sharding.py STRATEGIES): unnamed axes get 1 device, a named one the rest.
    # cpu_devices (CPU hosts only): -1 = one device per core, which the mesh above then uses (1.01-1.28x the
    # tokens/s of one device on 2 cores; each device holds a replica of the state; see
    # parallel/distributed.cpu_device_count); 0 = JAX's default of one; N = N.
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, strategy="", cpu_devices=-1))
    config.logical_axis_rules = DEFAULT_RULES
    return config


def mlm_pretrain_config() -> ml_collections.ConfigDict:
    return pretrain_config("mlm")


def cramming_settings(config: ml_collections.ConfigDict, steps: int, lr: float) -> ml_collections.ConfigDict:
    """The CPU-hour recipe's cramming-style settings (Geiping & Goldstein, 2022), one definition for every config that
    follows it: no dropout, a one-cycle learning rate (5% linear warmup to `lr`, linear decay to zero), and for MLM
    30% masking evaluated at 15% (Wettig et al., 2023); span corruption keeps its noise density."""
    config.model.update(dropout_rate=0.0, attention_dropout_rate=0.0)
    if config.objective == "mlm":
        config.data.update(mask_rate=0.3, eval_mask_rate=0.15)
    config.train.update(steps=steps, lr=lr, warmup_steps=steps // 20, decay="linear", end_lr_fraction=0.0)
    return config


def bench_config(name: str, steps: int) -> ml_collections.ConfigDict:
    """An MLM pretraining config plus the `bench` section that `launch.py bench` reads (perf/bench.py)."""
    config = mlm_pretrain_config()
    config.bench = ml_collections.ConfigDict(
        dict(name=name, head="sparse", steps=steps,  # head: sparse (as trained) | dense (every position, the peers')
             measure_peak=False, peak_flops=0.0,  # MFU's peak: a table for TPUs/GPUs, measured on CPUs
             pipeline=False, pipeline_batches=200,  # pipeline=True: tf.data tokens/s on config.data, same run
             op_profile=0)  # N > 0: the N slowest ops of the step, with the model code each came from
    )
    return config


def finetune_config() -> ml_collections.ConfigDict:
    """Keys of a fine-tuning run (`launch.py finetune`). The model's shape comes from `init`."""
    from plm_jax.tasks.classification import default_task_config
    from plm_jax.tasks.distillation import default_distill_config

    config = ml_collections.ConfigDict()
    config.seed = 0  # head initialisation, dropout and the order of examples
    # A plm_jax pretraining work directory, a fine-tune of the same task (its head too: to go on training it, or
    # to prune it with `prune`), a Hugging Face BERT directory (config.json + model.safetensors or
    # pytorch_model.bin + tokenizer.json/vocab.txt), "minilm" (the packaged all-MiniLM-L6-v2), or "" (random
    # weights: then `tokenizer` and `model` say what to build). `--init` on the command line sets it.
    config.init = ""
    config.from_scratch = False  # keep init's shape and tokenizer, but start from random weights (a baseline)
    # Keep only these layers of init, renumbered (a smaller student that starts from its teacher's layers, as
    # DistilBERT's takes every other one: (0, 2, 4) of 6); () = all.
    config.init_layers = ()
    config.tokenizer = ""  # override init's tokenizer (a SentencePiece .model, tokenizer.json or vocab.txt)
    config.model = ml_collections.ConfigDict(dataclasses.asdict(TransformerConfig()))  # only when init=""
    # Settings of the pretrained model a fine-tune may change (None = keep init's); never its shape.
    placeholder = ml_collections.config_dict.placeholder
    config.model_overrides = ml_collections.ConfigDict(dict(
        dropout_rate=placeholder(float), attention_dropout_rate=placeholder(float), dtype=placeholder(str),
        attention=placeholder(str), scan_layers=placeholder(bool), remat=placeholder(str),
        norm_dtype=placeholder(str)))
    config.task = default_task_config()
    config.distill = default_distill_config()  # a teacher (a fine-tuned run) whose outputs the loss also learns
    # Structured head pruning (compress/head_pruning.py) of `init`, a fine-tune of this task, before this run's
    # fine-tune (the re-fine-tune): every layer keeps its `heads` most important heads, measured on `examples`
    # training examples. 0 = no pruning.
    config.prune = ml_collections.ConfigDict(dict(heads=0, examples=512))
    config.task.main_metric = ""  # "" = accuracy (classification), pearson (regression), f1 (qa)
    config.task.classifier_dropout = -1.0  # < 0: the model's dropout_rate, as Hugging Face
    # classification/regression on an encoder: "cls" ([CLS], as Hugging Face; `export` needs it) | "mean" (of the
    # text's token outputs, for a masked-LM run whose [CLS] output was never trained; measured in docs/benchmarks.md)
    config.task.pooling = "cls"
    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=32,
            eval_batch_size=64,
            grad_accum_steps=1,
            epochs=3,
            min_steps=0,  # > 0: more epochs until the run takes this many steps (small subsets, learning curves)
            max_evals=0,  # > 0: evaluate (and keep best/) about this many times, not every epoch; always at the end
            lr=5e-5,
            warmup_frac=0.1,  # of all steps
            decay="linear",
            end_lr_fraction=0.0,
            weight_decay=0.01,
            b1=0.9,
            b2=0.999,
            eps=1e-6,
            clip_norm=1.0,
            layer_decay=1.0,  # layer-wise LR decay: layer i of N gets lr * layer_decay ** (N - i); 1 = off
            log_every=10,
            eval_at_start=False,  # also evaluate the initial model (step 0)
            checkpoint_every=0,  # steps; 0 = at the end of each epoch only
            keep_checkpoints=1,
            async_checkpoints=True,
            profile_steps=(),  # (first, last): a jax.profiler trace of those steps in workdir/profile (TensorBoard)
        )
    )
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, strategy="", cpu_devices=-1))
    config.logical_axis_rules = DEFAULT_RULES
    return config


def translation_config() -> ml_collections.ConfigDict:
    """Keys of a translation fine-tune (`launch.py finetune` with task.kind="translation").

    `init`: "" (random weights in the shape of `model`, with `tokenizer`: one SentencePiece model for both
    languages), or a plm_jax pretraining run: span_corruption (the whole encoder-decoder) or mlm (BERT2BERT: the
    MLM encoder seeds encoder and decoder; cross-attention starts random).
    """
    from plm_jax.tasks.translation import default_translation_config

    config = finetune_config()
    config.model = pretrain_config("span_corruption").model  # only when init=""
    config.task = default_translation_config()
    config.task.beam_size = 4  # 1 = greedy
    config.task.length_penalty = 0.6  # GNMT alpha
    config.task.max_bleu_examples = 0  # BLEU after each epoch on the first N eval pairs; 0 = all
    config.train.update(lr=5e-4, epochs=10, batch_size=64, eval_batch_size=64, warmup_frac=0.05)
    config.train.sort_window = 50  # batches of similar lengths, sorted within windows of this many; 0 = random
    config.train.length_bucket = 16  # cut each batch to its longest row, rounded up to this; 0 = full length
    return config


def tagging_config() -> ml_collections.ConfigDict:
    """Keys of a token-classification fine-tune (`task.kind="tagging"`; plm_jax/tasks/tagging.py)."""
    from plm_jax.tasks.tagging import default_tagging_config

    config = finetune_config()
    config.task = default_tagging_config()
    config.train.update(lr=5e-5, epochs=3, batch_size=32)
    return config


def split_list_overrides(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    """`--config.task.label_names=neg,pos` means two classes: ml_collections parses a comma list given for a tuple
    key as one string, ("neg,pos",); each such command-line override is split at its commas here."""
    for arg in argv:
        if not arg.startswith("--config.") or "=" not in arg:
            continue
        *parents, leaf = arg[len("--config."):].split("=", 1)[0].split(".")
        node = config
        for part in parents:
            node = node[part]
        value = node[leaf]
        if isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], str) and "," in value[0]:
            node[leaf] = tuple(part.strip() for part in value[0].split(",") if part.strip())
