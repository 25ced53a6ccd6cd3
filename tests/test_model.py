"""The encoder against a plain numpy BERT, packing isolation, and the sparse MLM head."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from scipy.special import erf

from plm_jax.models.config import TransformerConfig
from plm_jax.models.encoder import BertForMaskedLM, Encoder, dummy_inputs

TINY = dict(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=48, max_len=24)


def _layer_norm(x, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def numpy_bert(params, ids, seg, pos, cfg: TransformerConfig):
    """Hugging Face BERT's forward, written out in numpy for one unpacked-or-packed batch."""
    emb = params["embeddings"]
    x = emb["word_embeddings"]["embedding"][ids] + emb["position_embeddings"][pos] + emb["token_type_embeddings"][0]
    x = _layer_norm(x, emb["layer_norm"], cfg.layer_norm_eps)
    allowed = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] != 0)
    for i in range(cfg.num_layers):
        p = params[f"layer_{i}"]
        a = p["attention"]
        q, k, v = (np.einsum("bld,dhk->blhk", x, a[n]["kernel"]) + a[n]["bias"] for n in ("query", "key", "value"))
        s = np.einsum("bqhk,bthk->bhqt", q, k) / np.sqrt(cfg.kv_dim)
        s = np.where(allowed[:, None], s, -1e9)
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        o = np.einsum("bhqt,bthk->bqhk", w, v)
        o = np.einsum("blhk,hkd->bld", o, a["out"]["kernel"]) + a["out"]["bias"]
        x = _layer_norm(x + o, p["attention_layer_norm"], cfg.layer_norm_eps)
        m = p["mlp"]
        h = _gelu(x @ m["wi"]["kernel"] + m["wi"]["bias"]) @ m["wo"]["kernel"] + m["wo"]["bias"]
        x = _layer_norm(x + h, p["mlp_layer_norm"], cfg.layer_norm_eps)
    return x


def _init(cfg, module_cls=BertForMaskedLM):
    model = module_cls(cfg)
    inputs = dummy_inputs(cfg, 2, cfg.max_len)
    if module_cls is Encoder:
        inputs.pop("masked_positions_BxP")
    params = nn.unbox(model.init(jax.random.key(0), **inputs)["params"])
    # non-trivial LayerNorm parameters so the reference check sees them
    return model, jax.tree.map(lambda p: p + 0.05 * np.random.default_rng(p.size).standard_normal(p.shape), params)


def test_encoder_matches_numpy_reference_bert():
    cfg = TransformerConfig(**TINY, dropout_rate=0.0, attention_dropout_rate=0.0)
    model, params = _init(cfg, Encoder)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, cfg.vocab_size, (2, 24)).astype(np.int32)
    seg = np.array([[1] * 10 + [2] * 9 + [0] * 5, [1] * 24], np.int32)
    pos = np.array([list(range(10)) + list(range(9)) + [0] * 5, list(range(24))], np.int32)
    ours = model.apply({"params": params}, ids, seg, pos)
    ref = numpy_bert(jax.tree.map(np.asarray, params), ids, seg, pos, cfg)
    valid = seg != 0
    np.testing.assert_allclose(np.asarray(ours)[valid], ref[valid], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("pre_ln,act", [(False, "gelu"), (True, "geglu")])
def test_packed_documents_do_not_see_each_other(pre_ln, act):
    """Changing one document of a packed row leaves the other documents' outputs unchanged."""
    cfg = TransformerConfig(**TINY, pre_layer_norm=pre_ln, mlp_activation=act)
    model, params = _init(cfg)
    rng = np.random.default_rng(1)
    seg = np.array([[1] * 7 + [2] * 11 + [3] * 4 + [0] * 2], np.int32)
    pos = np.array([list(range(7)) + list(range(11)) + list(range(4)) + [0, 0]], np.int32)
    ids = rng.integers(5, cfg.vocab_size, (1, 24)).astype(np.int32)
    changed = ids.copy()
    changed[0, 7:18] = rng.integers(5, cfg.vocab_size, 11)  # document 2 rewritten
    all_positions = np.arange(24, dtype=np.int32)[None]
    out_a = np.asarray(model.apply({"params": params}, ids, seg, pos, all_positions))
    out_b = np.asarray(model.apply({"params": params}, changed, seg, pos, all_positions))
    others = (seg[0] == 1) | (seg[0] == 3)
    np.testing.assert_array_equal(out_a[0, others], out_b[0, others])
    assert not np.allclose(out_a[0, seg[0] == 2], out_b[0, seg[0] == 2])


def test_sparse_head_equals_dense_head_gathered():
    cfg = TransformerConfig(**TINY)
    model, params = _init(cfg)
    rng = np.random.default_rng(2)
    ids = rng.integers(5, cfg.vocab_size, (2, 24)).astype(np.int32)
    seg, pos = np.ones_like(ids), np.tile(np.arange(24, dtype=np.int32), (2, 1))
    masked = np.array([[1, 5, 9], [0, 2, 23]], np.int32)
    dense = model.apply({"params": params}, ids, seg, pos, np.tile(np.arange(24, dtype=np.int32), (2, 1)))
    sparse = model.apply({"params": params}, ids, seg, pos, masked)
    assert sparse.shape == (2, 3, cfg.vocab_size)
    np.testing.assert_allclose(sparse, np.take_along_axis(np.asarray(dense), masked[..., None], 1), atol=1e-5)


def test_parameters_carry_logical_axes_and_bert_layout():
    cfg = TransformerConfig(**TINY)
    boxed = BertForMaskedLM(cfg).init(jax.random.key(0), **dummy_inputs(cfg))["params"]
    specs = nn.get_partition_spec(boxed)
    unannotated = [jax.tree_util.keystr(p) for p, s in jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: x is None or isinstance(x, jax.sharding.PartitionSpec))[0] if s is None]
    assert not unannotated
    assert specs["encoder"]["embeddings"]["word_embeddings"]["embedding"] == jax.sharding.PartitionSpec(
        "vocab", "embed")
    assert set(boxed) == {"encoder", "pooler", "mlm_head"}


