"""A small synthetic English-like corpus for tests: learnable structure, no third-party text."""

import numpy as np

_NOUNS = ["cat", "dog", "bird", "horse", "child", "farmer", "teacher", "river", "city", "garden", "ship", "king"]
_ADJS = ["small", "old", "red", "quiet", "happy", "tall", "dark", "bright"]
_VERBS = ["sees", "likes", "follows", "finds", "helps", "watches"]
_PLACES = ["near the river", "in the city", "at the market", "under the tree", "on the hill"]


def sentence(rng: np.random.Generator) -> str:
    noun, other = rng.choice(_NOUNS, 2, replace=False)
    return (f"the {rng.choice(_ADJS)} {noun} {rng.choice(_VERBS)} the {other} {rng.choice(_PLACES)} "
            f"because the {noun} is {rng.choice(_ADJS)} .")


def documents(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(sentence(rng) for _ in range(int(rng.integers(1, 5)))) for _ in range(n)]


def write_corpus(path, n: int = 2000, seed: int = 0) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(d + "\n" for d in documents(n, seed))
    return str(path)


POSITIVE = ("happy", "bright")


def sentiment_label(text: str) -> str:
    """A learnable toy label: "pos" when a positive adjective occurs anywhere in the sentence."""
    return "pos" if any(w in text.split() for w in POSITIVE) else "neg"


def write_sentiment_csv(path, n: int, rng: np.random.Generator) -> str:
    """A `sentence,label` CSV of n synthetic sentences."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        for _ in range(n):
            s = sentence(rng)
            w.writerow([s, sentiment_label(s)])
    return str(path)


def word_corpus_setup(tmp, seq_len: int):
    """(data config, 200-piece tokenizer) over 120 documents of random made-up words: the pipeline tests' data."""
    import random

    from plm_jax.data.data_config import default_data_config
    from plm_jax.data.tokenizer import train_tokenizer

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 7))) for _ in range(300)]
    docs = [f"doc{i} " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for i in range(120)]
    (tmp / "corpus.txt").write_text("\n".join(docs) + "\n")
    cfg = default_data_config()
    cfg.update(source="text", paths=(str(tmp / "corpus.txt"),), eval_every_nth=10, seq_len=seq_len,
               shuffle_buffer=16)
    return cfg, train_tokenizer(docs, 200, tmp / "tok.model")
