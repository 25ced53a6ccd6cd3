"""General distillation while pretraining: the student's masked-LM loss mixes the labels with its teacher's
softened vocabulary distribution (checked against numpy), the teacher is a frozen argument of the step (no
gradient, no optimizer state, not saved), the run resumes bit for bit and shards like any, and a teacher the
student cannot read is refused in one line."""

import filecmp
import os
import shutil
import signal

import jax
import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from plm_jax.config_base import mlm_pretrain_config, pretrain_config
from plm_jax.errors import UserError
from plm_jax.run import build_task, train
from plm_jax.tasks.starting_point import plm_jax_run_params
from plm_jax.train.checkpoint import tree_equal
from plm_jax.train.setup import build
from plm_jax.train.trainer import train as train_task
from tests.corpus import write_corpus

VOCAB = 56


def _config(corpus, hidden_size, num_layers, steps, **distill):
    c = mlm_pretrain_config()
    c.model.update(vocab_size=VOCAB, num_layers=num_layers, hidden_size=hidden_size, num_heads=2,
                   mlp_dim=2 * hidden_size, max_len=64)
    c.data.update(source="text", paths=(corpus,), seq_len=64, shuffle_buffer=128)
    c.train.update(batch_size=16, steps=steps, lr=3e-3, warmup_steps=4, log_every=5, eval_every=10,
                   eval_batches=2, checkpoint_every=5, keep_checkpoints=5, async_checkpoints=False)
    c.distill.update(**distill)
    return c


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    base = tmp_path_factory.mktemp("mlm_distill")
    corpus = write_corpus(base / "corpus.txt", 1200)
    workdir = str(base / "teacher")
    train(_config(corpus, hidden_size=64, num_layers=2, steps=40), workdir)
    return base, corpus, workdir


def _student(corpus, teacher_dir, steps=20, **changes):
    return _config(corpus, hidden_size=32, num_layers=1, steps=steps, teacher=teacher_dir, alpha=0.6,
                   temperature=2.0, **changes)


@pytest.fixture(scope="module")
def student(teacher):
    base, corpus, teacher_dir = teacher
    workdir = str(base / "student")
    return workdir, train(_student(corpus, teacher_dir), workdir)


@pytest.mark.slow
def test_the_loss_mixes_the_masked_tokens_and_the_teachers_distribution(teacher):
    base, corpus, teacher_dir = teacher
    task = build_task(_student(corpus, teacher_dir))
    task.prepare(str(base / "probe"))
    setup = build(task)
    teacher_params = setup.frozen_args[0]
    student_leaves = jax.tree.leaves(setup.abstract_state.params)
    moments = [x for x in jax.tree.leaves(setup.abstract_state.opt_state) if x.shape]
    assert len(moments) == 2 * len(student_leaves)  # AdamW's mu and nu of the student alone
    assert sum(x.size for x in jax.tree.leaves(teacher_params)) > sum(x.size for x in student_leaves)

    params = setup.init_state(0).params
    batch = next(task.train_batches(0, {}))
    sums = jax.jit(lambda p, f, b: task.loss_sums(p, b, deterministic=True, frozen=f))(params, teacher_params, batch)
    objective = task.objective
    s = np.asarray(objective.logits(task.model, params, batch, True), np.float64)
    t = np.asarray(objective.logits(task.teacher.model, teacher_params, batch, True), np.float64)
    w, targets = np.asarray(batch["masked_weights"]), np.asarray(batch["masked_ids"])
    ce = -np.take_along_axis(log_softmax(s, -1), targets[..., None], -1)[..., 0]
    p_t = softmax(t / 2.0, -1)
    kd = 4.0 * np.sum(p_t * (np.log(p_t) - log_softmax(s / 2.0, -1)), -1)
    np.testing.assert_allclose(float(sums["loss_sum"]), np.sum((0.4 * ce + 0.6 * kd) * w), rtol=1e-4)
    plain = task.loss_sums(params, batch, deterministic=True)  # evaluation: the student's own masked-LM loss
    np.testing.assert_allclose(float(plain["loss_sum"]), np.sum(ce * w), rtol=1e-4)
    grads = jax.grad(lambda f: task.loss_sums(params, batch, deterministic=True, frozen=f)["loss_sum"])(
        teacher_params)
    assert not any(np.any(np.asarray(g)) for g in jax.tree.leaves(grads))


