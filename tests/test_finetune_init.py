"""Where a fine-tune starts, checked against `transformers`: a Hugging Face directory in and back out, a plm_jax
pretraining run (graft and MLM export), extractive QA end to end, layer-wise LR decay, the CLI, and bad input.
"""

import json
import os
import subprocess
import sys

os.environ.setdefault("USE_TF", "0")  # transformers: PyTorch only, no TensorFlow import

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from plm_jax import inference  # noqa: E402
from plm_jax.config_base import finetune_config, mlm_pretrain_config  # noqa: E402
from plm_jax.data.text_tokenizer import load_text_tokenizer  # noqa: E402
from plm_jax.data.tokenizer import train_tokenizer  # noqa: E402
from plm_jax.errors import DataUnavailableError  # noqa: E402
from plm_jax.interop.hf_bert import hf_to_params  # noqa: E402
from plm_jax.models import layout  # noqa: E402
from plm_jax.models.config import TransformerConfig  # noqa: E402
from plm_jax.models.encoder import BertForMaskedLM, Encoder  # noqa: E402
from plm_jax.models.heads import BertForSequenceClassification, finetune_dummy_inputs  # noqa: E402
from plm_jax.run import load, train  # noqa: E402
from plm_jax.tasks import starting_point  # noqa: E402
from plm_jax.tasks.classification import TextExample, encode  # noqa: E402
from plm_jax.train import state as state_lib  # noqa: E402
from plm_jax.train.optimizer import layerwise_lr_decay, make_optimizer, weight_decay_mask  # noqa: E402
from tests import corpus  # noqa: E402
from tests.graft_recorder import finetune_recording_graft  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5
SEQ_LEN = 32
QA_WORDS = ("who", "is", "first", "flies", "here", "?")
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TEXTS = ["the happy cat sees the dog near the river because the cat is old .",
         "the dark dog likes the cat at the market because the dog is tall .",
         "the bright king finds the ship on the hill because the king is quiet ."]



