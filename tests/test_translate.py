"""Translation fine-tuning end to end: a toy reverse task is learned and beam-searched exactly; predict; BERT2BERT."""

import json
import os
import random

import numpy as np
import pytest

from plm_jax import inference
from plm_jax.config_base import pretrain_config, translation_config
from plm_jax.data.tokenizer import train_tokenizer
from plm_jax.models.config import TransformerConfig
from plm_jax.run import train
from plm_jax.tasks import seq2seq_init

LETTERS = "abcde"


def _reverse_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        seq = [rng.choice(LETTERS) for _ in range(rng.randint(2, 5))]
        pairs.append((" ".join(seq), " ".join(reversed(seq))))
    return pairs


def _letter_lines() -> list[str]:
    return [" ".join(random.Random(i).choice(LETTERS) for _ in range(6)) for i in range(400)]


def _write_tsv(path, pairs):
    path.write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    return str(path)


def _config(tmp_path, tokenizer_path, epochs=12):
    c = translation_config()
    c.tokenizer = tokenizer_path
    c.model.update(vocab_size=16, hidden_size=64, num_layers=2, num_heads=4, mlp_dim=128, max_len=16,
                   dropout_rate=0.0, attention_dropout_rate=0.0, pre_layer_norm=True)
    c.task.update(source="local", train_file=_write_tsv(tmp_path / "train.tsv", _reverse_pairs(2048, 0)),
                  eval_file=_write_tsv(tmp_path / "dev.tsv", _reverse_pairs(64, 1)),
                  test_file=_write_tsv(tmp_path / "test.tsv", _reverse_pairs(64, 2)),
                  max_source_len=16, max_target_len=16, beam_size=3, on_long="error")
    c.train.update(batch_size=32, eval_batch_size=32, epochs=epochs, lr=5e-3, warmup_frac=0.05, log_every=16,
                   async_checkpoints=False)
    c.mesh.update(data=4, fsdp=2, tensor=1)
    return c


@pytest.fixture(scope="module")
def reverse_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("reverse")
    tok = train_tokenizer(_letter_lines(), 16, base / "spm.model")
    assert tok.vocab_size == 16
    config = _config(base, str(base / "spm.model"))
    workdir = str(base / "run")
    return base, config, workdir, train(config, workdir)


@pytest.mark.slow
def test_reverse_task_is_learned_and_decoded_exactly(reverse_run):
    """The best epoch decodes the dev set exactly (BLEU 100). On the test set, every source seen in training comes
    back exactly; of the unseen ones, a model this small may still get a letter wrong (float rounding decides:
    one in 64 at commit da9ac60), so the test set asks for at least 62 of 64."""
    base, _, workdir, results = reverse_run
    assert results["best"]["metric"] == "bleu" and results["best"]["metrics"]["bleu"] == pytest.approx(100.0)
    hyps = open(os.path.join(workdir, "test_translations.txt"), encoding="utf-8").read().splitlines()
    test_pairs, seen = _reverse_pairs(64, 2), {a for a, _ in _reverse_pairs(2048, 0)}
    assert len(hyps) == len(test_pairs)
    assert [h for h, (a, _) in zip(hyps, test_pairs) if a in seen] == [b for a, b in test_pairs if a in seen]
    assert sum(h == b for h, (_, b) in zip(hyps, test_pairs)) >= 62, list(zip(hyps, test_pairs))
    assert "nrefs:1|case:mixed|eff:no|tok:13a" in results["test"]["_signatures"]["bleu"]
    assert results["test"]["bleu"] > 95 and results["test"]["chrf"] > 97, results["test"]
    evals = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl")) if '"eval"' in line]
    assert [r["epoch"] for r in evals] == list(range(1, 13))
    assert evals[0]["bleu"] < evals[-1]["bleu"]


