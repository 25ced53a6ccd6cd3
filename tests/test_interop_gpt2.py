"""Hugging Face GPT-2 <-> plm_jax conversion, gated by logit parity against `transformers`' PyTorch GPT-2.

Everything is built offline from tiny random models; HF initialises biases to 0 and LayerNorm to 1, so every array
gets noise first, otherwise a swapped bias or scale would go unnoticed.
"""

import dataclasses
import json
import os
import shutil

os.environ.setdefault("USE_TF", "0")  # transformers: PyTorch only, no TensorFlow import

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from plm_jax.interop import hf_gpt2  # noqa: E402
from plm_jax.interop.hf_gpt2 import (  # noqa: E402
    config_from_hf,
    hf_config_dict,
    hf_to_params,
    load_gpt2_tokenizer,
    load_hf_gpt2,
    params_to_hf,
    save_hf_gpt2,
)
from plm_jax.models.config import TransformerConfig  # noqa: E402
from plm_jax.models.decoder import CausalLM, causal_dummy_inputs, decoding_setup, init_cache  # noqa: E402
from plm_jax.models.layout import to_scanned  # noqa: E402

TOL = 1e-5
VOCAB, LENGTH = 100, 12


def tiny_hf_config(**overrides) -> transformers.GPT2Config:
    kw = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32, activation_function="gelu_new",
              resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2Config(**{**kw, **overrides})


def hf_model(config: transformers.GPT2Config, cls: type = transformers.GPT2LMHeadModel) -> torch.nn.Module:
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # a tied lm_head shares wte's tensor, so it stays tied
            p.add_(0.05 * torch.randn_like(p))
    return model


def ids(seed: int = 0, vocab: int = VOCAB) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(2, LENGTH))


def run_ours(cfg: TransformerConfig, params: dict, ids_BxL: np.ndarray) -> np.ndarray:
    """Unpadded rows: one segment each, positions 0..L-1."""
    b, length = ids_BxL.shape
    return np.asarray(CausalLM(cfg).apply(
        {"params": params}, jnp.asarray(ids_BxL, jnp.int32), jnp.ones((b, length), jnp.int32),
        jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))))


def run_hf(model: torch.nn.Module, ids_BxL: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.as_tensor(ids_BxL))
        if isinstance(model, transformers.GPT2LMHeadModel):
            return out.logits.numpy()
        return (out.last_hidden_state @ model.wte.weight.T).numpy()  # GPT2Model: apply the tied head by hand


def perturbed_params(cfg: TransformerConfig) -> dict:
    """Our random init plus noise on every array, as plain numpy."""
    params = nn.unbox(CausalLM(cfg).init(jax.random.key(0), **causal_dummy_inputs(cfg, 1, 8))["params"])
    rng = np.random.default_rng(1)
    return jax.tree.map(lambda x: np.asarray(x) + rng.normal(0, 0.05, x.shape).astype(np.float32), params)


def assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.shape == y.shape and np.array_equal(x, y)


# --- HF -> ours ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls,safetensors,act,tied", [
    (transformers.GPT2LMHeadModel, True, "gelu_new", True),
    (transformers.GPT2LMHeadModel, False, "gelu", True),  # pytorch_model.bin
    (transformers.GPT2Model, True, "gelu_pytorch_tanh", True),  # no `transformer.` prefix, no lm_head
    (transformers.GPT2LMHeadModel, True, "relu", False)])
def test_hf_to_ours_parity(tmp_path, cls, safetensors, act, tied):
    model = hf_model(tiny_hf_config(activation_function=act, tie_word_embeddings=tied, n_inner=40), cls)
    model.save_pretrained(tmp_path, safe_serialization=safetensors)
    assert (tmp_path / ("model.safetensors" if safetensors else "pytorch_model.bin")).is_file()
    cfg, params = load_hf_gpt2(str(tmp_path))
    assert (cfg.architecture, cfg.pre_layer_norm, cfg.type_vocab_size, cfg.embedding_layer_norm) == (
        "decoder", True, 0, False)
    assert cfg.mlp_activation == {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}.get(act, act)
    assert (cfg.mlp_dim, cfg.max_len, cfg.tie_embeddings, cfg.layer_norm_eps) == (40, 32, tied, 1e-5)
    assert ("lm_head" in params) == (not tied)
    x = ids()
    diff = np.abs(run_ours(cfg, params, x) - run_hf(model, x)).max()
    assert diff <= TOL, diff


