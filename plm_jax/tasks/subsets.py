"""Subsets of a split drawn by a seed (`task.max_train_examples`, `task.max_eval_examples`), never the first N rows.

Two properties a learning curve needs:
- **stratified**: every prefix of the draw holds each class in its share of the split, to within one example, so a
  label-sorted file cut at N rows still trains on every class;
- **nested**: for one seed, the 100-example subset lies inside the 300-example one, and so on, so that a curve's
  points differ only in how many labels they add.

Both come from one order per (seed, split): each row gets a uniform key from a hash of (seed, row index); within a
class, rows go in key order, and each next row comes from the class furthest below its share (k * n_c / n after k
rows; ties to a per-class key from the same hash). A subset of size N is the first N of that order.
Without labels (regression, QA, translation, tagging) the order is the key order, which can also be drawn from a
stream in O(N) memory.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Hashable, Iterable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

EVAL_SEED = 0  # eval and test subsets: the same rows for every run seed, so that seeds are scored alike


def uniform_key(seed: int, *parts: object) -> float:
    """A uniform number in [0, 1) from (seed, parts): the same on every machine and Python version."""
    digest = hashlib.blake2b(repr((int(seed), *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def draw_order(labels: Sequence[Hashable] | None, n: int, seed: int, limit: int = 0) -> np.ndarray:
    """The first `limit` (0: all n) rows of a permutation of range(n) whose every prefix is a stratified (labels
    given) or uniform sample."""
    limit = n if not limit or limit > n else limit
    keys = np.array([uniform_key(seed, "row", i) for i in range(n)], np.float64)
    if labels is None:
        return np.argsort(keys, kind="stable")[:limit]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} rows")
    members: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        members.setdefault(label, []).append(i)
    queues = [sorted(rows, key=lambda i: keys[i]) for rows in members.values()]
    sizes = np.array([len(q) for q in queues], np.int64)
    phases = np.array([uniform_key(seed, "class", repr(label)) for label in members])
    taken = np.zeros(len(queues), np.int64)
    order = np.empty(limit, np.int64)
    for k in range(1, limit + 1):
        # the class furthest below its share k * n_c / n (exact, in integers); a tie goes to the smaller phase
        deficit = k * sizes - taken * n
        tied = np.flatnonzero(deficit == deficit.max())
        c = tied[np.argmin(phases[tied])]
        order[k - 1] = queues[c][taken[c]]
        taken[c] += 1
    return order


def draw(labels: Sequence[Hashable] | None, n: int, limit: int, seed: int) -> np.ndarray:
    """Row indices (ascending) of a subset of `limit` rows of n; all rows when limit is 0 or at least n."""
    if not limit or limit >= n:
        return np.arange(n)
    return np.sort(draw_order(labels, n, seed, limit))


def take(items: Sequence[T], limit: int, seed: int, labels: Sequence[Hashable] | None = None) -> list[T]:
    """`limit` items drawn by `seed` (stratified by `labels` when given), in their original order."""
    return [items[i] for i in draw(labels, len(items), limit, seed)]


def take_stream(items: Iterable[T], limit: int, seed: int) -> list[T]:
    """The same rows as take(list(items), limit, seed) without holding the stream: the `limit` smallest keys."""
    if not limit:
        return list(items)
    heap: list[tuple[float, int, T]] = []  # max-heap on the key, through negation
    for i, item in enumerate(items):
        entry = (-uniform_key(seed, "row", i), -i, item)
        if len(heap) < limit:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)
    return [item for _, _, item in sorted(heap, key=lambda e: -e[1])]


def split_seed(split: str, seed: int) -> int:
    """The seed a split's subset is drawn with: the run's seed for train, a fixed one for eval and test."""
    return int(seed) if split == "train" else EVAL_SEED
