r"""English -> German (or French) translation of Bible verses, split by book, on 2 CPU cores.

    python launch.py bible --output data/bible_en_de --versions k,e       # KJV -> Elberfelder 1932 (l: Segond)
    python launch.py tokenizer --config configs/translate/bible.py:de --output data/bible_en_de/spm.model
    python launch.py finetune --config configs/translate/bible.py:de --workdir runs/en_de
    python launch.py predict --workdir runs/en_de --input sentences.txt --output translations.txt

The data: 29,603 training pairs (en-de; en-fr 29,606); dev = Ruth, Jonah, Philippians, Titus, James (391 verses);
test = Esther, Micah, Mark, Ephesians (1,105 verses): no dev or test book is seen in training. One 8k-piece
SentencePiece vocabulary for both languages. BLEU (sacrebleu, 13a) and chrF with beam search (4, alpha 0.6)
after each epoch; the best epoch by dev BLEU is kept and scored on the test books.

BERT2BERT instead of random weights: pretrain an MLM on the training verses of both languages with this
vocabulary (configs/pretrain/bible.py:mlm), then add `--init runs/bible_mlm`.
Measured 2026-11-29 on 2 shared CPU cores, en->de, `--config.train.epochs=2` (7.6M parameters, ~2,600 source +
target tokens/s when the machine is otherwise idle; one epoch ~13 min of training + ~4 min of dev beam search):
  from scratch:      dev BLEU 0.71 / chrF 9.7 after epoch 1, 5.19 / 23.0 after epoch 2; test BLEU 6.45, chrF 24.8
                     (54 min in all, with CI running beside it).
  BERT2BERT (--init runs/bible_mlm, 600 MLM steps = 12 min): dev BLEU 5.73 / chrF 23.2 after epoch 1 alone.
Measured 2026-12-07 on 2 CPU cores, en->de, `--config.train.epochs=1` (one seed, test BLEU / chrF; with --init,
`--config.model_overrides.dropout_rate=0.1 --config.model_overrides.attention_dropout_rate=0.1`):
  from scratch 0.13 / 5.1 (one verse opening for every input); BERT2BERT from configs/pretrain/bible.py:mlm,cpu_hour
  8.29 / 26.9; from :span_corruption,cpu_hour 0.65 / 8.3; copying the source 0.21 / 17.6; from scratch with
  `--config.train.epochs=2` 7.34 / 25.9 (docs/benchmarks.md).
BLEU is sacrebleu `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`. Two epochs is short: the output is
fluent Elberfelder-style German that often misses the verse's content; more epochs raise it.
"""

import ml_collections

from plm_jax.config_base import translation_config


def get_config(target: str = "de") -> ml_collections.ConfigDict:
    if target not in ("de", "fr"):
        raise ValueError(f"configs/translate/bible.py:{target}: expected :de or :fr")
    data = f"data/bible_en_{target}"
    config = translation_config()
    config.tokenizer = f"{data}/spm.model"
    config.model.update(vocab_size=8000, hidden_size=256, num_layers=3, num_heads=4, mlp_dim=1024, max_len=96,
                        dropout_rate=0.1, attention_dropout_rate=0.1, pre_layer_norm=True)
    config.task.update(source="local", source_lang="en", target_lang=target, train_file=f"{data}/train.tsv",
                       eval_file=f"{data}/dev.tsv", test_file=f"{data}/test.tsv", max_source_len=96,
                       max_target_len=96, on_long="truncate", beam_size=4, length_penalty=0.6)
    config.train.update(batch_size=64, eval_batch_size=128, epochs=4, lr=1e-3, warmup_frac=0.03, log_every=20,
                        checkpoint_every=200)
    return config
