"""Task distillation through the one trainer: the teacher is a frozen argument of the train step (no gradient, no
optimizer state, not checkpointed), the loss mixes the labels with the teacher's softened outputs (checked against
numpy), and a teacher the student cannot read (tokenizer, kind, labels) is refused in one line."""

import json
import os
import signal

import jax
import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from plm_jax.config_base import finetune_config
from plm_jax.data.tokenizer import train_tokenizer
from plm_jax.errors import UserError
from plm_jax.run import build_task, load, train
from plm_jax.tasks import classification
from plm_jax.tasks import finetuning as fdata
from plm_jax.train.checkpoint import tree_equal
from plm_jax.train.rundir import RunDir
from plm_jax.train.setup import build
from tests import corpus

VOCAB = 60


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    base = tmp_path_factory.mktemp("distill")
    train_tokenizer(corpus.documents(500), VOCAB, base / "spm.model")
    rng = np.random.default_rng(0)
    for split, n in (("train", 512), ("eval", 96)):
        corpus.write_sentiment_csv(base / f"{split}.csv", n, rng)
    workdir = str(base / "teacher")
    results = train(_config(base, hidden_size=32, num_layers=2, epochs=6), workdir)
    return base, workdir, results


def _config(base, hidden_size, num_layers, epochs, **distill):
    c = finetune_config()
    c.tokenizer = str(base / "spm.model")
    c.model.update(vocab_size=VOCAB, hidden_size=hidden_size, num_layers=num_layers, num_heads=2,
                   mlp_dim=2 * hidden_size, max_len=64)
    c.task.update(source="local", train_file=str(base / "train.csv"), eval_file=str(base / "eval.csv"), seq_len=60)
    c.train.update(batch_size=32, epochs=epochs, lr=3e-3, warmup_frac=0.1, log_every=4, async_checkpoints=False)
    c.distill.update(**distill)
    return c


def _student_config(base, teacher_dir, **changes):
    return _config(base, hidden_size=32, num_layers=1, epochs=6, teacher=teacher_dir, alpha=0.7, temperature=2.0,
                   **changes)


@pytest.fixture(scope="module")
def student(teacher):
    base, teacher_dir, _ = teacher
    workdir = str(base / "student")
    return workdir, train(_student_config(base, teacher_dir), workdir)


@pytest.mark.slow
def test_the_teacher_is_an_argument_of_the_step_and_the_loss_mixes_labels_and_teacher(teacher):
    base, teacher_dir, teacher_results = teacher
    assert teacher_results["best"]["metrics"]["accuracy"] >= 0.9, teacher_results["best"]
    task = build_task(_student_config(base, teacher_dir))
    setup = build(task)
    teacher_params = setup.frozen_args[0]
    student_leaves = jax.tree.leaves(setup.abstract_state.params)
    moments = [x for x in jax.tree.leaves(setup.abstract_state.opt_state) if x.shape]
    assert len(moments) == 2 * len(student_leaves)  # AdamW's mu and nu of the 1-layer student, none of the teacher
    assert len(jax.tree.leaves(teacher_params)) > len(student_leaves)  # the 2-layer teacher

    # the loss on one batch: (1 - alpha) * cross-entropy + alpha * T^2 KL(teacher || student), from numpy
    state = setup.init_state(0)
    batch = task.batch(task.splits["train"].arrays, np.arange(32))
    sums = jax.jit(lambda p, f, b: task.loss_sums(p, b, deterministic=True, frozen=f))(state.params, teacher_params,
                                                                                     batch)
    s_logits = np.asarray(task.forward(state.params, batch, True))
    t_logits = np.asarray(task.teacher.task.forward(teacher_params, batch, True))
    ce = -log_softmax(s_logits, -1)[np.arange(32), batch["labels"]]
    p_t = softmax(t_logits / 2.0, -1)
    kd = 4.0 * np.sum(p_t * (np.log(p_t) - log_softmax(s_logits / 2.0, -1)), -1)
    np.testing.assert_allclose(float(sums["loss_sum"]), np.sum(0.3 * ce + 0.7 * kd), rtol=1e-4)
    plain = task.loss_sums(state.params, batch, deterministic=True)  # evaluation: the task's own loss
    np.testing.assert_allclose(float(plain["loss_sum"]), ce.sum(), rtol=1e-4)
    # no gradient reaches the teacher
    grads = jax.grad(lambda f: task.loss_sums(state.params, batch, deterministic=True, frozen=f)["loss_sum"])(
        teacher_params)
    assert not any(np.any(np.asarray(g)) for g in jax.tree.leaves(grads))