@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A WordPiece vocab.txt of the corpus words, a 60-piece SentencePiece model, and a tiny CSV task."""
    base = tmp_path_factory.mktemp("finetune_init")
    words = sorted(set(" ".join(corpus.documents(200)).split()) | set(QA_WORDS))
    (base / "vocab.txt").write_text("\n".join([*SPECIALS, *words]) + "\n", encoding="utf-8")
    train_tokenizer(corpus.documents(200), 60, base / "spm.model")
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("eval", 32)):
        corpus.write_sentiment_csv(base / f"{split}.csv", n, rng)
    return base


def vocab_size(files) -> int:
    return len((files / "vocab.txt").read_text(encoding="utf-8").splitlines())


def cls_config(files, init: str = "", **train) -> ml_collections.ConfigDict:
    c = finetune_config()
    c.init = init
    c.task.update(source="local", train_file=str(files / "train.csv"), eval_file=str(files / "eval.csv"),
                  seq_len=SEQ_LEN)
    c.train.update(batch_size=16, eval_batch_size=32, epochs=1, lr=1e-4, warmup_frac=0.0, log_every=4,
                   async_checkpoints=False)
    c.train.update(**train)
    return c


def hf_inputs(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.as_tensor(arrays["input_ids"], dtype=torch.long),
            "attention_mask": torch.as_tensor(arrays["segment_ids"], dtype=torch.long),
            "token_type_ids": torch.as_tensor(arrays["token_type_ids"], dtype=torch.long)}


def ours_inputs(arrays: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return dict(input_ids_BxL=jnp.asarray(arrays["input_ids"]), segment_ids_BxL=jnp.asarray(arrays["segment_ids"]),
                positions_BxL=jnp.asarray(arrays["positions"]),
                token_type_ids_BxL=jnp.asarray(arrays["token_type_ids"]))


def max_abs_diff_real(a, b, mask_BxL) -> float:
    """Max |a - b| over the real (non-padding) tokens of B x L x ... arrays."""
    valid = np.asarray(mask_BxL).astype(bool)
    return float(np.max(np.abs(np.asarray(a)[valid] - np.asarray(b)[valid])))


# --- 1. from a Hugging Face directory, and export back -----------------------------------------------------------


@pytest.fixture(scope="module")
def hf_dir(files):
    """A tiny random transformers BertModel (pooler included), noise on every array, saved with vocab.txt."""
    config = transformers.BertConfig(vocab_size=vocab_size(files), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=37, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    with torch.no_grad():  # HF inits biases to 0 and LayerNorm to 1: noise exercises every array's mapping
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = files / "hf"
    model.save_pretrained(path)
    (path / "vocab.txt").write_bytes((files / "vocab.txt").read_bytes())
    return str(path), model


@pytest.fixture(scope="module")
def hf_run(files, hf_dir):
    """A 1-epoch fine-tune from the HF directory; also the params the run started from (recorded at the graft)."""
    path, _ = hf_dir
    workdir = str(files / "from_hf")
    results, grafted = finetune_recording_graft(cls_config(files, init=path), workdir)
    return workdir, results, grafted


def test_init_by_hub_id_reads_the_hub_cache_and_names_an_unreachable_hub(files, hf_dir, tmp_path, monkeypatch):
    """`--init owner/name` goes through huggingface_hub's own cache; offline, an uncached id is one clear error."""
    path, _ = hf_dir
    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-bert" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in os.listdir(path):
        (snapshot / name).write_bytes(open(os.path.join(path, name), "rb").read())
    (tmp_path / "hub" / "models--tiny-org--tiny-bert" / "refs").mkdir()
    (tmp_path / "hub" / "models--tiny-org--tiny-bert" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from_hub = starting_point.resolve(cls_config(files, init="tiny-org/tiny-bert"))
    from_dir = starting_point.resolve(cls_config(files, init=path))
    assert from_hub.kind == "huggingface" and from_hub.model_cfg == from_dir.model_cfg
    for x, y in zip(jax.tree.leaves(from_hub.params), jax.tree.leaves(from_dir.params)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(DataUnavailableError, match="--init tiny-org/missing-bert: not a local directory, and the "
                                                   "Hugging Face Hub could not provide it"):
        starting_point.resolve(cls_config(files, init="tiny-org/missing-bert"))


@pytest.mark.slow
def test_hf_start_equals_transformers(files, hf_dir, hf_run):
    path, model = hf_dir
    sp = starting_point.resolve(cls_config(files, init=path))
    assert sp.kind == "huggingface" and sp.tokenizer.kind == "wordpiece" and set(sp.params) == {"encoder", "pooler"}
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    expected = hf_to_params(state, sp.model_cfg)
    for name in ("encoder", "pooler"):
        assert jax.tree.structure(sp.params[name]) == jax.tree.structure(expected[name])
        for x, y in zip(jax.tree.leaves(sp.params[name]), jax.tree.leaves(expected[name])):
            np.testing.assert_array_equal(np.asarray(x), y)
    np.testing.assert_array_equal(sp.params["encoder"]["embeddings"]["word_embeddings"]["embedding"],
                                  state["embeddings.word_embeddings.weight"])
    # Independently of the conversion code: our encoder on those weights reproduces transformers' BertModel.
    arrays = encode([TextExample(t, None, 0) for t in TEXTS], sp.tokenizer, SEQ_LEN)
    with torch.no_grad():
        ref = model(**hf_inputs(arrays))
    hidden = Encoder(sp.model_cfg).apply({"params": sp.params["encoder"]}, **ours_inputs(arrays))
    assert max_abs_diff_real(hidden, ref.last_hidden_state.numpy(), arrays["segment_ids"]) <= TOL
    pooled = np.tanh(np.asarray(hidden)[:, 0] @ sp.params["pooler"]["kernel"] + sp.params["pooler"]["bias"])
    np.testing.assert_allclose(pooled, ref.pooler_output.numpy(), atol=TOL)

    # The run itself started there, and 4 small steps (lr 1e-4) moved the encoder a little, not to a random init.
    workdir, results, start = hf_run
    assert results["starting_point"] == {"kind": "huggingface", "source": path} and results["steps"] == 4
    for name in ("encoder", "pooler"):
        for x, y in zip(jax.tree.leaves(start[name]), jax.tree.leaves(expected[name])):
            np.testing.assert_array_equal(x, y)
    assert start["classifier"]["kernel"].shape == (32, 2)
    tuned = jax.device_get(load(workdir).params)
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(jax.tree.leaves(tuned["encoder"]), jax.tree.leaves(sp.params["encoder"])))
    assert 0 < moved < 3e-3, moved


@pytest.mark.slow
def test_export_hf_loads_in_transformers_with_the_same_logits(hf_run, tmp_path):
    workdir, _, _ = hf_run
    out = str(tmp_path / "exported")
    inference.export_hf(workdir, out)
    assert os.path.isfile(os.path.join(out, "vocab.txt"))
    model, info = transformers.BertForSequenceClassification.from_pretrained(out, output_loading_info=True)
    model.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert model.config.id2label == {0: "neg", 1: "pos"} and model.config.label2id == {"neg": 0, "pos": 1}
    assert model.config.problem_type == "single_label_classification"

    run = load(workdir)
    arrays = encode([TextExample(t, None, 0) for t in TEXTS * 3], run.tokenizer, SEQ_LEN)
    # transformers' own tokenizer, read from the exported directory, encodes the texts the same way.
    hf_tok = transformers.BertTokenizerFast.from_pretrained(out)
    enc = hf_tok(TEXTS * 3, padding="max_length", max_length=SEQ_LEN, truncation=True, return_tensors="np")
    np.testing.assert_array_equal(enc["input_ids"], arrays["input_ids"])
    np.testing.assert_array_equal(enc["attention_mask"], arrays["segment_ids"])
    ours = run.outputs(arrays)["logits"]
    with torch.no_grad():
        ref = model(**hf_inputs(arrays)).logits.numpy()
    assert ours.shape == ref.shape == (9, 2)
    np.testing.assert_allclose(ours, ref, atol=TOL)


# --- 2. from a plm_jax pretraining run ---------------------------------------------------------------------------


def tiny_pretrain_config(corpus_path: str) -> ml_collections.ConfigDict:
    c = mlm_pretrain_config()
    c.model.update(vocab_size=56, num_layers=2, hidden_size=32, num_heads=2, mlp_dim=64, max_len=64)
    c.data.update(source="text", paths=(corpus_path,), seq_len=64, shuffle_buffer=64)
    c.train.update(batch_size=16, steps=10, lr=3e-3, warmup_steps=2, log_every=5, eval_every=10, eval_batches=1,
                   checkpoint_every=10, keep_checkpoints=1, async_checkpoints=False)
    return c


@pytest.fixture(scope="module")
def pretrained(files):
    workdir = str(files / "pretrain")
    train(tiny_pretrain_config(corpus.write_corpus(files / "corpus.txt", 300)), workdir)
    return workdir


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_graft_from_a_pretraining_run(files, pretrained, monkeypatch):
    model_cfg, tokenizer, ckpt = starting_point.plm_jax_run_params(pretrained)
    assert tokenizer.vocab_size == 56 and set(ckpt) == {"encoder", "pooler"}
    grafted, initial = [], []
    real_graft, real_init = starting_point.graft, state_lib.init_state

    def graft_then_stop(*a):  # the run's own grafted params; training itself is the same loop as test 1's
        grafted.append(jax.device_get(real_graft(*a)))
        raise _Stop

    monkeypatch.setattr(starting_point, "graft", graft_then_stop)
    with pytest.raises(_Stop):
        train(cls_config(files, init=pretrained), str(files / "from_pretrain"))
    assert len(grafted) == 1 and set(grafted[0]) == {"encoder", "pooler", "classifier"}
    for name in ("encoder", "pooler"):
        assert jax.tree.structure(grafted[0][name]) == jax.tree.structure(ckpt[name])
        for x, y in zip(jax.tree.leaves(grafted[0][name]), jax.tree.leaves(ckpt[name])):
            np.testing.assert_array_equal(x, y)
    with open(os.path.join(str(files / "from_pretrain"), "tokenizer", "tokenizer.model"), "rb") as f:
        assert f.read() == open(os.path.join(pretrained, "tokenizer.model"), "rb").read()
    # the pretraining run's own directory as the fine-tune's --workdir (issue 21: "holds a fine-tune with another
    # init") is named for what it is, and nothing in it changes
    before = sorted(os.listdir(pretrained))
    with pytest.raises(ValueError, match="holds a pretraining run; give the fine-tune a new --workdir"):
        train(cls_config(files, init=pretrained), pretrained)
    assert sorted(os.listdir(pretrained)) == before

    # from_scratch: the same shapes and tokenizer, random weights (stopped right after initialisation)
    def init_then_stop(*a):
        initial.append(jax.device_get(real_init(*a).params))
        raise _Stop

    monkeypatch.setattr(state_lib, "init_state", init_then_stop)
    config = cls_config(files, init=pretrained)
    config.from_scratch = True
    with pytest.raises(_Stop):
        train(config, str(files / "scratch_shape"))
    assert len(grafted) == 1  # nothing grafted
    scratch = initial[0]["encoder"]
    shapes = jax.tree.map(np.shape, scratch)
    assert shapes == jax.tree.map(np.shape, ckpt["encoder"])
    n_random = 0
    for x, y in zip(jax.tree.leaves(scratch), jax.tree.leaves(ckpt["encoder"])):
        if np.std(x) > 0:  # random kernels and tables (biases, LayerNorm and token types start constant)
            assert not np.allclose(x, y)
            n_random += 1
    assert n_random >= 2 + 6 * model_cfg.num_layers  # word/position tables, q/k/v/out/wi/wo kernels per layer


@pytest.mark.slow
def test_export_pretraining_run_matches_transformers_mlm(pretrained, tmp_path):
    out = str(tmp_path / "mlm")
    inference.export_hf(pretrained, out)
    assert os.path.isfile(os.path.join(out, "tokenizer.model"))
    model, info = transformers.BertForMaskedLM.from_pretrained(out, output_loading_info=True)
    model.eval()
    assert not info["missing_keys"], info
    assert all(k.startswith("bert.pooler.") for k in info["unexpected_keys"]), info  # HF's MLM has no pooler
    cfg, tokenizer, params = starting_point.plm_jax_run_params(pretrained, heads=("encoder", "pooler", "mlm_head"))
    tok = load_text_tokenizer(os.path.join(out, "tokenizer.model"))
    rows = [TextExample("the cat is old .", "the dog is tall .", 0), TextExample(TEXTS[0], None, 0),
            TextExample(TEXTS[1], TEXTS[2], 0)]
    arrays = encode(rows, tok, 64)
    assert arrays["segment_ids"][0].min() == 0 and arrays["token_type_ids"][0].max() == 1  # padding, both types
    ours = BertForMaskedLM(cfg).apply({"params": params}, arrays["input_ids"], arrays["segment_ids"],
                                      arrays["positions"], None, arrays["token_type_ids"])
    with torch.no_grad():
        ref = model(**hf_inputs(arrays)).logits.numpy()
    assert ours.shape == ref.shape == (3, 64, 56)
    assert max_abs_diff_real(ours, ref, arrays["segment_ids"]) <= TOL


# --- 3. extractive QA end to end ---------------------------------------------------------------------------------


def _qa_item(qid: str, rng, n_sentences: int = 1, impossible: bool = False) -> dict:
    """"who is first ?" is answered by the first noun of the context; "who flies here ?" never is."""
    sentences = [corpus.sentence(rng) for _ in range(n_sentences)]
    context = " ".join(sentences)
    if impossible:
        return {"id": qid, "question": "who flies here ?", "answers": [], "is_impossible": True, "context": context}
    words = context.split()
    start = len(words[0]) + len(words[1]) + 2
    assert context[start:].startswith(words[2])
    return {"id": qid, "question": "who is first ?", "answers": [{"text": words[2], "answer_start": start}],
            "context": context}


def _squad(path, items) -> str:
    paragraphs = [{"context": it.pop("context"), "qas": [it]} for it in items]
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": paragraphs}]}),
                    encoding="utf-8")
    return str(path)


