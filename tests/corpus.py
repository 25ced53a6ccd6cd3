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