def test_bad_model_config_is_named():
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible by model.num_heads=4"):
        TransformerConfig(**{**TINY, "hidden_size": 30})
    with pytest.raises(ValueError, match="unknown model config key"):
        TransformerConfig.from_config({**TINY, "hiden_size": 3})


def test_dropout_rate_scale_and_independence():
    from plm_jax.models.layers import Dropout

    x = np.ones((64, 33, 257), np.float32)
    y = np.asarray(Dropout(0.1).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)}))
    kept = y != 0
    assert abs(1 - kept.mean() - 0.1) < 0.003  # 543k draws: 0.003 is 7 standard deviations
    threshold = round(0.1 * 2**32)
    np.testing.assert_allclose(y[kept], 2**32 / (2**32 - threshold), rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.005  # unbiased
    # every slice along every axis keeps its share (a hash of the index must not leave stripes)
    for axis in range(3):
        share = kept.mean(axis=tuple(a for a in range(3) if a != axis))
        n = kept.size / kept.shape[axis]
        assert np.all(np.abs(share - 0.9) < 6 * np.sqrt(0.09 / n)), axis
        # neighbours along the axis are independent
        a, b = np.take(kept, range(kept.shape[axis] - 1), axis), np.take(kept, range(1, kept.shape[axis]), axis)
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01, axis
    z = np.asarray(Dropout(0.1).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(1)}))
    other = z != 0
    assert abs(np.corrcoef(kept.ravel(), other.ravel())[0, 1]) < 0.01  # another key, an independent mask
    np.testing.assert_array_equal(Dropout(0.1).apply({}, x, deterministic=True), x)
    np.testing.assert_array_equal(Dropout(1.0).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)}),
                                  0 * x)


def test_dropout_mask_is_the_same_on_any_mesh():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from plm_jax.models.layers import Dropout

    x = np.ones((8, 12, 16), np.float32)
    apply = jax.jit(lambda x, key: Dropout(0.3).apply({}, x, deterministic=False, rngs={"dropout": key}))
    whole = np.asarray(apply(x, jax.random.key(5)))
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ("a", "b", "c"))
    for spec in (PartitionSpec("a", "b", "c"), PartitionSpec(("a", "b", "c")), PartitionSpec(None, None, "a")):
        split = apply(jax.device_put(x, NamedSharding(mesh, spec)), jax.random.key(5))
        np.testing.assert_array_equal(np.asarray(split), whole)