@pytest.mark.slow
def test_qa_end_to_end(files, tmp_path):
    rng = np.random.default_rng(1)
    kinds = {"train": [1] * 70 + [3] * 10 + [0] * 40, "dev": [1] * 14 + [3] * 2 + [0] * 4}
    paths = {}
    for split, layout_ in kinds.items():
        items = [_qa_item(f"{split}{i}", rng, max(n, 1), impossible=n == 0) for i, n in enumerate(layout_)]
        paths[split] = _squad(tmp_path / f"{split}.json", items)
    c = finetune_config()
    c.tokenizer = str(files / "vocab.txt")
    c.model.update(vocab_size=vocab_size(files), hidden_size=64, num_layers=2, num_heads=4, mlp_dim=128,
                   max_len=SEQ_LEN, dropout_rate=0.0, attention_dropout_rate=0.0)
    c.task.update(kind="qa", source="local", train_file=paths["train"], eval_file=paths["dev"], seq_len=SEQ_LEN,
                  doc_stride=8, max_query_len=8, max_answer_len=4, version_2=True)
    c.train.update(batch_size=16, eval_batch_size=64, epochs=6, lr=5e-3, warmup_frac=0.1, log_every=8,
                   async_checkpoints=False)
    workdir = str(tmp_path / "qa")
    results = train(c, workdir)
    best = results["best"]["metrics"]
    assert results["main_metric"] == "f1" and results["train_examples"] > 120  # long contexts: several windows
    for key in ("exact_match", "f1"):
        assert 0.0 <= best[key] <= 100.0, best
    assert best["f1"] > 80, best

    questions = [_qa_item("p0", rng), _qa_item("p1", rng, 3), _qa_item("p2", rng, impossible=True)]
    questions.append({"question": "who is first ?", "context": "the small ship follows the king ."})
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"question": q["question"], "context": q["context"]}) + "\n"
                                               for q in questions), encoding="utf-8")
    n = inference.predict(workdir, str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"))
    rows = [json.loads(line) for line in open(tmp_path / "out.jsonl", encoding="utf-8")]
    assert n == len(rows) == 4
    for q, row in zip(questions, rows):
        assert row["question"] == q["question"] and isinstance(row["answer"], str)
        assert row["answer"] == "" or row["answer"] in q["context"], row


# --- 4. layer-wise learning-rate decay ---------------------------------------------------------------------------

N_LAYERS = 3


def ones_params(scan: bool):
    cfg = TransformerConfig(vocab_size=50, hidden_size=16, num_layers=N_LAYERS, num_heads=2, mlp_dim=32, max_len=16,
                            scan_layers=scan)
    shapes = jax.eval_shape(BertForSequenceClassification(cfg, 3).init, jax.random.key(0),
                            **finetune_dummy_inputs(cfg, 1, 8))["params"]
    return jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), nn.unbox(shapes))


