"""The full set of config keys for masked-LM pretraining, with defaults. Configs in configs/ start from it.

Every key a run can read is here, so that a `--config.x.y=` override naming a key that does not exist fails
with a clear error instead of being ignored.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from plm_jax.data.sources import default_data_config
from plm_jax.models.config import TransformerConfig
from plm_jax.parallel.sharding import DEFAULT_RULES


def mlm_pretrain_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # parameters, dropout, shuffling and masks all derive from it

    config.model = ml_collections.ConfigDict(dataclasses.asdict(TransformerConfig()))

    config.data = default_data_config()
    config.data.tokenizer_max_docs = 200_000  # documents read when training a SentencePiece model

    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=32,  # global, in packed rows of data.seq_len tokens
            grad_accum_steps=1,  # the batch runs as this many sequential microbatches: same update, less memory
            steps=1000,
            lr=5e-4,
            warmup_steps=100,
            decay="linear",  # linear | cosine | constant
            end_lr_fraction=0.0,
            weight_decay=0.01,
            b1=0.9,
            b2=0.999,
            eps=1e-6,
            clip_norm=1.0,  # 0 = off
            log_every=10,
            eval_every=200,
            eval_batches=20,  # held-out batches; the same ones (same masks) at every evaluation
            checkpoint_every=200,
            keep_checkpoints=3,
            async_checkpoints=True,
            profile_steps=(),  # (first, last): a jax.profiler trace of those steps in workdir/profile (TensorBoard)
        )
    )

    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # -1: all remaining devices
    config.logical_axis_rules = DEFAULT_RULES
    return config