@pytest.mark.slow
def test_the_student_learns_and_the_teacher_is_neither_changed_nor_saved(teacher, student):
    base, teacher_dir, _ = teacher
    workdir, results = student
    assert results["best"]["metrics"]["accuracy"] >= 0.75, results["best"]
    setup = build(build_task(_student_config(base, teacher_dir)))
    reloaded = jax.tree.map(np.asarray, setup.frozen_args[0])
    original, _ = RunDir(teacher_dir).params(
        build(build_task(_config(base, hidden_size=32, num_layers=2, epochs=6))).abstract_state.params)
    assert tree_equal(reloaded, jax.tree.map(np.asarray, original))
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["distill"]["teacher"] == teacher_dir
    shapes = [x.shape for x in jax.tree.leaves(load(workdir).params)]
    assert shapes == [x.shape for x in jax.tree.leaves(setup.abstract_state.params)]  # the student's alone


@pytest.mark.slow
def test_a_distillation_resumed_after_sigterm_equals_an_uninterrupted_one(teacher, student, monkeypatch):
    base, teacher_dir, _ = teacher
    workdir, results = student
    resumed = str(base / "student_resumed")
    real_rows = fdata.train_rows

    def rows_then_sigterm(seed, step, *args):
        if step == 37:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_rows(seed, step, *args)

    monkeypatch.setattr(fdata, "train_rows", rows_then_sigterm)
    assert train(_student_config(base, teacher_dir), resumed)["interrupted_at"] == 38
    monkeypatch.setattr(fdata, "train_rows", real_rows)
    assert train(_student_config(base, teacher_dir), resumed)["best"] == results["best"]
    assert tree_equal(load(workdir).params, load(resumed).params)


@pytest.mark.slow
def test_teacher_and_student_sharded_over_8_devices_equal_one_device(teacher):
    base, teacher_dir, _ = teacher

    def student(mesh, devices):
        config = _student_config(base, teacher_dir)
        config.mesh.update(**mesh)
        task = build_task(config)
        return task, [task.batch(task.splits["train"].arrays, task.train_rows(step)) for step in range(3)]

    assert_8_devices_equal_one(student)


def assert_8_devices_equal_one(student):
    """Three steps of a distillation, on 8 simulated devices and on one, end with the same loss and parameters;
    on 8 the teacher is sharded by the rules. student(mesh, devices) -> (its task, its first 3 train batches)."""
    finals = []
    for mesh, devices in ((dict(data=2, fsdp=4, tensor=1), None), (dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])):
        task, batches = student(mesh, devices)
        setup = build(task, devices)
        split = [x for x in jax.tree.leaves(setup.frozen_args[0]) if x.sharding.shard_shape(x.shape) != x.shape]
        assert bool(split) == (devices is None)  # on 8 devices the teacher is sharded by the rules
        state = setup.init_state(0)
        for batch in batches:
            state, metrics = setup.train_step(state, setup.to_global(batch), *setup.frozen_args)
        finals.append((jax.tree.map(np.asarray, state.params), float(metrics["loss"])))
    (eight, loss8), (one, loss1) = finals
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(eight), jax.tree.leaves(one)):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_a_teacher_the_student_cannot_read_is_refused_in_one_line(teacher, tmp_path):
    base, teacher_dir, _ = teacher
    train_tokenizer(corpus.documents(400), VOCAB, tmp_path / "other.model")
    other = _config(base, hidden_size=16, num_layers=1, epochs=1, teacher=teacher_dir)
    other.tokenizer = str(tmp_path / "other.model")
    with pytest.raises(UserError, match="uses another tokenizer"):
        build_task(other, str(tmp_path / "a"))
    regression = _config(base, hidden_size=16, num_layers=1, epochs=1, teacher=teacher_dir)
    regression.task.kind = "regression"
    with pytest.raises(UserError, match="is a classification fine-tune; this run is regression"):
        build_task(regression, str(tmp_path / "b"))
    longer = _config(base, hidden_size=16, num_layers=1, epochs=1, teacher=teacher_dir)
    longer.model.max_len, longer.task.seq_len = 128, 100
    with pytest.raises(UserError, match="task.seq_len=100 exceeds distill.teacher .* max_len=64"):
        build_task(longer, str(tmp_path / "f"))
    with pytest.raises(UserError, match=r"distill.alpha=1.5 must be in \[0, 1\]"):
        build_task(_config(base, 16, 1, 1, teacher=teacher_dir, alpha=1.5), str(tmp_path / "c"))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        build_task(_config(base, 16, 1, 1, teacher=str(tmp_path / "nope")), str(tmp_path / "d"))
    with pytest.raises(UserError, match="not a fine-tuned plm_jax run"):
        build_task(_config(base, 16, 1, 1, teacher=str(tmp_path)), str(tmp_path / "e"))