def expected_exponent(names: list[str]) -> int:
    """decay ** this: embeddings N+1, layer i N-i, everything above the encoder 0."""
    if "embeddings" in names:
        return N_LAYERS + 1
    layers = [int(n[len("layer_"):]) for n in names if n.startswith("layer_")]
    return N_LAYERS - layers[0] if layers else 0


def test_layerwise_lr_decay_factors_unscanned_and_scanned():
    decay = 0.5
    tx = layerwise_lr_decay(decay, N_LAYERS)
    ones = ones_params(scan=False)
    assert set(ones) == {"encoder", "pooler", "classifier"}
    assert set(ones["encoder"]) == {"embeddings", *(f"layer_{i}" for i in range(N_LAYERS))}
    scaled, _ = tx.update(ones, tx.init(ones))
    seen = set()
    for path, u in jax.tree_util.tree_flatten_with_path(scaled)[0]:
        names = [str(k.key) for k in path]
        exponent = expected_exponent(names)
        seen.add(exponent)
        np.testing.assert_allclose(np.asarray(u), decay ** exponent, rtol=1e-6, err_msg="/".join(names))
    assert seen == set(range(N_LAYERS + 2))  # head 0, layers 1..N, embeddings N+1

    ones_scanned = ones_params(scan=True)
    assert "layers" in ones_scanned["encoder"]
    assert jax.tree.structure(ones_scanned) == jax.tree.structure(layout.to_scanned(ones))
    scaled_scanned, _ = tx.update(ones_scanned, tx.init(ones_scanned))
    stack = scaled_scanned["encoder"]["layers"]["layer"]
    for leaf in jax.tree.leaves(stack):  # factor decay ** (N - i) along the leading layer axis
        np.testing.assert_allclose(np.asarray(leaf).reshape(N_LAYERS, -1).max(1),
                                   [decay ** (N_LAYERS - i) for i in range(N_LAYERS)], rtol=1e-6)
    for x, y in zip(jax.tree.leaves(scaled_scanned), jax.tree.leaves(layout.to_scanned(scaled))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)


