r"""GLUE tasks by TFDS name (needs the network the first time; TFDS downloads and prepares them).

    python launch.py finetune --config configs/finetune/glue.py:sst2 --init /path/to/bert-base-uncased \
        --workdir runs/sst2
    python launch.py finetune --config configs/finetune/glue.py:stsb --init minilm --workdir runs/stsb

The part after the colon picks the task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli. GLUE's test splits
are unlabeled, so they are not evaluated; the main metric follows the GLUE paper (MCC for CoLA, F1 for MRPC/QQP,
Pearson for STS-B, accuracy elsewhere). BERT-base reference (Devlin et al. 2019, dev): SST-2 ~93, MRPC F1 ~88-90.
"""

import ml_collections

from plm_jax.config_base import finetune_config

# task -> (text_a, text_b, kind, main metric, eval split)
TASKS = {
    "cola": ("sentence", "", "classification", "mcc", "validation"),
    "sst2": ("sentence", "", "classification", "accuracy", "validation"),
    "mrpc": ("sentence1", "sentence2", "classification", "f1", "validation"),
    "qqp": ("question1", "question2", "classification", "f1", "validation"),
    "stsb": ("sentence1", "sentence2", "regression", "pearson", "validation"),
    "mnli": ("premise", "hypothesis", "classification", "accuracy", "validation_matched"),
    "qnli": ("question", "sentence", "classification", "accuracy", "validation"),
    "rte": ("sentence1", "sentence2", "classification", "accuracy", "validation"),
    "wnli": ("sentence1", "sentence2", "classification", "accuracy", "validation"),
}


def get_config(task: str = "sst2") -> ml_collections.ConfigDict:
    if task not in TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; one of {sorted(TASKS)}")
    text_a, text_b, kind, metric, eval_split = TASKS[task]
    config = finetune_config()
    config.task.update(kind=kind, source="tfds", tfds_name=f"glue/{task}", text_a=text_a, text_b=text_b,
                       label="label", eval_split=eval_split, main_metric=metric, seq_len=128)
    config.train.update(batch_size=32, epochs=3, lr=2e-5, warmup_frac=0.1)
    return config
