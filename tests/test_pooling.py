"""Sequence classification from the mean of the token outputs (`task.pooling="mean"`), against a numpy formula, and
through a fine-tune that is reloaded from its directory."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from plm_jax import inference
from plm_jax.config_base import finetune_config
from plm_jax.data.tokenizer import train_tokenizer
from plm_jax.errors import UserError
from plm_jax.models.config import TransformerConfig
from plm_jax.models.encoder import Encoder
from plm_jax.models.heads import BertForSequenceClassification, finetune_dummy_inputs, sequence_classifier
from plm_jax.run import train
from tests import corpus

CFG = TransformerConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32, max_len=12,
                        dropout_rate=0.0, attention_dropout_rate=0.0)


def _inputs(lengths: list[int], seq_len: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(5, CFG.vocab_size, (len(lengths), seq_len)).astype(np.int32)
    segments = (np.arange(seq_len)[None] < np.array(lengths)[:, None]).astype(np.int32)
    ids = np.where(segments > 0, ids, 0)
    positions = np.where(segments > 0, np.arange(seq_len)[None], 0).astype(np.int32)
    return dict(input_ids_BxL=ids, segment_ids_BxL=segments, positions_BxL=positions,
                token_type_ids_BxL=np.zeros_like(ids))


def test_mean_pooling_averages_the_text_tokens_only():
    model = BertForSequenceClassification(CFG, 3, pooling="mean")
    params = nn.meta.unbox(model.init(jax.random.key(0), **finetune_dummy_inputs(CFG))["params"])
    inputs = _inputs([12, 5, 1])
    logits = np.asarray(model.apply({"params": params}, **inputs))

    tokens_BxLxD = np.asarray(Encoder(CFG).apply({"params": params["encoder"]}, *inputs.values()), np.float64)
    mask_BxL = inputs["segment_ids_BxL"] > 0
    mean_BxD = (tokens_BxLxD * mask_BxL[..., None]).sum(1) / mask_BxL.sum(1, keepdims=True)
    pooler, classifier = params["pooler"], params["classifier"]
    pooled_BxD = np.tanh(mean_BxD @ np.asarray(pooler["kernel"]) + np.asarray(pooler["bias"]))
    expected = pooled_BxD @ np.asarray(classifier["kernel"]) + np.asarray(classifier["bias"])
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)

    # the same parameters read [CLS] with pooling="cls": a different answer, from the same tree
    cls_logits = np.asarray(BertForSequenceClassification(CFG, 3).apply({"params": params}, **inputs))
    assert not np.allclose(cls_logits, logits, atol=1e-4)
    # padding is neither attended to nor averaged: other ids in the padding give the same logits
    noisy = dict(inputs, input_ids_BxL=np.where(mask_BxL, inputs["input_ids_BxL"], 7))
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, **noisy)), logits, rtol=1e-5, atol=1e-6)


def test_a_pooling_the_model_lacks_is_named():
    with pytest.raises(UserError, match=r"task.pooling='max'; expected one of \('cls', 'mean'\)"):
        sequence_classifier(CFG, 2, pooling="max")
    decoder = TransformerConfig(architecture="decoder", use_pooler=False, type_vocab_size=0)
    with pytest.raises(UserError, match="task.pooling='mean' is for encoders"):
        sequence_classifier(decoder, 2, pooling="mean")


def test_a_mean_pooled_fine_tune_reloads_and_is_not_exported_as_cls(tmp_path):
    train_tokenizer(corpus.documents(300), 60, tmp_path / "spm.model")
    rng = np.random.default_rng(0)
    for split, n in (("train", 128), ("eval", 64)):
        corpus.write_sentiment_csv(tmp_path / f"{split}.csv", n, rng)
    config = finetune_config()
    config.tokenizer = str(tmp_path / "spm.model")
    config.model.update(vocab_size=60, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, max_len=64)
    config.task.update(source="local", train_file=str(tmp_path / "train.csv"), eval_file=str(tmp_path / "eval.csv"),
                       seq_len=40, pooling="mean")
    config.train.update(batch_size=32, epochs=2, lr=3e-3, async_checkpoints=False)
    workdir = str(tmp_path / "run")
    results = train(config, workdir)

    assert json.load(open(os.path.join(workdir, "model.json")))["pooling"] == "mean"
    again = inference.evaluate(workdir)["eval"]  # rebuilt from model.json: the same head, the same numbers
    np.testing.assert_allclose(again["loss"], results["best"]["metrics"]["loss"], rtol=1e-5)
    with pytest.raises(UserError, match="pooling='mean'.*BertForSequenceClassification reads \\[CLS\\] only"):
        inference.export_hf(workdir, str(tmp_path / "hf"))
    assert not os.path.exists(tmp_path / "hf")
