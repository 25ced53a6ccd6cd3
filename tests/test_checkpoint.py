"""Checkpoints restore onto other mesh shapes, and a checkpoint of another model shape is refused by name."""

import jax
import numpy as np
import pytest

from plm_jax.models.config import TransformerConfig
from plm_jax.models.encoder import BertForMaskedLM, dummy_inputs
from plm_jax.parallel import sharding
from plm_jax.train import optimizer
from plm_jax.train import state as state_lib
from plm_jax.train.checkpoint import Checkpointer, CheckpointMismatchError, tree_equal
from tests.test_sharding import TRAIN

CFG = TransformerConfig(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, max_len=8)


def _state(cfg, mesh_shape):
    n = int(np.prod(mesh_shape))
    mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, mesh_shape)), jax.devices()[:n])
    model, (tx, _) = BertForMaskedLM(cfg), optimizer.make_optimizer(TRAIN)
    abstract, shardings = state_lib.state_shardings(model, tx, dummy_inputs(cfg), mesh, sharding.DEFAULT_RULES)
    return abstract, state_lib.init_state(model, tx, dummy_inputs(cfg), shardings, jax.random.key(3))


@pytest.mark.slow
def test_restore_onto_other_meshes(tmp_path):
    _, saved = _state(CFG, (2, 2, 2))
    ckpt = Checkpointer(str(tmp_path), keep=2)
    ckpt.save(7, saved, {"rows_consumed": 224})
    ckpt.close()
    for shape in [(4, 2, 1), (8, 1, 1), (1, 1, 1)]:
        abstract, _ = _state(CFG, shape)
        reader = Checkpointer(str(tmp_path))
        assert reader.latest_step() == 7
        restored, data = reader.restore(7, abstract)
        assert data == {"rows_consumed": 224}
        assert tree_equal(restored, saved)
        leaf = restored.params["encoder"]["layer_0"]["mlp"]["wi"]["kernel"]
        assert len(leaf.sharding.device_set) == int(np.prod(shape))
        reader.close()


def test_checkpoint_of_another_shape_is_refused(tmp_path):
    _, saved = _state(CFG, (1, 1, 1))
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save(1, saved, {"rows_consumed": 0})
    ckpt.close()
    other = TransformerConfig(**{**CFG.to_dict(), "hidden_size": 32})
    abstract, _ = _state(other, (1, 1, 1))
    with pytest.raises(CheckpointMismatchError, match=r"differ in shape, e\.g\. .*checkpoint \(.*16.*\) vs config"):
        Checkpointer(str(tmp_path)).restore(1, abstract)
    deeper = TransformerConfig(**{**CFG.to_dict(), "num_layers": 2})
    abstract, _ = _state(deeper, (1, 1, 1))
    with pytest.raises(CheckpointMismatchError, match="missing from the checkpoint.*layer_1"):
        Checkpointer(str(tmp_path)).restore(1, abstract)
    assert (tmp_path / "1").exists()  # nothing was lost


def test_a_second_save_of_the_same_step_is_skipped(tmp_path):
    """A stop signal that lands on a periodic checkpoint's step saves again with force=True: it must find the
    checkpoint there, not fail (Orbax raises StepAlreadyExistsError), and the first one must stay as it was."""
    _, saved = _state(CFG, (1, 1, 1))
    ckpt = Checkpointer(str(tmp_path))
    assert ckpt.save(20, saved, {"rows_consumed": 640})
    assert not ckpt.save(20, saved, {"rows_consumed": 999}, force=True)  # in flight or done: skipped
    ckpt.close()
    reader = Checkpointer(str(tmp_path))
    assert not reader.save(20, saved, {"rows_consumed": 999}, force=True)  # on disk from an earlier process
    abstract, _ = _state(CFG, (1, 1, 1))
    assert reader.restore(20, abstract)[1] == {"rows_consumed": 640}
    reader.close()
