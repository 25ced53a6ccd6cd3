"""Subsets drawn by a seed: stratified to within one example per class, nested across sizes, the same from a stream,
and used by every fine-tuning loader in place of the first N rows."""

import csv

import numpy as np
import pytest

from plm_jax.tasks import subsets
from plm_jax.tasks.classification import default_task_config, load_split


def _labels(rng, sizes):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    return labels.tolist()  # sorted by class, the case that "first N" gets wrong


@pytest.mark.parametrize("sizes", [(500, 500), (900, 90, 10), (37, 1, 400, 250)])
def test_every_prefix_is_stratified_and_sizes_nest(sizes):
    labels = _labels(np.random.default_rng(0), sizes)
    n = len(labels)
    for seed in (0, 1, 7):
        order = subsets.draw_order(labels, n, seed)
        assert sorted(order.tolist()) == list(range(n))
        counts = np.zeros(len(sizes))
        for k, row in enumerate(order, start=1):
            counts[labels[row]] += 1
            expected = k * np.asarray(sizes) / n
            assert np.all(np.abs(counts - expected) < 1.0), (seed, k, counts, expected)
        small, large = (set(subsets.draw(labels, n, m, seed).tolist()) for m in (100, 300))
        assert len(small) == 100 and len(large) == 300 and small < large


def test_seeds_draw_different_subsets_and_zero_means_all():
    labels = _labels(None, (300, 300))
    a, b = (set(subsets.draw(labels, 600, 100, s).tolist()) for s in (0, 1))
    assert a != b and len(a & b) < 60  # two independent draws of 1/6 share about 1/6 of their rows
    assert subsets.draw(labels, 600, 0, 3).tolist() == list(range(600))
    assert subsets.draw(labels, 600, 600, 3).tolist() == list(range(600))


def test_a_stream_draws_the_same_rows_as_a_list():
    items = [f"row {i}" for i in range(1000)]
    for limit in (1, 10, 999):
        assert subsets.take_stream(iter(items), limit, 5) == subsets.take(items, limit, 5)
    assert subsets.take_stream(iter(items), 0, 5) == items
    # unstratified draws are uniform: the mean index of 300 of 1000 rows is near the middle
    assert abs(np.mean(subsets.draw(None, 1000, 300, 2)) - 499.5) < 60


def test_a_label_sorted_csv_trains_on_every_class_and_eval_rows_do_not_follow_the_seed(tmp_path):
    path = tmp_path / "sorted.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for label, n in (("neg", 600), ("neu", 300), ("pos", 100)):
            writer.writerows([f"{label} review {i}", label] for i in range(n))
    cfg = default_task_config()
    cfg.update(source="local", text_a="text", train_file=str(path), eval_file=str(path), max_train_examples=100,
               max_eval_examples=50)
    counts = [np.bincount([e.label for e in load_split(cfg, "train", seed).examples], minlength=3) for seed in (0, 1)]
    for c in counts:
        assert np.all(np.abs(c - [60, 30, 10]) <= 1), c
    train0, train1 = (load_split(cfg, "train", s).examples for s in (0, 1))
    assert train0 != train1
    eval0, eval1 = (load_split(cfg, "eval", s).examples for s in (0, 1))
    assert eval0 == eval1 and {e.label for e in eval0} == {0, 1, 2}
