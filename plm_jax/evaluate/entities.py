"""Entity-level precision, recall and F1 of tag sequences (BIO/IOB2, IOB1, IOBES), as the CoNLL-2003 `conlleval`
script scores them and the `seqeval` package reproduces in its default mode (tests check it against seqeval).

An entity is a maximal span of one type; it starts at B-/S-, or at I-/E- after O or after another type, and ends
before O, B-, S- or a change of type, or after E-/S-. A prediction counts when type, start and end all match.
"""

from __future__ import annotations

from collections.abc import Sequence

Entity = tuple[str, int, int]  # (type, first token, last token), over the concatenated sentences


def _split(tag: str) -> tuple[str, str]:
    """"B-PER" -> ("B", "PER"); "O" -> ("O", ""); a tag without a prefix is an I- of that type (IOB1 corpora)."""
    if tag in ("O", ""):
        return "O", ""
    if len(tag) >= 2 and tag[1] in "-_" and tag[0] in "BIESU":
        return ("S" if tag[0] == "U" else tag[0]), tag[2:]
    return "I", tag


def _ends(prev: str, prev_type: str, tag: str, tag_type: str) -> bool:
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev != "O" and prev_type != tag_type


def _starts(prev: str, prev_type: str, tag: str, tag_type: str) -> bool:
    if tag in ("B", "S"):
        return True
    if tag in ("I", "E") and prev in ("E", "S", "O"):
        return True
    return tag != "O" and prev_type != tag_type


def entities(sentences: Sequence[Sequence[str]]) -> set[Entity]:
    """The entities of every sentence; positions count over the sentences laid end to end (each followed by O)."""
    flat = [tag for sentence in sentences for tag in (*sentence, "O")]
    found: set[Entity] = set()
    prev, prev_type, begin = "O", "", 0
    for i, tag in enumerate([*flat, "O"]):
        tag_prefix, tag_type = _split(tag)
        if _ends(prev, prev_type, tag_prefix, tag_type):
            found.add((prev_type, begin, i - 1))
        if _starts(prev, prev_type, tag_prefix, tag_type):
            begin = i
        prev, prev_type = tag_prefix, tag_type
    return found


def _prf(correct: int, predicted: int, true: int) -> tuple[float, float, float]:
    p = correct / predicted if predicted else 0.0
    r = correct / true if true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def entity_metrics(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro-averaged entity precision/recall/F1, per-type F1 (`f1_PER`, ...), and token accuracy."""
    if len(true) != len(pred) or any(len(t) != len(p) for t, p in zip(true, pred)):
        raise ValueError("true and predicted tag sequences differ in length")
    gold, guess = entities(true), entities(pred)
    p, r, f1 = _prf(len(gold & guess), len(guess), len(gold))
    tokens = sum(len(t) for t in true)
    same = sum(a == b for t, q in zip(true, pred) for a, b in zip(t, q))
    out = {"precision": p, "recall": r, "f1": f1, "accuracy": same / tokens if tokens else 0.0,
           "entities": float(len(gold))}
    for kind in sorted({e[0] for e in gold | guess}):
        g, q = {e for e in gold if e[0] == kind}, {e for e in guess if e[0] == kind}
        out[f"f1_{kind}"] = _prf(len(g & q), len(q), len(g))[2]
    return out
