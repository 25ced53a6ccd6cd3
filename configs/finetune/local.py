r"""Fine-tune on your own files, one per split: `configs/finetune/local.py:KIND`, KIND one of
classification | regression | qa | translation | tagging.

    python launch.py finetune --config configs/finetune/local.py:classification --workdir runs/mine \
        --config.task.train_file=train.csv --config.task.eval_file=dev.csv --init runs/quickstart
    python launch.py finetune --config configs/finetune/local.py:tagging --workdir runs/ner --init minilm \
        --config.task.train_file=train.conll --config.task.eval_file=dev.conll --config.task.test_file=test.conll

`--init` is a pretraining run, a Hugging Face BERT directory, `minilm`, or a Hub id when online; without it give
`--config.tokenizer=...` (and `--config.model.*`) to train from random weights. Leave eval_file empty to train
without evaluation (the last epoch is kept). File formats, by KIND:
  classification, regression: .csv / .tsv (a header row) or .jsonl; columns `task.text_a` (default "text"),
      `task.text_b` for sentence pairs, `task.label` (default "label"); classes are the sorted distinct labels
      of train_file unless `task.label_names` lists them.
  qa: SQuAD v1.1 JSON (`task.version_2=True` for v2.0 with unanswerable questions).
  translation: .tsv (source<TAB>target), .jsonl, or two aligned files "a.en::a.de"; one SentencePiece model
      for both languages (`launch.py tokenizer --config configs/finetune/local.py:translation ...`).
  tagging: CoNLL columns (word first, tag last, blank line between sentences) or .jsonl {"tokens", "tags"}.
"""

import ml_collections

from plm_jax.config_base import finetune_config, tagging_config, translation_config

KINDS = ("classification", "regression", "qa", "translation", "tagging")


def get_config(kind: str = "classification") -> ml_collections.ConfigDict:
    if kind not in KINDS:
        raise ValueError(f"configs/finetune/local.py:{kind}: expected one of {KINDS}")
    if kind == "translation":
        config = translation_config()
        config.task.update(source="local", eval_split="", test_split="")
        return config
    if kind == "tagging":
        config = tagging_config()
        config.task.update(source="local")
        return config
    config = finetune_config()
    config.task.update(kind=kind, source="local", text_a="text", label="label", eval_split="", test_split="",
                       seq_len=128)
    config.train.update(lr=5e-5 if kind != "qa" else 3e-5, epochs=3, batch_size=32)
    return config
