r"""CoNLL-2003 English named entities (PER, LOC, ORG, MISC; BIO tags), by its TFDS name: needs the network once
to download (~1 MB), as Hugging Face's `run_ner` example with `--dataset_name conll2003`.

    python launch.py finetune --config configs/finetune/conll2003.py --init minilm --workdir runs/conll
    python launch.py predict --workdir runs/conll --input sentences.txt --output tags.jsonl

Main metric: entity-level F1 on the dev split (`dev`), conlleval rules (the same numbers as `seqeval`); the test
split is scored with the best epoch. Offline, the same task runs on local files with
`configs/finetune/local.py:tagging`.
"""

import ml_collections

from plm_jax.config_base import tagging_config


def get_config() -> ml_collections.ConfigDict:
    config = tagging_config()
    config.task.update(source="tfds", tfds_name="conll2003", train_split="train", eval_split="dev",
                       test_split="test", tokens_field="tokens", tags_field="ner", seq_len=128)
    config.train.update(batch_size=32, epochs=3, lr=5e-5, warmup_frac=0.1, log_every=50)
    return config