def test_scanned_import_and_export_match_unscanned():
    model = hf_model(tiny_hf_config())
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    cfg = config_from_hf(model.config.to_dict())
    scan_cfg = dataclasses.replace(cfg, scan_layers=True)
    params, scanned = hf_to_params(state, cfg), hf_to_params(state, scan_cfg)
    assert scanned["decoder"]["layers"]["layer"]["attention"]["query"]["kernel"].shape == (2, 32, 4, 8)
    assert_trees_equal(scanned, jax.tree.map(np.asarray, to_scanned(params)))
    x = ids(1)
    assert np.abs(run_ours(scan_cfg, scanned, x) - run_hf(model, x)).max() <= TOL
    exported, exported_scanned = params_to_hf(params, cfg), params_to_hf(scanned, scan_cfg)
    assert exported.keys() == exported_scanned.keys()
    assert all(np.array_equal(exported[k], exported_scanned[k]) for k in exported)
    # A scanned model's own init has the layout (names and shapes) the converter produces.
    init = jax.eval_shape(CausalLM(scan_cfg).init, jax.random.key(0), **causal_dummy_inputs(scan_cfg, 1, 8))
    shapes = lambda tree: jax.tree.map(lambda a: tuple(a.shape), tree)
    assert shapes(nn.unbox(init["params"])) == shapes(scanned)


def test_cached_decoding_matches_torch():
    """A 3-token prompt, then one token at a time through the cache: every step's logits equal torch's."""
    model = hf_model(tiny_hf_config())
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    scan_cfg = dataclasses.replace(config_from_hf(model.config.to_dict()), scan_layers=True)
    cfg, params = decoding_setup(scan_cfg, hf_to_params(state, scan_cfg))  # imported scanned, decoded unscanned
    x = ids(2)
    ref = run_hf(model, x)
    decode = jax.jit(lambda p, i, s, pos, c, idx: CausalLM(cfg).apply({"params": p}, i, s, pos, c, idx,
                                                                      method=CausalLM.decode))
    cache = init_cache(cfg, 2, LENGTH)
    steps = [(0, 3)] + [(t, t + 1) for t in range(3, LENGTH)]
    for start, end in steps:
        logits, cache = decode(params, jnp.asarray(x[:, start:end], jnp.int32), jnp.ones((2, end - start), jnp.int32),
                               jnp.broadcast_to(jnp.arange(start, end, dtype=jnp.int32), (2, end - start)), cache,
                               jnp.int32(start))
        diff = np.abs(np.asarray(logits) - ref[:, start:end]).max()
        assert diff <= TOL, (start, diff)


# --- ours -> HF ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied,act", [(True, "gelu_tanh"), (False, "gelu")])
def test_ours_to_hf_parity(tmp_path, tied, act):
    cfg = config_from_hf(tiny_hf_config().to_dict())
    cfg = dataclasses.replace(cfg, tie_embeddings=tied, mlp_activation=act, mlp_dim=48)
    params = perturbed_params(cfg)
    out = tmp_path / "hf"
    save_hf_gpt2(str(out), cfg, params)
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp dir left behind
    model, info = transformers.GPT2LMHeadModel.from_pretrained(str(out), output_loading_info=True,
                                                               attn_implementation="eager")
    model.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert model.config.tie_word_embeddings == tied and model.config.n_inner == 48
    assert (model.lm_head.weight is model.transformer.wte.weight) == tied
    x = ids(3)
    diff = np.abs(run_ours(cfg, params, x) - run_hf(model, x)).max()
    assert diff <= TOL, diff
    cfg_back, params_back = load_hf_gpt2(str(out))
    assert cfg_back == cfg
    assert_trees_equal(params_back, params)


def test_state_dict_variants():
    """Mask buffers are ignored; a tied lm_head.weight is accepted only when it equals wte."""
    cfg = config_from_hf(tiny_hf_config().to_dict())
    params = perturbed_params(cfg)
    state = params_to_hf(params, cfg)
    assert state["transformer.h.1.attn.c_attn.weight"].shape == (32, 96) and "lm_head.weight" not in state
    noisy = {**state, "transformer.h.0.attn.bias": np.ones((1, 1, 32, 32), bool),
             "transformer.h.0.attn.masked_bias": np.float32(-1e4),
             "lm_head.weight": state["transformer.wte.weight"].copy()}
    assert_trees_equal(hf_to_params(noisy, cfg), params)
    assert_trees_equal(hf_to_params({k.removeprefix("transformer."): v for k, v in state.items()}, cfg), params)
    with pytest.raises(ValueError, match="lm_head.weight differs.*tie_word_embeddings=false"):
        hf_to_params({**noisy, "lm_head.weight": noisy["lm_head.weight"] + 1}, cfg)


