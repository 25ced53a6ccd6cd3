r"""Extractive QA on SQuAD v1.1 (TFDS `squad`, needs the network the first time), or on local SQuAD-format files.

    python launch.py finetune --config configs/finetune/squad.py --init /path/to/bert-base-uncased --workdir runs/squad
    python launch.py finetune --config configs/finetune/squad.py:v2 --init minilm --workdir runs/squad2
    python launch.py finetune --config configs/finetune/squad.py --init minilm --workdir runs/myqa \
        --config.task.source=local --config.task.train_file=train.json --config.task.eval_file=dev.json

Long contexts become windows of seq_len tokens overlapping by doc_stride; answers are mapped back to characters
and scored with the official EM/F1. BERT-base reference (Devlin et al. 2019): v1.1 dev EM ~81, F1 ~88.5.
"""

import ml_collections

from plm_jax.config_base import finetune_config


def get_config(version: str = "v1") -> ml_collections.ConfigDict:
    config = finetune_config()
    v2 = version == "v2"
    config.task.update(kind="qa", source="tfds", tfds_name="squad/v2.0" if v2 else "squad/v1.1",
                       train_split="train", eval_split="validation", seq_len=384, doc_stride=128,
                       max_query_len=64, max_answer_len=30, n_best=20, version_2=v2, null_threshold=0.0)
    config.train.update(batch_size=32, epochs=2, lr=3e-5, warmup_frac=0.1, eval_batch_size=64)
    return config
