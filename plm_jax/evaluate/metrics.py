"""Classification and regression metrics for fine-tuning evaluation, in plain numpy.

They match scikit-learn / SciPy (the tests check that) but need neither at run time, and never return NaN:
a metric that is undefined (no positive predictions, a constant side) is 0.0, so it can be logged and compared.
"""

from __future__ import annotations

import numpy as np

from plm_jax.errors import UserError


def _check_labels(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if num_classes < 2:
        raise UserError(f"num_classes must be >= 2, got {num_classes}")
    if predictions.ndim != 1 or predictions.shape != labels.shape:
        raise UserError(f"predictions and labels must be 1-D of one length, got shapes {predictions.shape} and "
                         f"{labels.shape}")
    if predictions.size == 0:
        raise UserError("no predictions to score (empty arrays)")
    for name, values in (("predictions", predictions), ("labels", labels)):
        if not np.issubdtype(values.dtype, np.integer):
            raise UserError(f"{name} must be integer class ids, got dtype {values.dtype}")
        if values.min() < 0 or values.max() >= num_classes:
            raise UserError(f"{name} must be in [0, {num_classes}), got values {values.min()}..{values.max()}")
    return predictions.astype(np.int64), labels.astype(np.int64)


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[num_classes, num_classes] int64 counts; rows are true labels, columns predictions (sklearn's layout)."""
    predictions, labels = _check_labels(predictions, labels, num_classes)
    counts = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _safe_div(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def classification_metrics(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """accuracy, macro precision/recall/F1, Matthews correlation (mcc), and binary P/R/F1 when num_classes == 2.

    Macro averages run over the classes present in labels or predictions (sklearn's default), so a class that
    never occurs in a small eval set does not drag the average down with a meaningless 0.
    """
    cm = confusion_matrix(predictions, labels, num_classes).astype(np.float64)
    true_positive = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = _safe_div(true_positive, predicted)
    recall = _safe_div(true_positive, actual)
    f1 = _safe_div(2 * true_positive, predicted + actual)
    present = (predicted + actual) > 0
    n = cm.sum()
    out = {
        "accuracy": float(true_positive.sum() / n),
        "precision_macro": float(precision[present].mean()),
        "recall_macro": float(recall[present].mean()),
        "f1_macro": float(f1[present].mean()),
    }
    if num_classes == 2:
        out.update(precision=float(precision[1]), recall=float(recall[1]), f1=float(f1[1]))
    # Multi-class MCC (Gorodkin 2004), as sklearn.metrics.matthews_corrcoef; 0 when a side has a single class.
    cov_true_pred = true_positive.sum() * n - actual @ predicted
    cov_pred = n * n - predicted @ predicted
    cov_true = n * n - actual @ actual
    out["mcc"] = float(cov_true_pred / np.sqrt(cov_true * cov_pred)) if cov_true * cov_pred > 0 else 0.0
    return out


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (scipy.stats.rankdata's "average")."""
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    new_run = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], x.size]
    run_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(x.size, np.float64)
    ranks[order] = run_rank[np.cumsum(new_run) - 1]
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx @ dx) * (dy @ dy))
    return float(np.clip((dx @ dy) / denominator, -1.0, 1.0)) if denominator > 0 else 0.0


def regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """pearson, spearman (average ranks for ties) and mse; correlations are 0.0 when either side is constant."""
    x, y = np.asarray(predictions, np.float64), np.asarray(targets, np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise UserError(f"predictions and targets must be 1-D of one length, got {x.shape} and {y.shape}")
    if x.size == 0:
        raise UserError("no predictions to score (empty arrays)")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise UserError("predictions and targets must be finite (found NaN or inf)")
    return {
        "pearson": _pearson(x, y),
        "spearman": _pearson(_average_ranks(x), _average_ranks(y)),
        "mse": float(np.mean((x - y) ** 2)),
    }
