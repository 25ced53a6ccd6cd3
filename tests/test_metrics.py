"""Evaluation metrics: numpy implementations agree with scikit-learn / SciPy; SQuAD EM/F1 follow the official script."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from plm_jax.evaluate.metrics import classification_metrics, confusion_matrix, regression_metrics
from plm_jax.evaluate.squad import exact_match_score, f1_score, normalize_answer, squad_metrics


@pytest.mark.filterwarnings("ignore:A single label")
@pytest.mark.parametrize("seed", range(20))
def test_classification_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 6))
    n = int(rng.integers(1, 60))
    # Some seeds leave classes out of labels and/or predictions, or make predictions mostly right.
    used = rng.choice(num_classes, size=int(rng.integers(1, num_classes + 1)), replace=False)
    labels = rng.choice(used, n)
    predictions = np.where(rng.random(n) < rng.random(), labels, rng.integers(0, num_classes, n))
    if seed % 5 == 0:
        predictions = np.full(n, int(used[0]))  # a constant prediction: MCC undefined -> 0
    got = classification_metrics(predictions, labels, num_classes)
    p, r, f, _ = skm.precision_recall_fscore_support(labels, predictions, average="macro", zero_division=0)
    expected = {"accuracy": skm.accuracy_score(labels, predictions), "precision_macro": p, "recall_macro": r,
                "f1_macro": f, "mcc": skm.matthews_corrcoef(labels, predictions)}
    if num_classes == 2:
        p, r, f, _ = skm.precision_recall_fscore_support(labels, predictions, average="binary", pos_label=1,
                                                         zero_division=0, labels=[0, 1])
        expected.update(precision=p, recall=r, f1=f)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
        assert isinstance(got[key], float)
    cm = skm.confusion_matrix(labels, predictions, labels=list(range(num_classes)))
    np.testing.assert_array_equal(confusion_matrix(predictions, labels, num_classes), cm)


def test_binary_edge_cases():
    # No positive predictions and no positive labels: precision/recall/F1 are 0, not NaN.
    got = classification_metrics(np.zeros(5, int), np.zeros(5, int), 2)
    assert got["accuracy"] == 1.0 and got["precision"] == got["recall"] == got["f1"] == 0.0 and got["mcc"] == 0.0
    perfect = classification_metrics(np.array([0, 1, 1, 0]), np.array([0, 1, 1, 0]), 2)
    assert perfect["mcc"] == 1.0 and perfect["f1"] == 1.0 and perfect["f1_macro"] == 1.0
    inverted = classification_metrics(np.array([1, 0, 0, 1]), np.array([0, 1, 1, 0]), 2)
    assert inverted["mcc"] == -1.0


def test_classification_input_errors():
    with pytest.raises(ValueError, match=r"must be in \[0, 3\)"):
        classification_metrics(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="one length"):
        classification_metrics(np.array([0, 1]), np.array([0]), 3)
    with pytest.raises(ValueError, match="empty"):
        classification_metrics(np.array([], int), np.array([], int), 3)
    with pytest.raises(ValueError, match="integer class ids"):
        classification_metrics(np.array([0.5]), np.array([0]), 2)


@pytest.mark.parametrize("seed", range(20))
def test_regression_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 50))
    targets = rng.integers(0, 6, n).astype(float) if seed % 2 else rng.normal(size=n)  # odd seeds: many ties
    predictions = np.round(targets + rng.normal(scale=rng.random() * 3, size=n), seed % 3)
    if np.all(predictions == predictions[0]) or np.all(targets == targets[0]):
        pytest.skip("constant input")  # covered by test_regression_constant
    got = regression_metrics(predictions, targets)
    assert got["pearson"] == pytest.approx(stats.pearsonr(predictions, targets)[0], abs=1e-10)
    assert got["spearman"] == pytest.approx(stats.spearmanr(predictions, targets)[0], abs=1e-10)
    assert got["mse"] == pytest.approx(skm.mean_squared_error(targets, predictions), rel=1e-12)


def test_regression_constant():
    got = regression_metrics(np.ones(4), np.array([1.0, 2.0, 3.0, 4.0]))
    assert got == {"pearson": 0.0, "spearman": 0.0, "mse": pytest.approx(3.5)}
    assert regression_metrics(np.array([2.0]), np.array([1.0]))["pearson"] == 0.0
    with pytest.raises(ValueError, match="finite"):
        regression_metrics(np.array([np.nan, 1.0]), np.array([1.0, 2.0]))


def test_normalize_answer_like_the_official_script():
    assert normalize_answer("The Cat!") == "cat"
    assert normalize_answer("  An   apple, a day. ") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert normalize_answer("the") == ""
    assert exact_match_score("The Cat!", "cat") == 1.0
    assert exact_match_score("cats", "cat") == 0.0


def test_f1_like_the_official_script():
    assert f1_score("the cat sat", "a cat sat down") == pytest.approx(2 * (2 / 2) * (2 / 3) / (2 / 2 + 2 / 3))
    assert f1_score("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)  # token counts, not sets
    assert f1_score("dog", "cat") == 0.0
    assert f1_score("", "") == 1.0 and f1_score("the", "") == 1.0  # both normalize to empty
    assert f1_score("", "cat") == 0.0 and f1_score("cat", "") == 0.0


def test_squad_metrics_v2():
    gold = {"q1": ["Paris", "the city of Paris"], "q2": [""], "q3": ["1984"], "q4": [""]}
    predictions = {"q1": "city of Paris", "q2": "", "q3": "in 1985", "q4": "something", "extra": "ignored"}
    got = squad_metrics(predictions, gold)
    assert got["exact_match"] == pytest.approx(100 * (1 + 1 + 0 + 0) / 4)
    assert got["f1"] == pytest.approx(100 * (1 + 1 + 0 + 0) / 4)
    assert (got["HasAns_total"], got["NoAns_total"], got["total"], got["missing"]) == (2, 2, 4, 0)
    assert got["HasAns_exact"] == 50.0 and got["NoAns_exact"] == 50.0
    partial = squad_metrics({"q1": "Paris France"}, {"q1": ["Paris"], "q2": ["Rome"], "q3": [""]})
    assert partial["missing"] == 2 and partial["f1"] == pytest.approx(100 * (2 / 3 + 0 + 1) / 3)
    assert partial["exact_match"] == pytest.approx(100 / 3)  # the missing unanswerable question counts as ""
    v1 = squad_metrics({"a": "the Cat!"}, {"a": ["cat"]})
    assert v1["exact_match"] == v1["f1"] == 100.0 and "NoAns_total" not in v1 and v1["HasAns_total"] == 1
    with pytest.raises(ValueError, match="list of strings"):
        squad_metrics({}, {"a": "cat"})