@pytest.mark.slow
def test_the_student_learns_takes_the_teachers_tokenizer_and_stands_alone(teacher, student, tmp_path):
    base, corpus, teacher_dir = teacher
    workdir, results = student
    assert filecmp.cmp(os.path.join(workdir, "tokenizer.model"), os.path.join(teacher_dir, "tokenizer.model"),
                       shallow=False)
    start, end = results["eval_at_start"], results["eval_at_end"]
    assert end["loss"] < start["loss"] - 0.3 and end["accuracy"] > 2 * start["accuracy"], (start, end)
    moved = str(tmp_path / "teacher_moved")  # the student's run reads no file of its teacher's
    shutil.move(teacher_dir, moved)
    try:
        model_cfg, _, params = plm_jax_run_params(workdir, heads=("encoder", "mlm_head"))
    finally:
        shutil.move(moved, teacher_dir)
    assert (model_cfg.num_layers, model_cfg.hidden_size) == (1, 32)
    assert sorted(k for k in params["encoder"] if k.startswith("layer")) == ["layer_0"]  # the student's alone


@pytest.mark.slow
def test_a_distillation_resumed_after_sigterm_equals_an_uninterrupted_one(teacher, student):
    base, corpus, teacher_dir = teacher
    workdir, results = student
    resumed = str(base / "student_resumed")
    task = build_task(_student(corpus, teacher_dir))
    batches = task.train_batches

    def then_sigterm(start_step, position):
        for step, batch in enumerate(batches(start_step, position), start=start_step):
            if step == 12:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    task.train_batches = then_sigterm
    assert train_task(task, resumed)["interrupted_at"] == 13
    again = train(_student(corpus, teacher_dir), resumed)
    assert again["eval_at_end"] == results["eval_at_end"]
    _, _, a = plm_jax_run_params(workdir, heads=("encoder", "mlm_head"))
    _, _, b = plm_jax_run_params(resumed, heads=("encoder", "mlm_head"))
    assert tree_equal(a, b)


@pytest.mark.slow
def test_teacher_and_student_sharded_over_8_devices_equal_one_device(teacher):
    base, corpus, teacher_dir = teacher
    finals = []
    for mesh, devices in ((dict(data=2, fsdp=4, tensor=1), None), (dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])):
        config = _student(corpus, teacher_dir)
        config.mesh.update(**mesh)
        task = build_task(config)
        task.prepare(str(base / f"sharded_{len(devices or jax.devices())}"))
        setup = build(task, devices)
        split = [x for x in jax.tree.leaves(setup.frozen_args[0]) if x.sharding.shard_shape(x.shape) != x.shape]
        assert bool(split) == (devices is None)  # on 8 devices the teacher is sharded by the rules
        state = setup.init_state(0)
        for _, batch in zip(range(3), task.train_batches(0, {})):
            state, metrics = setup.train_step(state, setup.to_global(batch), *setup.frozen_args)
        finals.append((jax.tree.map(np.asarray, state.params), float(metrics["loss"])))
    (eight, loss8), (one, loss1) = finals
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(eight), jax.tree.leaves(one)):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_a_teacher_the_student_cannot_read_is_refused_in_one_line(teacher, tmp_path):
    base, corpus, teacher_dir = teacher
    wider = _student(corpus, teacher_dir)
    wider.model.vocab_size = 60
    with pytest.raises(UserError, match="model.vocab_size=60, but distill.teacher .* has 56"):
        build_task(wider)
    other = _student(corpus, teacher_dir)
    other.data.tokenizer = str(tmp_path / "other.model")
    shutil.copyfile(os.path.join(teacher_dir, "config.json"), other.data.tokenizer)
    with pytest.raises(UserError, match="is not distill.teacher .*'s tokenizer"):
        build_task(other)
    causal = pretrain_config("causal_lm")
    causal.model.update(vocab_size=VOCAB, num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64, max_len=64)
    causal.data.update(source="text", paths=(corpus,), seq_len=64)
    causal.distill.teacher = teacher_dir
    with pytest.raises(UserError, match="general distillation trains a masked LM"):
        build_task(causal)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        build_task(_student(corpus, str(tmp_path / "nope")))
    with pytest.raises(UserError, match="not a plm_jax pretraining run"):
        build_task(_student(corpus, str(tmp_path)))
    with pytest.raises(UserError, match=r"distill.alpha=2.0 must be in \[0, 1\]"):
        build_task(_config(corpus, 32, 1, 5, teacher=teacher_dir, alpha=2.0))
