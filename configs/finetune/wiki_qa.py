r"""Extractive QA on questions built from Wikipedia leads ("What is <rest of the first sentence>?" -> the subject).

    python launch.py wiki-qa --output runs/wiki_qa          # writes train.json and dev.json (SQuAD v1.1 format)
    python launch.py finetune --config configs/finetune/wiki_qa.py --init runs/quickstart --workdir runs/wikiqa

A small real-text check of the QA path (windows, offsets, n-best decoding, official EM/F1) that runs offline:
5,852 training and 313 dev questions. The answer always opens the context, but its length varies (names,
titles). Expected on 2 CPU cores from the quickstart model (measured 2026-11-29): this config, about 9 minutes,
dev EM 38.0 / F1 58.4 after epoch 1 and EM 41.9 / F1 59.7 after epoch 2 (from random weights, with
--config.from_scratch=True: 39.6 / 56.1, then 43.8 / 59.8); with
--config.task.max_train_examples=2000 --config.train.epochs=1, about 2 minutes and EM 15.3 / F1 37.2.
"""

import ml_collections

from plm_jax.config_base import finetune_config


def get_config() -> ml_collections.ConfigDict:
    config = finetune_config()
    config.task.update(kind="qa", source="local", train_file="runs/wiki_qa/train.json",
                       eval_file="runs/wiki_qa/dev.json", seq_len=128, doc_stride=32, max_query_len=48,
                       max_answer_len=16, n_best=20)
    config.train.update(batch_size=32, epochs=2, lr=3e-4, warmup_frac=0.1, log_every=20)
    return config