# --- errors --------------------------------------------------------------------------------------------------------


def test_refuses_bert(tmp_path):
    bert = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=32))
    bert.save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"BERT checkpoint.*'bert'.*BertForMaskedLM.*hf_bert"):
        load_hf_gpt2(str(tmp_path / "bert"))
    # BERT weights behind a GPT-2 config.json are named as such too.
    (tmp_path / "mixed").mkdir()
    shutil.copyfile(tmp_path / "bert" / "model.safetensors", tmp_path / "mixed" / "model.safetensors")
    (tmp_path / "mixed" / "config.json").write_text(json.dumps(tiny_hf_config().to_dict()))
    with pytest.raises(ValueError, match=r"holds BERT weights.*'bert\.embeddings"):
        load_hf_gpt2(str(tmp_path / "mixed"))


@pytest.mark.parametrize("fields,match", [
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True"),
    ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn=True"),
    ({"scale_attn_weights": False}, "scale_attn_weights=False"),
    ({"add_cross_attention": True}, "add_cross_attention=True"),
    ({"activation_function": "silu"}, "activation_function='silu'"),
    ({"model_type": "gpt_neo", "architectures": ["GPTNeoForCausalLM"]}, "model_type='gpt_neo'"),
    ({"n_head": 5}, "n_embd=32 is not divisible by n_head=5")])
def test_refuses_unsupported_configs(fields, match):
    with pytest.raises(ValueError, match=match):
        config_from_hf({**tiny_hf_config().to_dict(), **fields}, source="x/config.json")


def test_refuses_non_gpt2_layouts():
    cfg = config_from_hf(tiny_hf_config().to_dict())
    for field, value in (("pre_layer_norm", False), ("type_vocab_size", 2), ("embedding_layer_norm", True),
                         ("mlp_activation", "geglu")):
        with pytest.raises(ValueError, match=f"{field}=.*no Hugging Face GPT-2 counterpart"):
            hf_config_dict(dataclasses.replace(cfg, **{field: value}))
    with pytest.raises(ValueError, match="architecture='encoder'"):
        params_to_hf({}, dataclasses.replace(cfg, architecture="encoder"))


