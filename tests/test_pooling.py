"""Sequence classification from the mean of the token outputs (`task.pooling="mean"`): against a numpy formula, and
kept in a run's model.json."""

import json
import os
import types

import flax.linen as nn
import jax
import numpy as np
import pytest

from plm_jax import inference
from plm_jax.config_base import finetune_config
from plm_jax.errors import UserError
from plm_jax.models.config import TransformerConfig
from plm_jax.models.encoder import Encoder
from plm_jax.models.heads import BertForSequenceClassification, finetune_dummy_inputs, sequence_classifier
from plm_jax.tasks.classification_task import ClassificationTask
from plm_jax.tasks.qa_task import QATask
from plm_jax.tasks.starting_point import StartingPoint
from plm_jax.train.rundir import RunDir

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
    config = finetune_config()
    config.task.update(kind="qa", pooling="mean")
    with pytest.raises(UserError, match="task.pooling='mean' is for classification and regression"):
        QATask.check_start(config, StartingPoint("scratch", "random", CFG, None, None))


def test_the_pooling_is_kept_in_model_json_rebuilt_and_refused_by_export(tmp_path):
    """The config's pooling reaches model.json, a run rebuilt from model.json alone gets the same head, and `export`
    refuses it before writing anything (Hugging Face's BertForSequenceClassification reads [CLS] only)."""
    config = finetune_config()
    config.task.update(pooling="mean", seq_len=12)
    tokenizer = types.SimpleNamespace(path=str(tmp_path / "tokenizer" / "spm.model"))
    start = StartingPoint("scratch", "random", CFG, tokenizer, None)
    run = RunDir(str(tmp_path / "run"))
    os.makedirs(run.path)
    run.write_model_info(ClassificationTask.info_for(config, start, ("neg", "pos")))
    assert json.load(open(run.file("model.json")))["pooling"] == "mean"
    rebuilt = ClassificationTask(config, run.model_info(), tokenizer)
    assert isinstance(rebuilt.model, BertForSequenceClassification) and rebuilt.model.pooling == "mean"
    with pytest.raises(UserError, match="pooling='mean'.*BertForSequenceClassification reads \\[CLS\\] only"):
        inference.export_hf(run.path, str(tmp_path / "hf"))
    assert not os.path.exists(tmp_path / "hf")
