r"""The CPU-hour recipe at GPU scale: BERT-small (4 x 512, 8 heads) on the same corpus with the same cramming
settings, sized for a few minutes of one H100 or H200.

    python launch.py pretrain --config configs/pretrain/gpu_small.py --workdir runs/gpu_small
    python launch.py sweep "configs/sweeps/curve.py:rotten_tomatoes,pretrained=runs/gpu_small,minilm=0,\
    train.lr=3e-4" --workdir runs/curve_gpu_rt && python launch.py report runs/curve_gpu_rt   # and wiki_topics

What it keeps from configs/pretrain/cpu_hour.py: `plm_offline_mix/task` (the Wikipedia leads and the train-split
reviews, 1.53M tokens), an 8,192-piece tokenizer trained on it, no dropout, 30% masking (evaluated at 15%), a
one-cycle learning rate (5% warmup, linear decay to zero). What it changes: the shape (BERT-small with an 8k
vocabulary, ~17M parameters, 11.7x the recipe's training FLOPs per token), bf16 compute, batch 128 x 128 tokens,
a peak learning rate of 1e-3 (cramming's for BERT-base; 2e-3 is the small model's), and 6,000 steps: 98M tokens,
about 64 passes over the corpus. The curve compares it with random weights in its shape, at a fine-tuning
learning rate of 3e-4 (the curve's 1e-3 is tuned for the 4 x 128 model); the CPU curve stays beside it.

Expected: not yet run (no GPU was lent in the sessions that wrote it). BERT-base trains at 524k tokens/s on an H200
(docs/benchmarks.md) and BERT-small needs 1/6.6 of its FLOPs per token, so the 98M tokens should take 1-5 minutes,
depending on how close to that the smaller matmuls and the tf.data pipeline come. Measure first and set the steps
from it: `launch.py bench --config configs/pretrain/gpu_small.py` prints tokens/s. More steps than ~100 passes over
this small corpus would mostly repeat it. The machine must hold the corpus's wheels (requirements.txt) for
`plm_offline_mix` to build there.
"""

import ml_collections

from plm_jax.config_base import cramming_settings, mlm_pretrain_config

STEPS = 6_000


def get_config() -> ml_collections.ConfigDict:
    config = mlm_pretrain_config()
    config.model.update(vocab_size=8192, num_layers=4, hidden_size=512, num_heads=8, mlp_dim=2048, max_len=128,
                        dtype="bfloat16")
    config.data.update(source="tfds", tfds_name="plm_offline_mix/task", tfds_text_feature="text", seq_len=128)
    config.train.update(batch_size=128, log_every=100, eval_every=1000, eval_batches=16, checkpoint_every=1000,
                        keep_checkpoints=2)
    cramming_settings(config, STEPS, lr=1e-3)
    return config
