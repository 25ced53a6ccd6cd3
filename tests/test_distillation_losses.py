"""Distillation losses against numpy and SciPy formulas; the teacher gets no gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from plm_jax.tasks.distillation_losses import hidden_mse, mixed_loss, relation_kl, relations, soft_cross_entropy_kl


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_soft_cross_entropy_kl_is_t_squared_times_the_kl_of_the_softened_distributions(temperature):
    rng = np.random.default_rng(int(temperature * 10))
    student, teacher = rng.normal(size=(2, 5, 7)) * 3
    p = softmax(teacher / temperature, axis=-1)
    expected = temperature ** 2 * np.sum(p * (np.log(p) - log_softmax(student / temperature, axis=-1)), axis=-1)
    got = soft_cross_entropy_kl(jnp.asarray(student), jnp.asarray(teacher), temperature)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(got) >= -1e-6)
    np.testing.assert_allclose(np.asarray(soft_cross_entropy_kl(jnp.asarray(teacher), jnp.asarray(teacher),
                                                                temperature)), 0.0, atol=1e-5)


def test_the_teacher_gets_no_gradient_and_the_student_gets_t_times_the_softmax_difference():
    rng = np.random.default_rng(0)
    student, teacher = (jnp.asarray(a) for a in rng.normal(size=(2, 3, 4)))
    t = 2.0
    g_student, g_teacher = jax.grad(lambda s, te: soft_cross_entropy_kl(s, te, t).sum(), argnums=(0, 1))(student,
                                                                                                        teacher)
    assert not np.any(np.asarray(g_teacher))
    # d/ds [T^2 KL(p_t || softmax(s/T))] = T (softmax(s/T) - p_t)
    expected = t * (softmax(np.asarray(student) / t, axis=-1) - softmax(np.asarray(teacher) / t, axis=-1))
    np.testing.assert_allclose(np.asarray(g_student), expected, rtol=1e-5, atol=1e-6)


def _numpy_relations(x, heads, segments):
    """Per row, per relation head, per query: log softmax over the keys of the query's own segment."""
    b, length, d = x.shape
    dr = d // heads
    out = np.full((b, heads, length, length), -np.inf)
    for i in range(b):
        for r in range(heads):
            xr = x[i, :, r * dr:(r + 1) * dr]
            for q in np.flatnonzero(segments[i]):
                keys = np.flatnonzero(segments[i] == segments[i, q])
                out[i, r, q, keys] = log_softmax(xr[q] @ xr[keys].T / np.sqrt(dr))
    return out


def test_relations_and_their_kl_match_numpy_for_a_student_of_another_width():
    rng = np.random.default_rng(1)
    mask = np.array([[1, 1, 2, 2, 0], [1, 1, 1, 0, 0]])  # row 0 packs two segments; 0 is padding
    student, teacher = rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 5, 12))
    rel_s, rel_t = _numpy_relations(student, 4, mask), _numpy_relations(teacher, 4, mask)
    got = np.asarray(relations(jnp.asarray(student), 4, jnp.asarray(mask)))
    valid = np.isfinite(rel_s)
    assert valid.sum() == 4 * (2 * 2 + 2 * 2 + 3 * 3)
    np.testing.assert_allclose(got[valid], rel_s[valid], rtol=1e-5, atol=1e-5)
    with np.errstate(invalid="ignore"):  # -inf - -inf outside the segment, dropped by the where
        kl = np.where(valid, np.exp(rel_t) * (rel_t - rel_s), 0.0).sum(-1)  # B x R x L
    expected = (kl.mean(1) * (mask > 0)).sum(-1)
    np.testing.assert_allclose(np.asarray(relation_kl(jnp.asarray(student), jnp.asarray(teacher), 4,
                                                      jnp.asarray(mask))), expected, rtol=1e-5, atol=1e-6)
    # what sits at padded positions does not count
    moved = student.copy()
    moved[0, 4], moved[1, 3:] = 100.0, -50.0
    np.testing.assert_allclose(np.asarray(relation_kl(jnp.asarray(moved), jnp.asarray(teacher), 4,
                                                      jnp.asarray(mask))), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="does not split into 3 relation heads"):
        relations(jnp.asarray(student), 3, jnp.asarray(mask))


def test_hidden_mse_and_the_mix():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 2, 3, 4))
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    expected = (((a - b) ** 2).mean(-1) * mask).sum(-1)
    np.testing.assert_allclose(np.asarray(hidden_mse(jnp.asarray(a), jnp.asarray(b), jnp.asarray(mask))), expected,
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(mixed_loss(jnp.asarray([1.0, 2.0]), jnp.asarray([3.0, 5.0]), 0.25)),
                               [1.5, 2.75])


def test_qa_distillation_is_the_mean_start_and_end_kl_over_the_real_tokens():
    """DistilBERT's SQuAD term, from numpy over each row's real tokens only: the padding the QA head pushes to -1e9
    adds nothing (and no NaN)."""
    from plm_jax.tasks.qa_task import QATask, span_logits

    rng = np.random.default_rng(3)
    segments = np.array([[1] * 10, [1] * 6 + [0] * 4])
    student, teacher = [span_logits(tuple(jnp.asarray(x) for x in rng.normal(size=(2, 2, 10)) * 2),
                                    jnp.asarray(segments)) for _ in range(2)]
    t = 2.0
    got = np.asarray(QATask.distill_terms(None, student, teacher, t))  # uses no state of the task
    expected = []
    for row, length in enumerate((10, 6)):
        kls = []
        for s_logits, t_logits in zip(student, teacher):
            s, te = np.asarray(s_logits)[row, :length], np.asarray(t_logits)[row, :length]
            p = softmax(te / t)
            kls.append(t * t * np.sum(p * (np.log(p) - log_softmax(s / t))))
        expected.append(np.mean(kls))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("regression", [False, True])
def test_rows_the_teacher_alone_labels_add_nothing_to_the_label_loss(regression):
    """distill.unlabeled rows carry label -1 (classes) or NaN (scores): weight 0 in the task's own loss, no NaN."""
    from types import SimpleNamespace

    from plm_jax.tasks.classification_task import ClassificationTask

    rng = np.random.default_rng(4)
    outputs = rng.normal(size=(6, 1 if regression else 3)).astype(np.float32)
    labels = (np.array([0.5, -1.0, 2.0, np.nan, np.nan, 0.0], np.float32) if regression
              else np.array([2, 0, -1, 1, -1, -1], np.int32))
    weights = np.array([1, 1, 1, 1, 1, 0], np.float32)  # the last row is batch padding
    task = SimpleNamespace(regression=regression)
    sums = ClassificationTask.sums(task, jnp.asarray(outputs), {"labels": jnp.asarray(labels),
                                                                "example_weights": jnp.asarray(weights)})
    kept = np.flatnonzero(weights * (np.isfinite(labels) if regression else labels >= 0))
    if regression:
        expected = np.sum((outputs[kept, 0] - labels[kept]) ** 2)  # -1.0 is a score like any
    else:
        expected = -np.sum(log_softmax(outputs, -1)[kept, labels[kept]])
    np.testing.assert_allclose(float(sums["loss_sum"]), expected, rtol=1e-5)
    assert float(sums["weight_sum"]) == len(kept) == 3