def _opt_cfg(**kw):
    base = dict(steps=10, warmup_steps=0, lr=1e-3, end_lr_fraction=0.0, decay="linear", clip_norm=1.0,
                b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01)
    return ml_collections.ConfigDict({**base, **kw})


def test_make_optimizer_layer_decay():
    rng = np.random.default_rng(0)

    def leaf(*shape):
        return rng.normal(size=shape).astype(np.float32)

    def tree():  # the model's naming (embeddings, layer_i, heads) with a few leaves each: quick to compile
        return {"encoder": {"embeddings": {"word_embeddings": {"embedding": leaf(50, 16)},
                                           "layer_norm": {"scale": leaf(16), "bias": leaf(16)}},
                            **{f"layer_{i}": {"mlp": {"wi": {"kernel": leaf(16, 32), "bias": leaf(32)}}}
                               for i in range(N_LAYERS)}},
                "pooler": {"kernel": leaf(16, 16), "bias": leaf(16)}, "classifier": {"kernel": leaf(16, 3)}}

    params, grads = tree(), tree()
    cfg = _opt_cfg()
    reference = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(optax.linear_schedule(1e-3, 0.0, 10), b1=0.9, b2=0.999, eps=1e-6,
                                        weight_decay=0.01, mask=weight_decay_mask))
    ref_updates, ref_state = jax.jit(lambda g, p: reference.update(g, reference.init(p), p))(grads, params)

    def step(tx):  # jitted: eager optax on a model-sized tree dispatches hundreds of tiny ops
        return jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)

    for tx, _ in (make_optimizer(cfg), make_optimizer(cfg, layer_decay=1.0, num_layers=N_LAYERS)):
        updates, state = step(tx)
        assert jax.tree.structure(state) == jax.tree.structure(ref_state)  # no extra transform in the chain
        for x, y in zip(jax.tree.leaves(updates), jax.tree.leaves(ref_updates)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    tx, _ = make_optimizer(cfg, layer_decay=0.8, num_layers=N_LAYERS)
    updates, _ = step(tx)  # AdamW's step (weight decay included), then scaled per layer
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(updates)[0], jax.tree.leaves(ref_updates)):
        factor = 0.8 ** expected_exponent([str(k.key) for k in path])
        np.testing.assert_allclose(np.asarray(x), np.asarray(y) * factor, rtol=1e-5, atol=1e-12)

    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="layer_decay"):
            make_optimizer(cfg, layer_decay=bad, num_layers=N_LAYERS)