@pytest.mark.slow
def test_the_rest_of_the_train_split_joins_labeled_by_the_teacher_alone(teacher, tmp_path):
    base, teacher_dir, _ = teacher
    config = _student_config(base, teacher_dir, unlabeled="rest")
    config.task.max_train_examples = 128
    task = build_task(config)
    arrays = task.splits["train"].arrays
    assert len(task.splits["train"]) == 512  # 128 labeled rows, then the 384 the draw left out
    alone = _student_config(base, teacher_dir)
    alone.task.max_train_examples = 128
    labeled = classification.load_split(alone.task, "train", 0).examples  # the same 128 as without unlabeled text
    np.testing.assert_array_equal(arrays["labels"][:128], [e.label for e in labeled])
    assert (arrays["labels"][128:] == -1).all()
    every = _student_config(base, teacher_dir)
    whole = classification.encode(classification.load_split(every.task, "train", 0).examples, task.tokenizer, 60)
    assert sorted(map(bytes, arrays["input_ids"])) == sorted(map(bytes, whole["input_ids"]))  # each row once

    # a batch of 16 labeled and 16 teacher-only rows: the label term covers the first 16 alone (numpy)
    setup = build(task)
    params, teacher_params = setup.init_state(0).params, setup.frozen_args[0]
    batch = task.batch(arrays, np.concatenate([np.arange(16), np.arange(200, 216)]))
    sums = jax.jit(lambda p, f, b: task.loss_sums(p, b, deterministic=True, frozen=f))(params, teacher_params, batch)
    s_logits = np.asarray(task.forward(params, batch, True))
    t_logits = np.asarray(task.teacher.task.forward(teacher_params, batch, True))
    ce = -log_softmax(s_logits[:16], -1)[np.arange(16), batch["labels"][:16]]
    p_t = softmax(t_logits / 2.0, -1)
    kd = 4.0 * np.sum(p_t * (np.log(p_t) - log_softmax(s_logits / 2.0, -1)), -1)
    np.testing.assert_allclose(float(sums["loss_sum"]), 0.3 * ce.sum() + 0.7 * kd.sum(), rtol=1e-4)
    assert (float(sums["weight_sum"]), float(sums["labeled_sum"])) == (32.0, 16.0)
    plain = task.loss_sums(params, batch, deterministic=True)  # evaluation's loss reads labels only
    np.testing.assert_allclose(float(plain["loss_sum"]), ce.sum(), rtol=1e-4)
    assert float(plain["weight_sum"]) == 16.0

    config.train.epochs = 1
    results = train(config, str(tmp_path / "rest"))
    assert (results["train_examples"], results["unlabeled_examples"]) == (128, 384)


@pytest.mark.slow
def test_a_file_of_unlabeled_texts_and_its_errors(teacher, tmp_path):
    base, teacher_dir, _ = teacher
    texts = tmp_path / "reviews.txt"
    texts.write_text("".join(f"an unlabeled review number {i}\n" for i in range(40)) + "\n", encoding="utf-8")
    task = build_task(_student_config(base, teacher_dir, unlabeled=str(texts), max_unlabeled=10))
    labels = task.splits["train"].arrays["labels"]
    assert len(labels) == 512 + 10 and (labels[512:] == -1).all() and (labels[:512] >= 0).all()
    with pytest.raises(UserError, match="needs a teacher to label it"):
        build_task(_config(base, 16, 1, 1, unlabeled="rest"), str(tmp_path / "a"))
    with pytest.raises(UserError, match="set task.max_train_examples"):
        build_task(_student_config(base, teacher_dir, unlabeled="rest"), str(tmp_path / "b"))
    with pytest.raises(FileNotFoundError, match="distill.unlabeled .*nope.txt: no such file"):
        build_task(_student_config(base, teacher_dir, unlabeled=str(tmp_path / "nope.txt")), str(tmp_path / "c"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="latin1.txt: not UTF-8 text"):
        build_task(_student_config(base, teacher_dir, unlabeled=str(tmp_path / "latin1.txt")), str(tmp_path / "d"))
