r"""Pretraining on the training books' verses (`launch.py bible` writes them), with the translation vocabulary.

    python launch.py pretrain --config configs/pretrain/bible.py:causal_lm --workdir runs/bible_gpt   # GPT, English
    python launch.py generate --workdir runs/bible_gpt --input prompts.txt --output samples.jsonl
    python launch.py pretrain --config configs/pretrain/bible.py:mlm --workdir runs/bible_mlm   # BERT2BERT's encoder
    python launch.py pretrain --config configs/pretrain/bible.py:span_corruption --workdir runs/bible_t5
    python launch.py pretrain --config configs/pretrain/bible.py:mlm,cpu_hour --workdir runs/bible_mlm_cpu_hour
    python launch.py pretrain --config configs/pretrain/bible.py:span_corruption,cpu_hour \
        --workdir runs/bible_t5_cpu_hour

`:causal_lm` reads the English verses only (data/bible_en_de/train.en.txt); `:mlm` and `:span_corruption` read
both languages, so that a translation model can start from them (`launch.py finetune --init`). The shapes match
configs/translate/bible.py, so the MLM encoder drops into the translation model. `,cpu_hour` applies the CPU-hour
recipe's settings (configs/pretrain/cpu_hour.py: no dropout, one-cycle learning rate to 2e-3, 30% masking for MLM)
for 900 steps (the recipe's settings, not its hour: about 12-15 minutes of the machine each). The recipe's English
tokenizer cannot read German, so for translation its settings run on this corpus and vocabulary instead.
Measured 2026-11-29 on 2 shared CPU cores (7.6M-parameter models, seq 128, batch 32):
  :causal_lm, --config.train.steps=400: 9.9 min at ~2,900 tokens/s; held-out perplexity 8103 -> 44.1, next-token
    accuracy 0.30. `generate --temperature=0.8 --top_p=0.95` on "In the beginning" -> "of the LORD, and out of his
    own sake, and the LORD." (KJV-flavoured, not yet coherent).
  :mlm, --config.train.steps=600: 11.6 min at ~3,800 tokens/s; masked-token accuracy 0.000 -> 0.249, perplexity
    8256 -> 118; as BERT2BERT init it lifts en->de dev BLEU after one epoch from 0.71 to 5.73.
Measured 2026-12-07 on 2 CPU cores, the two `,cpu_hour` runs side by side with a translation fine-tune (so each ran
at about a third of the machine): :mlm,cpu_hour 33.5 min, held-out masked-token accuracy (15% masking) 0.000 ->
0.310, perplexity 8624 -> 63.5; :span_corruption,cpu_hour 42.3 min, held-out target-token accuracy 0.001 -> 0.317,
perplexity 8917 -> 57.8. Their translation fine-tunes are in configs/translate/bible.py.
"""

import ml_collections

from plm_jax.config_base import cramming_settings, pretrain_config

CPU_HOUR_STEPS = 900


def get_config(arg: str = "causal_lm") -> ml_collections.ConfigDict:
    objective, _, recipe = arg.partition(",")
    if recipe not in ("", "cpu_hour"):
        raise ValueError(f"configs/pretrain/bible.py:{arg}: expected <objective> or <objective>,cpu_hour")
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
    if recipe:  # configs/pretrain/cpu_hour.py's settings, at its peak learning rate
        cramming_settings(config, CPU_HOUR_STEPS, lr=2e-3)
    return config
