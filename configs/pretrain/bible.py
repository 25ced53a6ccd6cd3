r"""Pretraining on the training books' verses (`launch.py bible` writes them), with the translation vocabulary.

    python launch.py pretrain --config configs/pretrain/bible.py:causal_lm --workdir runs/bible_gpt   # GPT, English
    python launch.py generate --workdir runs/bible_gpt --input prompts.txt --output samples.jsonl
    python launch.py pretrain --config configs/pretrain/bible.py:mlm --workdir runs/bible_mlm   # BERT2BERT's encoder
    python launch.py pretrain --config configs/pretrain/bible.py:span_corruption --workdir runs/bible_t5

`:causal_lm` reads the English verses only (data/bible_en_de/train.en.txt); `:mlm` and `:span_corruption` read
both languages, so that a translation model can start from them (`launch.py finetune --init`). The shapes match
configs/translate/bible.py, so the MLM encoder drops into the translation model.
Expected: see the closing note of issue 4 (held-out loss and perplexity, samples).
"""

import ml_collections

from plm_jax.config_base import pretrain_config


def get_config(objective: str = "causal_lm") -> ml_collections.ConfigDict:
    data = "data/bible_en_de"
    config = pretrain_config(objective)
    sentinels = 100 if objective == "span_corruption" else 0
    config.model.update(vocab_size=8000 + sentinels, hidden_size=256, num_layers=3, num_heads=4, mlp_dim=1024,
                        max_len=128, dropout_rate=0.1, attention_dropout_rate=0.1,
                        pre_layer_norm=True)  # pre-LN everywhere, as the translation model: BERT2BERT fits it
    paths = (f"{data}/train.en.txt",) if objective == "causal_lm" else (f"{data}/train.en.txt", f"{data}/train.de.txt")
    config.data.update(source="text", paths=paths, seq_len=128, tokenizer=f"{data}/spm.model",
                       num_sentinels=sentinels or 100)
    config.train.update(batch_size=32, steps=1000, lr=1e-3, warmup_steps=100, log_every=20, eval_every=250,
                        eval_batches=8, checkpoint_every=250)
    return config
