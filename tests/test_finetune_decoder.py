"""Fine-tuning from a causal-LM (GPT) run: the decoder classification head against `transformers`'
GPT2ForSequenceClassification, a classifier fine-tuned end to end from a tiny causal-LM pretraining run (then
evaluate / predict from its work directory), and the heads a decoder does not have, refused by name.
"""

import dataclasses
import json
import os

os.environ.setdefault("USE_TF", "0")  # transformers: PyTorch only, no TensorFlow import

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from plm_jax import inference  # noqa: E402
from plm_jax.config_base import finetune_config, pretrain_config  # noqa: E402
from plm_jax.interop.hf_gpt2 import config_from_hf, hf_to_params  # noqa: E402
from plm_jax.models.config import TransformerConfig  # noqa: E402
from plm_jax.models.heads import (  # noqa: E402
    DecoderForSequenceClassification,
    finetune_dummy_inputs,
    last_token_index,
    needs_encoder,
    sequence_classifier,
)
from plm_jax.run import load, train  # noqa: E402
from plm_jax.tasks import starting_point  # noqa: E402
from plm_jax.train import state as state_lib  # noqa: E402
from plm_jax.train.rundir import RunDir  # noqa: E402
from tests import corpus  # noqa: E402
from tests.graft_recorder import finetune_recording_graft  # noqa: E402

TOL = 1e-5
PAD, VOCAB, LENGTH = 0, 100, 12


# --- 1. the head against transformers' GPT2ForSequenceClassification ---------------------------------------------