@pytest.mark.slow
def test_predict_translates_a_file_line_for_line(reverse_run):
    base, _, workdir, _ = reverse_run
    (base / "in.txt").write_text("a b c\ne d\nd d e a\n", encoding="utf-8")
    n = inference.predict(workdir, str(base / "in.txt"), str(base / "out.txt"))
    assert n == 3
    assert (base / "out.txt").read_text(encoding="utf-8").splitlines() == ["c b a", "d e", "a e d d"]
    (base / "blank.txt").write_text("a b\n\nc d\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"blank.txt:2: empty line"):
        inference.predict(workdir, str(base / "blank.txt"), str(base / "never.txt"))
    assert not (base / "never.txt").exists()


@pytest.mark.slow
def test_resume_after_the_end_changes_nothing_and_a_changed_task_is_refused(reverse_run):
    base, config, workdir, results = reverse_run
    again = train(config, workdir)  # everything done: restores the best and re-evaluates
    assert again["test"]["bleu"] == results["test"]["bleu"] and again["steps"] == results["steps"]
    changed = config.copy_and_resolve_references()
    changed.task.max_target_len = 12
    with pytest.raises(ValueError, match="holds a fine-tune with another task"):
        train(changed, workdir)


def test_translation_refuses_a_decoder_only_model(tmp_path):
    train_tokenizer(_letter_lines(), 16, tmp_path / "spm.model")
    c = _config(tmp_path, str(tmp_path / "spm.model"))
    c.model.update(architecture="decoder", type_vocab_size=0)
    with pytest.raises(ValueError, match="translation needs model.architecture='encoder_decoder'"):
        train(c, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_bert2bert_maps_every_encoder_weight_and_leaves_cross_attention_out():
    import jax

    from plm_jax.models.encoder import BertForMaskedLM, dummy_inputs
    from plm_jax.models.encoder_decoder import EncoderDecoder, seq2seq_dummy_inputs

    mlm_cfg = TransformerConfig(**{**pretrain_config("mlm").model.to_dict(), "vocab_size": 40, "hidden_size": 16,
                                   "num_layers": 2, "num_heads": 2, "mlp_dim": 32, "max_len": 12})
    import flax.linen as nn

    mlm = nn.unbox(BertForMaskedLM(mlm_cfg).init(jax.random.key(0), **dummy_inputs(mlm_cfg, 1, 8))["params"])
    s2s_cfg = TransformerConfig(**{**mlm_cfg.to_dict(), "architecture": "encoder_decoder", "use_pooler": False})
    mapped = seq2seq_init.bert2bert(mlm["encoder"], s2s_cfg)
    fresh = nn.unbox(EncoderDecoder(s2s_cfg).init(jax.random.key(1), **seq2seq_dummy_inputs(s2s_cfg, 1, 8, 8))[
        "params"])
    grafted = seq2seq_init.graft_partial(fresh, mapped, jax.tree.map(lambda x: x.sharding, fresh))
    np.testing.assert_array_equal(grafted["shared_embedding"]["embedding"],
                                  mlm["encoder"]["embeddings"]["word_embeddings"]["embedding"])
    np.testing.assert_array_equal(grafted["decoder"]["layer_1"]["mlp"]["wi"]["kernel"],
                                  mlm["encoder"]["layer_1"]["mlp"]["wi"]["kernel"])
    np.testing.assert_array_equal(grafted["decoder"]["layer_0"]["cross_attention"]["query"]["kernel"],
                                  fresh["decoder"]["layer_0"]["cross_attention"]["query"]["kernel"])
    with pytest.raises(ValueError, match="pretrained weight encoder/layer_0/mlp/wi/kernel has shape"):
        bad = jax.tree.map(lambda x: x, mapped)
        bad["encoder"]["layer_0"]["mlp"]["wi"]["kernel"] = np.zeros((3, 3), np.float32)
        seq2seq_init.graft_partial(fresh, bad, jax.tree.map(lambda x: x.sharding, fresh))


def test_length_bucketed_batches_cover_the_epoch_once_and_trim_padding():
    from plm_jax.tasks.translation_task import batch_of
    from plm_jax.tasks.translation_task import length_bucketed_rows as train_rows

    rng = np.random.default_rng(0)
    lengths = tuple(int(x) for x in rng.integers(3, 90, 640))
    rows = [train_rows(7, step, 10, 64, lengths, window=5) for step in range(10)]
    assert sorted(np.concatenate(rows).tolist()) == list(range(640))  # every row once per epoch
    assert np.array_equal(rows[3], train_rows(7, 3, 10, 64, lengths, window=5))  # a function of (seed, step)
    assert not np.array_equal(rows[3], train_rows(7, 13, 10, 64, lengths, window=5))  # the next epoch differs
    spread = np.mean([np.ptp(np.asarray(lengths)[r]) for r in rows])
    random_spread = np.mean([np.ptp(np.asarray(lengths)[train_rows(7, s, 10, 64, lengths, 0)]) for s in range(10)])
    assert spread < random_spread / 3
    seg = np.zeros((3, 96), np.int32)
    seg[0, :20], seg[1, :35], seg[2, :5] = 1, 1, 1
    arrays = {"encoder_segment_ids": seg, "encoder_input_ids": seg * 7, "decoder_segment_ids": seg[:, :64],
              "decoder_weights": seg[:, :64].astype(np.float32)}
    batch = batch_of(arrays, np.array([0, 1, -1]), bucket=16)
    assert batch["encoder_input_ids"].shape == (3, 48) and batch["decoder_segment_ids"].shape == (3, 48)
    assert batch["decoder_weights"][2].sum() == 0  # the padding row


@pytest.mark.slow
def test_an_mlm_run_seeds_the_translation_model(tmp_path):
    """BERT2BERT from a real pretraining work directory: shape, tokenizer and weights come from the MLM run."""
    import jax

    from tests.corpus import write_corpus
    from tests.test_pretrain_objectives import tiny

    config = tiny("mlm", write_corpus(tmp_path / "corpus.txt", 300), steps=10)
    train(config, str(tmp_path / "mlm"))
    c = translation_config()
    c.init = str(tmp_path / "mlm")
    sp = seq2seq_init.resolve(c)
    assert sp.kind == "plm_jax" and sp.model_cfg.architecture == "encoder_decoder"
    assert sp.tokenizer.vocab_size == 56 and sp.model_cfg.hidden_size == 32
    _, _, mlm = seq2seq_init.starting_point.plm_jax_run_params(str(tmp_path / "mlm"), heads=("encoder",))
    np.testing.assert_array_equal(sp.params["decoder"]["layer_1"]["attention"]["query"]["kernel"],
                                  mlm["encoder"]["layer_1"]["attention"]["query"]["kernel"])
    assert "cross_attention" not in sp.params["decoder"]["layer_0"]
    assert jax.tree.leaves(sp.params["shared_embedding"])[0].shape == (56, 32)
    gpt = tiny("causal_lm", str(tmp_path / "corpus.txt"), steps=4)
    train(gpt, str(tmp_path / "gpt"))
    c.init = str(tmp_path / "gpt")
    with pytest.raises(ValueError, match="causal-LM \\(decoder-only\\) run: it has no encoder"):
        seq2seq_init.resolve(c)
