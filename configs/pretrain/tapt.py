r"""Task-adaptive pretraining (TAPT; Gururangan et al., 2020, "Don't Stop Pretraining"): continue a pretraining
run's masked LM on one task's own unlabeled training text, then fine-tune from the result.

    python launch.py pretrain --config configs/pretrain/tapt.py:rotten_tomatoes --workdir runs/tapt_rt \
        --config.init=runs/cpu_hour
    python launch.py finetune --config configs/finetune/rotten_tomatoes.py --init runs/tapt_rt --workdir runs/rt

The argument is the task: `rotten_tomatoes` or `wiki_topics`. The text is the task's whole train split without its
labels (the few-label setting's unlabeled pool; never the validation or test text, which only scores the masked
LM here). The model and its tokenizer are the init run's (`config.init`, by default the CPU-hour recipe), the
masking is the recipe's (30%), and the optimizer and schedule start afresh: 1,000 steps of 32 rows of 128 tokens
(~5 minutes on 2 CPU cores), ~19 passes over Rotten Tomatoes' 8,530 reviews.
"""

import ml_collections

from plm_jax.config_base import mlm_pretrain_config

# task -> (TFDS name, text feature); the splits are "train" and "validation" for both
TASKS = {"rotten_tomatoes": ("plm_rotten_tomatoes", "text"), "wiki_topics": ("plm_wiki_offline", "text")}
STEPS = 1000


def get_config(task: str = "rotten_tomatoes") -> ml_collections.ConfigDict:
    if task not in TASKS:
        raise ValueError(f"configs/pretrain/tapt.py:{task}: expected one of {sorted(TASKS)}")
    tfds_name, feature = TASKS[task]
    config = mlm_pretrain_config()
    config.init = "runs/cpu_hour"
    config.data.update(source="tfds", tfds_name=tfds_name, tfds_text_feature=feature, seq_len=128,
                       mask_rate=0.3, eval_mask_rate=0.15)
    config.train.update(
        batch_size=32, steps=STEPS, lr=5e-4, warmup_steps=STEPS // 16, decay="linear", end_lr_fraction=0.0,
        log_every=50, eval_every=250, eval_batches=8, checkpoint_every=250, keep_checkpoints=1,
    )
    return config