def hf_classifier(num_labels: int) -> transformers.GPT2ForSequenceClassification:
    """A tiny random GPT-2 classifier with noise on every array (HF inits biases to 0 and LayerNorm to 1)."""
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=1, eos_token_id=1, pad_token_id=PAD, num_labels=num_labels)
    torch.manual_seed(0)
    model = transformers.GPT2ForSequenceClassification(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def right_padded(lengths: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Rows of random non-pad ids, padded on the right as fine-tuning batches are (segment 0 = padding)."""
    rng = np.random.default_rng(0)
    n = len(lengths)
    ids = np.full((n, LENGTH), PAD, np.int32)
    segments, positions = np.zeros((n, LENGTH), np.int32), np.zeros((n, LENGTH), np.int32)
    for i, length in enumerate(lengths):
        ids[i, :length] = rng.integers(1, VOCAB, length)
        segments[i, :length] = 1
        positions[i, :length] = np.arange(length)
    return {"input_ids": ids, "segment_ids": segments, "positions": positions,
            "token_type_ids": np.zeros((n, LENGTH), np.int32)}


@pytest.mark.parametrize("num_labels,scan", [(3, False), (1, True)])  # classification; regression, scanned
def test_decoder_head_matches_transformers(num_labels, scan):
    model = hf_classifier(num_labels)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    score_CxD = state.pop("score.weight")
    assert score_CxD.shape == (num_labels, 32) and "score.bias" not in state
    cfg = dataclasses.replace(config_from_hf(model.config.to_dict()), scan_layers=scan)
    params = {**hf_to_params(state, cfg), "score": {"kernel": score_CxD.T}}
    head = DecoderForSequenceClassification(cfg, num_labels)
    # the head's own parameter tree has exactly the converted names and shapes: CausalLM's subtrees + `score`
    init = nn.unbox(jax.eval_shape(head.init, jax.random.key(0), **finetune_dummy_inputs(cfg, 1, 8))["params"])
    shapes = lambda tree: jax.tree.map(lambda a: tuple(np.shape(a)), tree)
    assert shapes(init) == shapes(params)

    batch = right_padded((LENGTH, 7, 1))
    ours = np.asarray(head.apply({"params": params}, *(jnp.asarray(batch[k]) for k in (
        "input_ids", "segment_ids", "positions", "token_type_ids"))))
    with torch.no_grad():
        ref = model(input_ids=torch.as_tensor(batch["input_ids"], dtype=torch.long),
                    attention_mask=torch.as_tensor(batch["segment_ids"], dtype=torch.long)).logits.numpy()
    assert ours.shape == ref.shape == (3, num_labels) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=TOL)


def test_last_token_index_is_the_last_real_token():
    segments = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(last_token_index(segments), [2, 4, 3, 0])


def test_heads_a_decoder_lacks_are_named():
    GPT = TransformerConfig.from_config(pretrain_config("causal_lm").model)
    assert isinstance(sequence_classifier(GPT, 2), DecoderForSequenceClassification)
    assert isinstance(sequence_classifier(GPT, 1, kind="regression"), DecoderForSequenceClassification)
    needs_encoder("qa", "encoder")
    with pytest.raises(ValueError, match=r"task.kind='qa'.*model.architecture='decoder'"):
        needs_encoder("qa", "decoder")
    with pytest.raises(ValueError, match=r"task.kind='qa'.*model.architecture='encoder_decoder'"):
        needs_encoder("qa", "encoder_decoder")
    with pytest.raises(ValueError, match=r"task.kind='classification'.*model.architecture='encoder_decoder'"):
        sequence_classifier(dataclasses.replace(GPT, architecture="encoder_decoder"), 2)


# --- 2. end to end from a tiny causal-LM pretraining run (slow: the module pretrains and fine-tunes, ~30 s) ----


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    """A 20-step causal-LM run on the English-like test corpus (its tokenizer covers the task's words)."""
    base = tmp_path_factory.mktemp("finetune_decoder")
    c = pretrain_config("causal_lm")
    c.model.update(vocab_size=56, num_layers=2, hidden_size=32, num_heads=4, mlp_dim=64, max_len=64)
    c.data.update(source="text", paths=(corpus.write_corpus(base / "corpus.txt", 300),), seq_len=64,
                  shuffle_buffer=64)
    c.train.update(batch_size=8, steps=20, lr=3e-3, warmup_steps=4, log_every=10, eval_every=20, eval_batches=1,
                   checkpoint_every=20, keep_checkpoints=1, async_checkpoints=False)
    train(c, str(base / "gpt"))
    rng = np.random.default_rng(0)
    for split, n in (("train", 512), ("eval", 64)):
        corpus.write_sentiment_csv(base / f"{split}.csv", n, rng)
    return base


def cls_config(base, **overrides) -> ml_collections.ConfigDict:
    c = finetune_config()
    c.init = str(base / "gpt")
    c.task.update(source="local", train_file=str(base / "train.csv"), eval_file=str(base / "eval.csv"), seq_len=64)
    c.train.update(batch_size=32, eval_batch_size=64, epochs=3, lr=3e-3, warmup_frac=0.1, log_every=4,
                   async_checkpoints=False)
    c.update(overrides)
    return c


@pytest.fixture(scope="module")
def finetuned(gpt_run):
    """The fine-tune, with the parameters it started from (recorded at the graft)."""
    workdir = str(gpt_run / "cls")
    results, grafted = finetune_recording_graft(cls_config(gpt_run), workdir)
    return workdir, results, grafted


@pytest.mark.slow
def test_classifier_learns_from_the_causal_lm_weights(gpt_run, finetuned):
    workdir, results, grafted = finetuned
    assert results["starting_point"] == {"kind": "plm_jax", "source": str(gpt_run / "gpt")}
    best = results["best"]["metrics"]
    labels = [line.rsplit(",", 1)[1] for line in (gpt_run / "eval.csv").read_text().splitlines()[1:]]
    majority = max(labels.count(x) for x in set(labels)) / len(labels)
    assert best["accuracy"] >= max(0.9, majority + 0.25), (best, majority)
    # the run started from the pretrained embeddings and decoder stack; only `score` was new
    model_cfg, _, pretrained = starting_point.plm_jax_run_params(str(gpt_run / "gpt"))
    assert model_cfg.architecture == "decoder" and set(pretrained) == {"embeddings", "decoder"}
    assert set(grafted) == {"embeddings", "decoder", "score"}
    assert grafted["score"]["kernel"].shape == (32, 2)
    for name in ("embeddings", "decoder"):
        assert jax.tree.structure(grafted[name]) == jax.tree.structure(pretrained[name])
        jax.tree.map(np.testing.assert_array_equal, grafted[name], pretrained[name])
    fm = RunDir(workdir).model_info()
    assert fm.model_cfg.architecture == "decoder" and isinstance(load(workdir).task.model,
                                                                 DecoderForSequenceClassification)


@pytest.mark.slow
def test_evaluate_and_predict_reload_the_decoder_run(gpt_run, finetuned, tmp_path):
    workdir, results, _ = finetuned
    again = inference.evaluate(workdir)["eval"]
    assert again["accuracy"] == results["best"]["metrics"]["accuracy"]
    texts = ["the happy cat sees the dog near the river because the cat is bright .",
             "the old dog likes the cat at the market because the dog is tall ."]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert inference.predict(workdir, str(tmp_path / "in.txt"), str(tmp_path / "out.jsonl")) == 2
    rows = [json.loads(line) for line in open(tmp_path / "out.jsonl", encoding="utf-8")]
    assert [r["text_a"] for r in rows] == texts and all(r["label"] in ("neg", "pos") for r in rows)
    with pytest.raises(ValueError, match="architecture='decoder'.*Hugging Face BERT"):
        inference.export_hf(workdir, str(tmp_path / "hf"))


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_from_scratch_keeps_the_shape_not_the_weights(gpt_run, monkeypatch):
    config = cls_config(gpt_run, from_scratch=True)
    sp = starting_point.resolve(config)
    assert sp.kind == "scratch" and sp.params is None and sp.model_cfg.architecture == "decoder"
    initial = []
    real_init = state_lib.init_state

    def init_then_stop(*a):
        initial.append(jax.device_get(real_init(*a).params))
        raise _Stop

    monkeypatch.setattr(state_lib, "init_state", init_then_stop)
    with pytest.raises(_Stop):
        train(config, str(gpt_run / "scratch"))
    _, _, pretrained = starting_point.plm_jax_run_params(str(gpt_run / "gpt"))
    scratch = initial[0]
    assert set(scratch) == {"embeddings", "decoder", "score"}
    for name in ("embeddings", "decoder"):
        assert jax.tree.map(np.shape, scratch[name]) == jax.tree.map(np.shape, pretrained[name])
    word = ("embeddings", "word_embeddings", "embedding")
    x, y = (t[word[0]][word[1]][word[2]] for t in (scratch, pretrained))
    assert not np.allclose(x, y)


@pytest.mark.slow
def test_a_causal_lm_run_refuses_extractive_qa(gpt_run, tmp_path):
    config = cls_config(gpt_run)
    config.task.kind = "qa"
    with pytest.raises(ValueError, match=r"task.kind='qa' needs an encoder.*'decoder'"):
        train(config, str(tmp_path / "qa"))
    assert not (tmp_path / "qa").exists()  # refused before anything is written
