r"""The CPU-hour recipe: a small BERT pretrained with masked LM for at most 60 minutes on 2 CPU cores, so that
fine-tuning with few labels beats training from random weights (configs/sweeps/curve.py measures it).

    python launch.py pretrain --config configs/pretrain/cpu_hour.py --workdir runs/cpu_hour

What it changes from the quickstart (configs/quickstart.py), lever by lever (docs/pretraining.md has each one's
measured effect):
- a larger offline corpus: `plm_offline_mix/task`, the Wikipedia leads plus the Rotten Tomatoes train-split
  reviews and movie synopses (~1.0M words; `plm_offline_mix/all` adds speeches and Bibles, ~3.3M words): the two
  downstream domains, with none of their validation or test text (task-adaptive pretraining, Gururangan et al.);
- cramming-style settings (Geiping & Goldstein, 2022): no dropout, a one-cycle learning rate (linear warmup to a
  higher peak, linear decay to zero), a 30% masking rate (Wettig et al., 2023), the sparse prediction head;
- the steps that fit in an hour at the measured throughput.
`get_config("all")` pretrains on every source instead.

Measured (docs/benchmarks.md, 2026-12-07, 2 CPU cores): fine-tuned with 10% dropout on 1,000 labeled examples, it
beats the same model from random weights by +3.2 [+0.8, +5.6] test accuracy points on Rotten Tomatoes (5 seeds)
and +30.8 [+25.0, +36.7] on the Wikipedia topics (3 seeds); with all labels by +9.3 and +13.4.
configs/pretrain/tapt.py continues it on one task's unlabeled text (5 minutes).
"""

import ml_collections

from plm_jax.config_base import cramming_settings, mlm_pretrain_config

STEPS = 12_000  # ~55 minutes at the measured ~3.6 steps/s (2026-12-07, 2 CPU cores, one CPU device per core)


def get_config(corpus: str = "task") -> ml_collections.ConfigDict:
    config = mlm_pretrain_config()
    config.model.update(vocab_size=8192, num_layers=4, hidden_size=128, num_heads=2, mlp_dim=512, max_len=128)
    config.data.update(source="tfds", tfds_name=f"plm_offline_mix/{corpus}", tfds_text_feature="text", seq_len=128)
    config.train.update(batch_size=32, log_every=50, eval_every=2000, eval_batches=16, checkpoint_every=1000,
                        keep_checkpoints=2)
    cramming_settings(config, STEPS, lr=2e-3)
    return config
