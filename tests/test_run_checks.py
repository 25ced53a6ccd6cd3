"""Checks on a run directory before any work: a failed first start blocks nothing, a resume that changes what the run
computes is refused, and a batch the devices cannot split is named."""

import os

import pytest

from plm_jax.config_base import mlm_pretrain_config
from plm_jax.errors import UserError
from plm_jax.tasks.pretraining import check_config
from plm_jax.train.rundir import RunDir


def test_a_run_without_a_saved_step_takes_a_corrected_config(tmp_path):
    run = RunDir(str(tmp_path))
    first = mlm_pretrain_config()
    first.model.hidden_size = 64
    (tmp_path / "config.json").write_text(first.to_json_best_effort(), encoding="utf-8")
    corrected = mlm_pretrain_config()
    corrected.model.hidden_size = 32
    assert run.saved_config(if_trained=True) is None and run.saved_config()["model"]["hidden_size"] == 64
    check_config(corrected, run)  # nothing trained: no refusal
    os.makedirs(tmp_path / "checkpoints" / "10")
    with pytest.raises(UserError, match="another model shape"):
        check_config(corrected, run)


def test_a_batch_the_devices_cannot_split_is_named():
    import jax

    from plm_jax.parallel.sharding import batch_sharding, make_mesh, rules_from_config
    from plm_jax.train.setup import check_batch_splits

    config = mlm_pretrain_config()
    config.mesh.update(data=-1, fsdp=1, tensor=1)
    mesh = make_mesh(config.mesh, jax.devices()[:8])
    sharding = batch_sharding(mesh, rules_from_config(config.logical_axis_rules))
    config.train.batch_size = 12
    with pytest.raises(UserError, match=r"train.batch_size = 12 does not split over the 8 devices"):
        check_batch_splits(config.train, mesh, sharding)
    config.train.update(batch_size=32, grad_accum_steps=8)  # microbatches of 4 rows: XLA shards them unevenly
    check_batch_splits(config.train, mesh, sharding)


def test_a_resume_with_another_learning_rate_seed_or_data_is_refused_naming_each(tmp_path):
    run = RunDir(str(tmp_path))
    saved = mlm_pretrain_config()
    (tmp_path / "config.json").write_text(saved.to_json_best_effort(), encoding="utf-8")
    os.makedirs(tmp_path / "checkpoints" / "10")
    changed = mlm_pretrain_config()
    changed.train.update(lr=saved.train.lr * 10, log_every=7, steps=5000)  # log_every and steps are safe
    changed.seed = 3
    changed.data.mask_rate = 0.4
    with pytest.raises(UserError) as e:
        check_config(changed, run)
    message = str(e.value)
    assert "train.lr:" in message and "seed: 0 -> 3" in message and "data.mask_rate: 0.15 -> 0.4" in message
    assert "log_every:" not in message and "train.steps:" not in message
    safe = mlm_pretrain_config()
    safe.train.update(log_every=7, steps=5000, keep_checkpoints=9)
    check_config(safe, run)


def test_small_subsets_get_their_minimum_steps():
    from plm_jax.tasks.finetuning import training_epochs

    assert training_epochs(3, steps_per_epoch=3, min_steps=300) == 100  # 100 labels, batch 32
    assert training_epochs(3, steps_per_epoch=266, min_steps=300) == 3  # all 8,530: epochs already suffice
    assert training_epochs(3, steps_per_epoch=7, min_steps=0) == 3


def test_a_fine_tune_resumed_with_other_init_layers_is_refused_and_an_older_run_still_resumes(tmp_path):
    import json

    from plm_jax.config_base import finetune_config
    from plm_jax.tasks.finetuning import check_workdir

    config = finetune_config()
    config.init, config.init_layers = "runs/minilm", (0, 2)
    saved = json.loads(config.to_json_best_effort())
    os.makedirs(tmp_path / "checkpoints" / "10")
    (tmp_path / "config.json").write_text(json.dumps(saved), encoding="utf-8")
    check_workdir(config, str(tmp_path))  # the same layers resume
    config.init_layers = ("0", "2")  # as --config.init_layers=0,2 gives them
    check_workdir(config, str(tmp_path))
    config.init_layers = (0, 1)
    with pytest.raises(UserError, match=r"another init_layers \(saved \[0, 2\], now \[0, 1\]\)"):
        check_workdir(config, str(tmp_path))
    del saved["init_layers"]  # a run from before the key kept every layer
    (tmp_path / "config.json").write_text(json.dumps(saved), encoding="utf-8")
    config.init_layers = ()
    check_workdir(config, str(tmp_path))
