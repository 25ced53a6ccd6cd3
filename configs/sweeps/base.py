r"""The small model the example sweeps pretrain: 2 layers, 128 wide, on the quickstart's offline Wikipedia leads.

    python launch.py pretrain --config configs/sweeps/base.py:mlm --workdir runs/sweep_base_mlm   # one point alone

`mlm` (BERT, post-LN) or `causal_lm` (GPT, pre-LN, tied head): the same width, depth, data, batch and schedule,
so a sweep over this file's argument compares the objectives and nothing else that a config could hide.
Sweeps set train.steps through their budget; 200 steps take about 2 minutes on 2 CPU cores.
"""

import ml_collections

from plm_jax.config_base import pretrain_config


def get_config(objective: str = "mlm") -> ml_collections.ConfigDict:
    config = pretrain_config(objective)
    config.model.update(vocab_size=8192, num_layers=2, hidden_size=128, num_heads=2, mlp_dim=512, max_len=128,
                        dropout_rate=0.1, attention_dropout_rate=0.1)
    config.data.update(source="tfds", tfds_name="plm_wiki_offline", tfds_text_feature="text", seq_len=128)
    config.train.update(batch_size=32, steps=200, lr=2e-3, warmup_steps=20, decay="linear", log_every=10,
                        eval_every=100, eval_batches=8, checkpoint_every=100, keep_checkpoints=1)
    return config