def test_fused_attention_matches_einsum_and_keeps_packing():
    base = dict(TINY, dropout_rate=0.0, attention_dropout_rate=0.0)
    model, params = _init(TransformerConfig(**base))
    fused = BertForMaskedLM(TransformerConfig(**base, attention="xla"))
    rng = np.random.default_rng(3)
    ids = rng.integers(5, 97, (2, 24)).astype(np.int32)
    seg = np.array([[1] * 10 + [2] * 9 + [0] * 5, [1] * 24], np.int32)
    pos = np.array([list(range(10)) + list(range(9)) + [0] * 5, list(range(24))], np.int32)
    everywhere = np.tile(np.arange(24, dtype=np.int32), (2, 1))
    a = np.asarray(model.apply({"params": params}, ids, seg, pos, everywhere))
    b = np.asarray(fused.apply({"params": params}, ids, seg, pos, everywhere))
    valid = seg != 0
    np.testing.assert_allclose(b[valid], a[valid], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="no attention-probability dropout"):
        TransformerConfig(**TINY, attention="cudnn")


def test_token_loss_sums_match_numpy_cross_entropy_accuracy_and_gradient():
    from plm_jax.tasks.objectives import token_loss_sums

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (3, 5, 11)).astype(np.float32)
    targets = rng.integers(0, 11, (3, 5)).astype(np.int32)
    targets[0, :2] = logits[0, :2].argmax(-1)  # some right, most wrong
    weights = rng.integers(0, 2, (3, 5)).astype(np.float32)
    sums = token_loss_sums(logits, targets, weights)
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(sums["loss_sum"], (nll * weights).sum(), rtol=1e-5)
    np.testing.assert_allclose(sums["correct_sum"], ((logits.argmax(-1) == targets) * weights).sum())
    np.testing.assert_allclose(sums["weight_sum"], weights.sum())
    grad = jax.grad(lambda z: token_loss_sums(z, targets, weights)["loss_sum"])(logits)
    expected = (np.exp(logp) - np.eye(11)[targets]) * weights[..., None]  # softmax minus one-hot
    np.testing.assert_allclose(grad, expected, atol=1e-6)


def test_gelu_dense_matches_dense_then_gelu_with_the_same_parameters_and_gradients():
    """GeluDense's hand-written gradient against autodiff of DenseGeneral + jax.nn.gelu, and GELU' against the
    numpy formula Phi(x) + x phi(x)."""
    import jax.numpy as jnp

    from plm_jax.models import layers

    cfg = TransformerConfig(hidden_size=16, num_heads=2, mlp_dim=24)

    class Reference(nn.Module):
        @nn.compact
        def __call__(self, x):
            return jax.nn.gelu(layers.dense(cfg, 24, ("embed", "mlp"), "wi")(x), approximate=False)

    class Fused(nn.Module):
        @nn.compact
        def __call__(self, x):
            return layers.GeluDense(cfg, 24, name="wi")(x)

    x = jax.random.normal(jax.random.key(1), (2, 3, 16))
    ref_params, fused_params = Reference().init(jax.random.key(0), x), Fused().init(jax.random.key(0), x)
    assert jax.tree.map(lambda a: a.names, fused_params, is_leaf=lambda a: isinstance(a, nn.Partitioned)) == \
        {"params": {"wi": {"kernel": ("embed", "mlp"), "bias": ("mlp",)}}}
    params = nn.unbox(ref_params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(nn.unbox(fused_params))):
        np.testing.assert_array_equal(a, b)  # the same initial values
    params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(2), a.shape), params)

    def loss(model, p, v):
        return jnp.sum(jnp.sin(model.apply(p, v)))

    np.testing.assert_allclose(loss(Fused(), params, x), loss(Reference(), params, x), rtol=1e-6)
    grads = jax.grad(loss, argnums=(1, 2))
    for a, b in zip(jax.tree.leaves(grads(Fused(), params, x)), jax.tree.leaves(grads(Reference(), params, x))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    z = np.linspace(-6, 6, 101)
    expected = 0.5 * (1 + erf(z / np.sqrt(2))) + z * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(jax.grad(lambda v: jnp.sum(layers.gelu(v)))(jnp.asarray(z, jnp.float32)), expected,
                               rtol=1e-5, atol=1e-6)
    rows = jax.random.normal(jax.random.key(3), (40, 24))  # both ways of summing the bias gradient agree
    np.testing.assert_allclose(layers._ones_matmul(rows), layers._column_sum(rows), rtol=1e-5, atol=1e-5)