# --- 5. the command line -----------------------------------------------------------------------------------------

CLI_CONFIG = '''
from plm_jax.config_base import finetune_config


def get_config():
    c = finetune_config()
    c.tokenizer = {vocab!r}
    c.model.update(vocab_size={vocab_size}, hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64, max_len=32)
    c.task.update(source="local", train_file={train!r}, eval_file={eval!r}, seq_len=32)
    c.train.update(batch_size=16, eval_batch_size=32, epochs=1, log_every=4, async_checkpoints=False)
    return c
'''


def _launch(*args: str) -> subprocess.Popen:
    # one CPU device (not conftest's 8 simulated ones): the same commands, compiled faster
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT, "XLA_FLAGS": flags}
    return subprocess.Popen([sys.executable, "launch.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def _one_line_error(result: tuple[int, str, str], match: str) -> None:
    rc, out, err = result
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and match in errors[0], (rc, out, err)
    assert "Traceback" not in err


@pytest.mark.slow
def test_cli_finetune_evaluate_predict_and_errors(files, tmp_path):
    config = tmp_path / "tiny.py"
    config.write_text(CLI_CONFIG.format(vocab=str(files / "vocab.txt"), vocab_size=vocab_size(files),
                                        train=str(files / "train.csv"), eval=str(files / "eval.csv")))
    workdir = str(tmp_path / "W")
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    # independent commands run side by side: each pays the ~8 s import
    procs = {"finetune": _launch("finetune", f"--config={config}", f"--workdir={workdir}"),
             "no_workdir": _launch("evaluate", "--workdir=/nonexistent"),
             "no_input": _launch("predict", f"--workdir={workdir}", f"--output={tmp_path / 'x.jsonl'}"),
             "bad_init": _launch("finetune", f"--config={config}", "--init=/nonexistent",
                                 f"--workdir={tmp_path / 'V'}")}
    results = {name: _finish(p) for name, p in procs.items()}
    rc, out, err = results["finetune"]
    assert rc == 0 and "main metric accuracy" in out, (out, err)
    _one_line_error(results["no_workdir"], "not a fine-tuning work directory")
    _one_line_error(results["no_input"], "needs --input")
    _one_line_error(results["bad_init"], "--init /nonexistent: no such directory")

    procs = {"evaluate": _launch("evaluate", f"--workdir={workdir}"),
             "predict": _launch("predict", f"--workdir={workdir}", f"--input={tmp_path / 'in.txt'}",
                                f"--output={tmp_path / 'out.jsonl'}")}
    results = {name: _finish(p) for name, p in procs.items()}
    rc, out, err = results["evaluate"]
    assert rc == 0 and "accuracy" in out.splitlines()[0] and out.splitlines()[2].startswith("eval"), (out, err)
    assert json.load(open(os.path.join(workdir, "eval_results.json")))["eval"]["accuracy"] >= 0
    rc, out, err = results["predict"]
    assert rc == 0 and "wrote 3 predictions" in out, (out, err)
    rows = [json.loads(line) for line in open(tmp_path / "out.jsonl", encoding="utf-8")]
    assert [r["text_a"] for r in rows] == TEXTS and all(r["label"] in ("neg", "pos") for r in rows)


# --- 6. bad input is named ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bad_starting_points_are_named(files, hf_dir, hf_run, tmp_path):
    roberta = tmp_path / "roberta"
    roberta.mkdir()
    (roberta / "config.json").write_text(json.dumps({
        "model_type": "roberta", "architectures": ["RobertaForMaskedLM"], "vocab_size": 50, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37, "max_position_embeddings": 64}))
    (roberta / "vocab.txt").write_bytes((files / "vocab.txt").read_bytes())
    with pytest.raises(ValueError, match="roberta"):
        train(cls_config(files, init=str(roberta)), str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()  # refused before anything is written

    path, _ = hf_dir
    config = cls_config(files, init=path)
    config.tokenizer = str(files / "spm.model")  # another model's tokenizer: 60 pieces, not the checkpoint's
    with pytest.raises(ValueError, match=f"vocabulary has {vocab_size(files)} entries but the tokenizer .* has 60"):
        train(config, str(tmp_path / "b"))

    workdir, _, _ = hf_run
    with pytest.raises(ValueError, match="holds a fine-tune with another init"):
        train(cls_config(files, init=str(roberta)), workdir)
