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
from tests.test_distill import assert_8_devices_equal_one

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
    return _config(corpus, hidden_size=32, num_layers=1, steps=steps, **{"teacher": teacher_dir, "alpha": 0.6,
                                                                         "temperature": 2.0, **changes})


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

    def student(mesh, devices):
        config = _student(corpus, teacher_dir)
        config.mesh.update(**mesh)
        task = build_task(config)
        task.prepare(str(base / f"sharded_{len(devices or jax.devices())}"))
        return task, [batch for _, batch in zip(range(3), task.train_batches(0, {}))]

    assert_8_devices_equal_one(student)


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


# --- MiniLM-style relation transfer ------------------------------------------------------------------------------


def _qkv_numpy(params_layer, x_BxLxD):
    """A layer's query, key and value projections from its weights (heads joined): BxLxD each."""
    out = {}
    for name in ("query", "key", "value"):
        dense = params_layer["attention"][name]
        kernel = np.asarray(dense["kernel"], np.float64)  # D x H x K
        y = np.einsum("bld,dhk->blhk", x_BxLxD, kernel) + np.asarray(dense["bias"], np.float64)
        out[name] = y.reshape(*y.shape[:2], -1)
    return out


@pytest.mark.slow
def test_relation_transfer_matches_numpy_for_a_narrower_student(teacher):
    """The student's (1 layer, 32 wide) and the teacher's layer-0 (64 wide) query, key and value relations; the
    layer-0 projections are computed here from the weights and the embedding output."""
    from flax.traverse_util import flatten_dict

    from tests.test_distillation_losses import _numpy_relations

    base, corpus, teacher_dir = teacher
    task = build_task(_student(corpus, teacher_dir, kind="relations", teacher_layer=0, alpha=0.7))
    assert (task.teacher.relation_heads, task.teacher.teacher_layer) == (2, 0)  # the teacher's heads, by default
    task.prepare(str(base / "probe_relations"))
    setup = build(task)
    teacher_params = setup.frozen_args[0]
    assert sorted(teacher_params) == ["encoder"]  # the encoder alone: no MLM head is read
    params = setup.init_state(0).params
    batch = next(task.train_batches(0, {}))
    sums = jax.jit(lambda p, f, b: task.loss_sums(p, b, deterministic=True, frozen=f))(params, teacher_params, batch)

    def embedded(model, p):
        _, state = model.apply({"params": p}, *(batch[k] for k in task.objective.input_keys),
                               capture_intermediates=lambda m, method: m.name == "embeddings" and method == "__call__",
                               mutable=["intermediates"])
        (x,) = [v[0] for k, v in flatten_dict(state["intermediates"]).items() if "embeddings" in k]
        return np.asarray(x, np.float64)

    mine = _qkv_numpy(params["encoder"]["layer_0"], embedded(task.model, params))
    theirs = _qkv_numpy(jax.device_get(teacher_params)["encoder"]["layer_0"],
                        embedded(task.teacher.model, teacher_params))
    segments = np.asarray(batch["segment_ids"])
    relation = 0.0
    for name in ("query", "key", "value"):
        rel_s, rel_t = _numpy_relations(mine[name], 2, segments), _numpy_relations(theirs[name], 2, segments)
        with np.errstate(invalid="ignore"):
            kl = np.where(np.isfinite(rel_t), np.exp(rel_t) * (rel_t - rel_s), 0.0).sum(-1)
        relation += (kl.mean(1) * (segments > 0)).sum()
    s = np.asarray(task.objective.logits(task.model, params, batch, True), np.float64)
    w, targets = np.asarray(batch["masked_weights"]), np.asarray(batch["masked_ids"])
    ce = -np.take_along_axis(log_softmax(s, -1), targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(float(sums["loss_sum"]), 0.3 * np.sum(ce * w) + 0.7 * relation, rtol=2e-4)


@pytest.mark.slow
def test_a_hugging_face_teacher_lends_its_wordpiece_vocabulary_and_relations(teacher, tmp_path):
    """A tiny transformers BertModel (no MLM head) teaches a plm_jax student of another width over WordPiece
    tokens from tf.data; the student's run keeps the vocabulary and loads as a starting point without it."""
    import torch
    import transformers

    from plm_jax.data.text_tokenizer import load_text_tokenizer
    from plm_jax.tasks.starting_point import plm_jax_run_config

    base, corpus, _ = teacher
    words = sorted(set(open(corpus, encoding="utf-8").read().split()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    hf = tmp_path / "hf_teacher"
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64)).save_pretrained(hf)
    (hf / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = _config(corpus, hidden_size=32, num_layers=1, steps=6, teacher=str(hf), kind="relations", alpha=1.0,
                     relation_heads=4)
    config.model.vocab_size = len(vocab)
    results = train(config, str(tmp_path / "student"))
    assert np.isfinite(results["eval_at_end"]["loss"])
    copied = tmp_path / "student" / "vocab.txt"
    assert copied.read_text(encoding="utf-8") == (hf / "vocab.txt").read_text(encoding="utf-8")
    moved = tmp_path / "moved"
    shutil.move(str(hf), moved)
    _, model_cfg, tokenizer = plm_jax_run_config(str(tmp_path / "student"))
    assert (tokenizer.kind, tokenizer.path, model_cfg.hidden_size) == ("wordpiece", str(copied), 32)
    assert tokenizer.encode("the cat sees the dog") == load_text_tokenizer(str(moved)).encode("the cat sees the dog")
    narrow = _config(corpus, hidden_size=30, num_layers=1, steps=6, teacher=str(moved), kind="relations")
    narrow.model.update(vocab_size=len(vocab), num_heads=3)
    with pytest.raises(UserError, match="distill.relation_heads=4 does not divide the student's width 30"):
        build_task(narrow)