def test_bad_state_dicts_and_params():
    cfg = config_from_hf(tiny_hf_config().to_dict())
    params = perturbed_params(cfg)
    state = params_to_hf(params, cfg)
    missing = {k: v for k, v in state.items() if k != "transformer.h.1.mlp.c_fc.weight"}
    with pytest.raises(ValueError, match=r"ckpt: missing weight 'transformer.h.1.mlp.c_fc.weight' \(shape \(32, 128"):
        hf_to_params(missing, cfg, source="ckpt")
    wrong = {**state, "transformer.h.0.attn.c_attn.bias": np.zeros((95,), np.float32)}
    with pytest.raises(ValueError, match=r"'transformer.h.0.attn.c_attn.bias' has shape \(95,\), expected \(96,\)"):
        hf_to_params(wrong, cfg)
    extra = {**state, "transformer.h.2.ln_1.weight": np.ones((32,), np.float32)}
    with pytest.raises(ValueError, match=r"unexpected weight\(s\) \['transformer.h.2.ln_1.weight'\]"):
        hf_to_params(extra, cfg)
    untied = {**state, "lm_head.weight": np.zeros((VOCAB, 32), np.float32)}
    with pytest.raises(ValueError, match="lm_head.weight"):
        hf_to_params(untied, cfg)
    with pytest.raises(ValueError, match=r"missing weight 'lm_head.weight'"):
        hf_to_params(state, dataclasses.replace(cfg, tie_embeddings=False))
    lacking = jax.tree.map(lambda x: x, params)
    del lacking["decoder"]["layer_1"]["mlp"]["wo"]["bias"]
    with pytest.raises(ValueError, match="params lack decoder/layer_1/mlp/wo/bias"):
        params_to_hf(lacking, cfg)
    with pytest.raises(ValueError, match=r"params hold \['lm_head/kernel'\]"):
        params_to_hf({**params, "lm_head": {"kernel": np.zeros((32, VOCAB), np.float32)}}, cfg)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_hf_gpt2(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_gpt2(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(tiny_hf_config().to_dict()))
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin"):
        load_hf_gpt2(str(tmp_path))


def test_save_is_all_or_nothing(tmp_path, monkeypatch):
    cfg = config_from_hf(tiny_hf_config().to_dict())
    params = perturbed_params(cfg)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        save_hf_gpt2(str(tmp_path / "full"), cfg, params)
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "vocab.json").write_text("{}")
    (tmp_path / "tok" / "merges.txt").write_text("#version: 0.2\n")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(hf_gpt2.json, "dump", boom)
    with pytest.raises(OSError, match="disk full"):
        save_hf_gpt2(str(tmp_path / "new"), cfg, params)
    with pytest.raises(OSError, match="disk full"):  # a directory holding a tokenizer is left as it was
        save_hf_gpt2(str(tmp_path / "tok"), cfg, params)
    assert sorted(os.listdir(tmp_path)) == ["full", "tok"]
    assert sorted(os.listdir(tmp_path / "tok")) == ["merges.txt", "vocab.json"]
    monkeypatch.undo()
    save_hf_gpt2(str(tmp_path / "tok"), cfg, params)  # the tokenizer stays alongside the weights
    assert sorted(os.listdir(tmp_path / "tok")) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    assert sorted(os.listdir(tmp_path)) == ["full", "tok"]
    with pytest.raises(FileNotFoundError, match="no GPT-2 tokenizer"):
        save_hf_gpt2(str(tmp_path / "other"), cfg, params, tokenizer_dir=str(tmp_path / "full"))


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory) -> str:
    """A small byte-level BPE trained offline, saved as both tokenizer.json and vocab.json + merges.txt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 50 + ["hello world, hello there"] * 50,
                            trainer)
    path = tmp_path_factory.mktemp("bpe")
    tok.model.save(str(path))  # vocab.json + merges.txt
    tok.save(str(path / "tokenizer.json"))
    return str(path)


def test_tokenizer_travels_with_the_checkpoint(tmp_path, bpe_dir):
    text = "hello the quick fox<|endoftext|> lazy dog!"
    full = load_gpt2_tokenizer(bpe_dir)
    size = full.get_vocab_size(with_added_tokens=True)
    slow_dir = tmp_path / "slow"
    slow_dir.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(bpe_dir, name), slow_dir / name)
    from_files = load_gpt2_tokenizer(str(slow_dir))
    reference = transformers.GPT2TokenizerFast(vocab_file=str(slow_dir / "vocab.json"),
                                               merges_file=str(slow_dir / "merges.txt"))
    assert full.encode(text).ids == from_files.encode(text).ids == reference(text)["input_ids"]
    assert full.token_to_id("<|endoftext|>") in full.encode(text).ids  # kept whole, as a special token

    cfg = config_from_hf(tiny_hf_config(vocab_size=size + 4).to_dict())
    params = perturbed_params(cfg)
    save_hf_gpt2(str(tmp_path / "ckpt"), cfg, params, tokenizer_dir=bpe_dir)
    assert {"tokenizer.json", "vocab.json", "merges.txt"} <= set(os.listdir(tmp_path / "ckpt"))
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "ckpt"))
    assert hf_tok(text)["input_ids"] == load_gpt2_tokenizer(str(tmp_path / "ckpt")).encode(text).ids
    assert load_hf_gpt2(str(tmp_path / "ckpt"))[0] == cfg

    small = dataclasses.replace(cfg, vocab_size=size - 1)
    with pytest.raises(ValueError, match=f"tokenizer's {size} tokens exceed the model's vocab_size={size - 1}"):
        save_hf_gpt2(str(tmp_path / "small"), small, perturbed_params(small), tokenizer_dir=bpe_dir)
    assert not (tmp_path / "small").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".")]
    wordpiece = tmp_path / "wp"
    wordpiece.mkdir()
    (wordpiece / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece"}}))
    with pytest.raises(ValueError, match="WordPiece tokenizer, not GPT-2"):
        load_gpt2_tokenizer(str(wordpiece))
