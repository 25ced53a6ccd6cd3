"""One train step on 8 simulated devices equals one device, for data, FSDP and tensor meshes."""

import os

import jax
import ml_collections
import numpy as np
import pytest

from plm_jax.models.config import TransformerConfig
from plm_jax.models.encoder import BertForMaskedLM, dummy_inputs
from plm_jax.parallel import sharding
from plm_jax.tasks.objectives import get_objective
from plm_jax.train import optimizer
from plm_jax.train import state as state_lib
from plm_jax.train import step as step_lib
from plm_jax.train.task import Task

CFG = TransformerConfig(vocab_size=128, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_len=16)
TRAIN = ml_collections.ConfigDict(dict(steps=10, warmup_steps=2, lr=1e-3, end_lr_fraction=0.0, decay="linear",
                                       clip_norm=1.0, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01))


def _batch(B=16, L=16, P=4):
    rng = np.random.default_rng(0)
    seg = np.repeat(np.array([[1] * 9 + [2] * 7]), B, 0).astype(np.int32)
    return dict(
        input_ids=rng.integers(5, 128, (B, L)).astype(np.int32), segment_ids=seg,
        positions=np.repeat(np.array([list(range(9)) + list(range(7))]), B, 0).astype(np.int32),
        masked_positions=np.sort(rng.choice(L, (B, P)), axis=1).astype(np.int32),
        masked_ids=rng.integers(5, 128, (B, P)).astype(np.int32), masked_weights=np.ones((B, P), np.float32))


class MlmTask(Task):
    """The MLM loss alone: what the train step needs of a task."""

    def __init__(self, model, objective):
        self.model, self.objective = model, objective

    def loss_sums(self, params, batch, *, deterministic, rngs=None):
        return self.objective.loss_sums(self.model, params, batch, deterministic=deterministic, rngs=rngs)


def make_train(cfg, mesh_shape, accum_steps=1, rules=sharding.DEFAULT_RULES):
    """(initial state, jitted train step, batch sharding) for `cfg` on the first prod(mesh_shape) devices; the
    activations are pinned by `rules` as in training (None: left to the partitioner)."""
    n = int(np.prod(mesh_shape))
    mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, mesh_shape)), jax.devices()[:n])
    model, (tx, schedule) = BertForMaskedLM(cfg), optimizer.make_optimizer(TRAIN)
    _, shardings = state_lib.state_shardings(model, tx, dummy_inputs(cfg), mesh, sharding.DEFAULT_RULES)
    state = state_lib.init_state(model, tx, dummy_inputs(cfg), shardings, jax.random.key(0))
    data_sharding = sharding.batch_sharding(mesh, sharding.DEFAULT_RULES)
    train, _, _ = step_lib.jit_steps(MlmTask(model, get_objective("mlm", cfg)), tx, schedule, shardings,
                                     data_sharding, jax.random.key(1), accum_steps=accum_steps, rules=rules)
    return state, train, data_sharding


def _run(mesh_shape, steps=2):
    state, train, data_sharding = make_train(CFG, mesh_shape)
    batch = {k: jax.make_array_from_process_local_data(data_sharding, v) for k, v in _batch().items()}
    losses = []
    for _ in range(steps):
        state, metrics = train(state, batch)
        losses.append(float(metrics["loss"]))
    return losses, state


@pytest.fixture(scope="module")
def single_device():
    return _run((1, 1, 1))


