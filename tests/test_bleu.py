"""Corpus BLEU / chrF: known values, agreement with sacrebleu, and a BLEU computed by hand."""

import math
from collections import Counter

import pytest
import sacrebleu

from plm_jax.evaluate.bleu import corpus_scores, sentence_bleu

HYPS = ["The cat sat on the mat.", "A quick brown fox jumps over the dog!", "Hello, world."]
REFS = ["The cat is sitting on the mat.", "The quick brown fox jumped over the lazy dog!", "Hello world."]


def test_identical_corpus_scores_100():
    scores = corpus_scores(REFS, REFS)
    assert scores["bleu"] == pytest.approx(100.0) and scores["chrf"] == pytest.approx(100.0)
    assert scores["brevity_penalty"] == 1.0 and scores["sentences"] == 3
    assert scores["bleu_precisions"] == pytest.approx([100.0] * 4)


def test_matches_sacrebleu():
    scores = corpus_scores(HYPS, REFS)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert 0 < scores["bleu"] < 100 and 0 < scores["chrf"] < 100
    assert "tok:13a" in scores["bleu_signature"] and "smooth:exp" in scores["bleu_signature"]
    assert f"version:{sacrebleu.__version__}" in scores["bleu_signature"]
    assert scores["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0")
    for h, r in zip(HYPS, REFS):
        assert sentence_bleu(h, r) == pytest.approx(sacrebleu.sentence_bleu(h, [r]).score)


def test_hand_computed_bleu():
    """Lowercase words without punctuation: 13a tokenization is a whitespace split, so counts are plain n-grams."""
    hyps = ["a b c d e", "the cat sat"]
    refs = ["a b c d f g", "the cat sat"]
    # Clipped n-gram matches / hypothesis n-grams, summed over the corpus:
    # n=1: (4 + 3) / (5 + 3); n=2: (3 + 2) / (4 + 2); n=3: (2 + 1) / (3 + 1); n=4: (1 + 0) / (2 + 0).
    precisions = [7 / 8, 5 / 6, 3 / 4, 1 / 2]
    c, r = 8, 9  # hypothesis and reference lengths
    bp = math.exp(1 - r / c)
    expected = 100 * bp * math.exp(sum(math.log(p) for p in precisions) / 4)
    scores = corpus_scores(hyps, refs)
    assert scores["bleu"] == pytest.approx(expected, abs=1e-9)
    assert scores["brevity_penalty"] == pytest.approx(bp)
    assert scores["bleu_precisions"] == pytest.approx([100 * p for p in precisions])
    assert (scores["hyp_len"], scores["ref_len"]) == (c, r)

    def clipped(h: list[str], ref: list[str], n: int) -> tuple[int, int]:
        grams = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
        ref_grams = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        return sum(min(k, ref_grams[g]) for g, k in grams.items()), sum(grams.values())

    for n, p in enumerate(precisions, start=1):  # the hand counts above, recounted
        counts = [clipped(h.split(), ref.split(), n) for h, ref in zip(hyps, refs)]
        assert sum(m for m, _ in counts) / sum(t for _, t in counts) == p


def test_errors():
    with pytest.raises(ValueError, match="2 hypotheses but 3 references"):
        corpus_scores(HYPS[:2], REFS)
    with pytest.raises(ValueError, match="no sentences"):
        corpus_scores([], [])
    with pytest.raises(ValueError, match="not one string"):
        corpus_scores("a b", "a b")
    with pytest.raises(ValueError, match="hypothesis 1 is not text: None"):
        corpus_scores(["a", None], ["a", "b"])
