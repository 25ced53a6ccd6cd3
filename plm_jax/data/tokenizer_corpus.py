"""The text a run's SentencePiece model is trained on (`launch.py tokenizer`), and how many pieces it gets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def tokenizer_corpus(config: Any) -> tuple[Iterator[str], int]:
    """(documents, piece count) for `config`'s tokenizer.

    A translation fine-tune (task.kind="translation") gets one vocabulary for both languages: the training text
    of each side, and model.vocab_size pieces. Any other config: the train split of config.data (at most
    data.tokenizer_max_docs documents), with the piece count pretraining asks for.
    """
    if "task" in config and config.task.get("kind") == "translation":
        from plm_jax.tasks.translation import iter_tokenizer_text

        return iter_tokenizer_text(config.task), config.model.vocab_size
    from plm_jax.data import sources
    from plm_jax.tasks.pretraining import tokenizer_pieces

    docs = sources.iter_documents(config.data, "train", config.data.tokenizer_max_docs)
    return docs, tokenizer_pieces(config)
