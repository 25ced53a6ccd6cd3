"""Corpus BLEU and chrF for translation, computed by sacrebleu so that scores are comparable with published ones.

Scores are reported with sacrebleu's signatures (tokenizer, smoothing, version): a BLEU number without its
signature cannot be compared with another.
"""

from __future__ import annotations

from collections.abc import Sequence

from plm_jax.errors import UserError


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise UserError("hypotheses and references must be sequences of sentences, not one string")
    if len(hypotheses) != len(references):
        raise UserError(f"{len(hypotheses)} hypotheses but {len(references)} references: one reference per "
                         f"hypothesis")
    if not hypotheses:
        raise UserError("no sentences to score")
    for name, texts in (("hypothesis", hypotheses), ("reference", references)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise UserError(f"{name} {i} is not text: {text!r}")
    return list(hypotheses), list(references)


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """BLEU (13a tokenizer, exp smoothing) and chrF over the corpus, with their signatures and BLEU's details."""
    from sacrebleu.metrics import BLEU, CHRF

    hyps, refs = _check(hypotheses, references)
    bleu_metric, chrf_metric = BLEU(), CHRF()
    bleu = bleu_metric.corpus_score(hyps, [refs])
    chrf = chrf_metric.corpus_score(hyps, [refs])
    return {
        "bleu": float(bleu.score),
        "chrf": float(chrf.score),
        "bleu_signature": str(bleu_metric.get_signature()),
        "chrf_signature": str(chrf_metric.get_signature()),
        "bleu_precisions": [float(p) for p in bleu.precisions],  # 1- to 4-gram, percent
        "brevity_penalty": float(bleu.bp),
        "hyp_len": int(bleu.sys_len),
        "ref_len": int(bleu.ref_len),
        "sentences": len(hyps),
    }


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """BLEU of one sentence, with effective order (n-gram orders the sentence is too short for are skipped)."""
    from sacrebleu.metrics import BLEU

    _check([hypothesis], [reference])
    return float(BLEU(effective_order=True).sentence_score(hypothesis, [reference]).score)