@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_sharded_step_equals_single_device(single_device, mesh_shape):
    assert jax.device_count() == 8
    losses, state = _run(mesh_shape)
    ref_losses, ref_state = single_device
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6, rtol=1e-5)
    # the parameters really are split as the rules say
    kernel = state.params["encoder"]["layer_0"]["mlp"]["wi"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    shard_shape = kernel.addressable_shards[0].data.shape
    assert shard_shape == (32 // mesh_shape[1], 64 // mesh_shape[2])


def test_mesh_shape_errors_are_clear():
    with pytest.raises(ValueError, match="needs 12 devices, but 8"):
        sharding.mesh_shape(dict(data=3, fsdp=4, tensor=1), 8)
    with pytest.raises(ValueError, match="does not divide"):
        sharding.mesh_shape(dict(data=-1, fsdp=3, tensor=1), 8)
    assert sharding.mesh_shape(dict(data=-1, fsdp=2, tensor=2), 8) == (2, 2, 2)


@pytest.mark.parametrize("strategy,sizes,expected", [
    ("dp", {}, (8, 1, 1)),
    ("fsdp", {}, (1, 8, 1)),
    ("tp", {}, (1, 1, 8)),
    ("fsdp+tp", {"tensor": 2}, (1, 4, 2)),
    ("dp+fsdp", {"fsdp": 2}, (4, 2, 1)),
    ("dp+fsdp+tp", {"fsdp": 2, "tensor": 2}, (2, 2, 2)),
    ("", {"fsdp": 2}, (4, 2, 1)),  # no strategy: the sizes as given
])
def test_named_strategies_pick_the_mesh_axes(strategy, sizes, expected):
    mesh_cfg = {"data": -1, "fsdp": 1, "tensor": 1, "strategy": strategy, **sizes}
    assert sharding.mesh_shape(mesh_cfg, 8) == expected
    assert dict(sharding.make_mesh(mesh_cfg).shape) == dict(zip(sharding.MESH_AXES, expected))


def test_a_strategy_refuses_sizes_on_axes_it_does_not_use():
    with pytest.raises(ValueError, match="mesh.strategy='tp' uses no fsdp axis, but mesh.fsdp=2"):
        sharding.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1, "strategy": "tp"}, 8)
    with pytest.raises(ValueError, match="mesh.strategy='zero3'; expected one of"):
        sharding.mesh_shape({"data": -1, "fsdp": 1, "tensor": 1, "strategy": "zero3"}, 8)


@pytest.mark.slow
def test_activations_are_pinned_by_their_logical_names_only_when_the_rules_name_them():
    def constraints(rules, mesh_shape=(2, 2, 2)):
        state, train, data_sharding = make_train(CFG, mesh_shape, rules=rules)
        batch = {k: jax.make_array_from_process_local_data(data_sharding, v) for k, v in _batch().items()}
        text = train.lower(state, batch).as_text()
        return [line for line in text.splitlines() if "sharding_constraint" in line or "@Sharding" in line]

    pinned = constraints(sharding.DEFAULT_RULES)
    # per layer: q, k, v, attention output, MLP hidden, layer output (and their transposes in the backward pass)
    assert len(pinned) >= 6 * CFG.num_layers, len(pinned)
    assert any('{"data", "fsdp"}, {}, {"tensor"}' in line for line in pinned), pinned[:3]  # [B, L, H, K] heads
    assert constraints(None) == []
    # a rule table from before activations had names pins no activation (rather than replicating them all); only
    # the embedding tables are gathered over `embed` before their lookups, by their parameter names
    old_rules = tuple(r for r in sharding.DEFAULT_RULES if not r[0].startswith("activation_"))
    old = constraints(old_rules)
    assert old and not any('{"data", "fsdp"}' in line for line in old), old
    # outside a traced step (plain apply, decoding) constrain is the identity
    x = np.ones((2, 3, 4), np.float32)
    assert sharding.constrain(x, ("activation_batch", "activation_length", "activation_embed")) is x


@pytest.mark.slow
def test_fsdp_and_tensor_meshes_compile_without_involuntary_rematerialization():
    """XLA warns when it must replicate a tensor to reshard it; pinned activations and gathered embedding tables
    leave it nothing to guess (3 warnings per mesh before)."""
    import subprocess
    import sys

    script = (
        "import jax\n"
        "from tests.test_sharding import make_train, CFG, _batch\n"
        "for shape in [(2, 4, 1), (2, 2, 2)]:\n"
        "    state, train, ds = make_train(CFG, shape)\n"
        "    batch = {k: jax.make_array_from_process_local_data(ds, v) for k, v in _batch().items()}\n"
        "    train.lower(state, batch).compile()\n"
        "print('compiled')\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, env=env,
                         timeout=600)
    assert out.returncode == 0 and "compiled" in out.stdout, out.stderr[-2000:]
    assert "Involuntary full rematerialization" not in out.stderr, out.stderr[-2000:]
