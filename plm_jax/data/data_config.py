"""The `data` section's defaults, and what follows from them alone, without importing TensorFlow.

The train step, `bench` and `compile-only` need only these; keeping TensorFlow out of their imports lets them run
on a host that has JAX but no TensorFlow (a GPU image, say) and keeps TensorFlow from starting beside a GPU run.
"""

from __future__ import annotations

import math

import ml_collections


def default_data_config() -> ml_collections.ConfigDict:
    """Defaults for the `data` section of a config; sources.py, masking.py and span_corruption.py say more."""
    return ml_collections.ConfigDict(
        {
            "source": "tfds",  # "tfds" | "text" | "jsonl"
            "tfds_name": "plm_wiki_offline",
            "tfds_text_feature": "text",
            "tfds_train_split": "train",
            "tfds_eval_split": "validation",
            "tfds_data_dir": "",  # "" = the TFDS default (~/tensorflow_datasets)
            "paths": (),  # local files or glob patterns for "text"/"jsonl"; one document per line
            "jsonl_field": "text",
            "eval_every_nth": 20,  # local files: usable document i is in eval iff i % eval_every_nth == 0
            # a SentencePiece model, or a BERT WordPiece vocab.txt / tokenizer.json / directory (data/wordpiece.py);
            # "" = the trainer picks workdir/tokenizer.model
            "tokenizer": "",
            # when a tokenizer is trained here: characters with pieces of their own; the rest in bytes
            "character_coverage": 0.9995,
            "byte_fallback": True,  # from 1,024 pieces up (data/tokenizer.py); off = unknown characters -> [UNK]
            "seq_len": 128,
            "shuffle_buffer": 10_000,  # documents
            "mask_rate": 0.15,
            "eval_mask_rate": 0.0,  # held-out MLM accuracy at this rate (MosaicBERT: 0.15); 0 = mask_rate
            "mask_token_frac": 0.8,
            "random_token_frac": 0.1,
            "max_predictions": 0,  # 0 = ceil(mask_rate * seq_len)
            # T5 span corruption (objective "span_corruption"); see data/span_corruption.py
            "noise_density": 0.15,  # fraction of raw tokens replaced by sentinel spans
            "mean_noise_span_length": 3.0,  # mean tokens per noise span
            "num_sentinels": 100,  # sentinel ids vocab_size .. vocab_size + num_sentinels - 1
        }
    )


def resolve_max_predictions(data_cfg: ml_collections.ConfigDict) -> int:
    """data_cfg.max_predictions, or ceil(mask_rate * seq_len) when it is 0."""
    if int(data_cfg.max_predictions) > 0:
        return int(data_cfg.max_predictions)
    # The small epsilon keeps float noise (0.15 * 100 = 15.000000000000002) from adding a slot.
    return max(1, math.ceil(float(data_cfg.mask_rate) * int(data_cfg.seq_len) - 1e-9))
