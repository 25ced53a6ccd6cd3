"""A BERT WordPiece vocabulary inside tf.data: the same ids as the Hugging Face `tokenizers` library (what
fine-tuning reads), special and reserved tokens never masked in or drawn as replacements, and a vocabulary the
pipeline cannot use named in one line."""

import json

import numpy as np
import pytest
import tensorflow as tf

from plm_jax.data import pipeline
from plm_jax.data.data_config import default_data_config
from plm_jax.data.text_tokenizer import WordPieceTextTokenizer
from plm_jax.data.tokenizer import load_tokenizer
from plm_jax.data.wordpiece import WordPieceTokenizer
from plm_jax.errors import UserError

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "cafe", "naive", "resume", "play", "##ing", "##ed", "##s", "un",
         "##believ", "##able", ",", ".", "!", "'", "-", "%", "3", "5", "東", "京", "a", "fox", "##x", "f", "##o", "km",
         "800", "…"]
VOCAB = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
TEXTS = ["The cat sat on the mat.", "Naïve CAFÉ résumé!", "playing played plays unbelievable",
         "3.5% of the dog's mat-sat", "東京 fox foxx", "an emoji 😀 and an unknownword", "  tabs\tand\nlines  ", "",
         "800\u00a0km … on\u200bthe mat\x00"]  # a no-break space, an ellipsis (NFD keeps it), control characters


@pytest.fixture()
def vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in VOCAB), encoding="utf-8")
    return str(path)


def test_tf_ids_equal_the_tokenizers_library(vocab_file):
    tokenizer = load_tokenizer(vocab_file)
    assert isinstance(tokenizer, WordPieceTokenizer)
    reference = WordPieceTextTokenizer(vocab_file)  # Hugging Face `tokenizers`: BERT's basic + WordPiece
    got = tokenizer.tf_tokenize(tf.constant(TEXTS)).to_list()
    assert got == [reference.encode(t) for t in TEXTS]
    assert got[1] == [VOCAB.index(w) for w in ("naive", "cafe", "resume", "!")]  # lower case, accents stripped
    assert tokenizer.tf_tokenize(tf.constant("the cat")).numpy().tolist() == reference.encode("the cat")
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (0, 3, 4, 5,
                                                                                                           6)
    assert tokenizer.special_ids == (0, 1, 2, 3, 4, 5, 6)  # [unusedN] too: never text, never a replacement


def test_a_tokenizer_json_gives_its_vocabulary_and_case(vocab_file, tmp_path):
    spec = {"model": {"type": "WordPiece", "vocab": {t: i for i, t in enumerate(VOCAB)}},
            "normalizer": {"type": "BertNormalizer", "lowercase": False}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    cased = load_tokenizer(str(tmp_path))  # a directory: its tokenizer.json
    assert (cased.vocab, cased.lower_case) == (VOCAB, False)
    assert cased.tf_tokenize(tf.constant(["The cat"])).to_list() == [[cased.unk_id, VOCAB.index("cat")]]


def test_mlm_batches_over_wordpieces_mask_no_special_token(vocab_file, tmp_path):
    corpus = tmp_path / "corpus.txt"
    rng = np.random.default_rng(0)
    corpus.write_text("".join(" ".join(rng.choice(WORDS[:10], 12)) + "\n" for _ in range(200)), encoding="utf-8")
    data = default_data_config()
    data.update(source="text", paths=(str(corpus),), seq_len=32, shuffle_buffer=16, mask_rate=0.3)
    tokenizer = load_tokenizer(vocab_file)
    batch = next(pipeline.mlm_dataset(data, tokenizer, split="train", batch_size=8, seed=0,
                                      repeat=True).as_numpy_iterator())
    assert (batch["input_ids"] == tokenizer.cls_id).any(axis=1).all()  # packed documents: [CLS] ... [SEP]
    chosen = batch["masked_weights"] > 0
    originals = batch["masked_ids"][chosen]
    assert chosen.sum() > 0 and not np.isin(originals, [0, 1, 2, 3, 4, 5, 6]).any()
    shown = np.take_along_axis(batch["input_ids"], batch["masked_positions"], 1)[chosen]
    assert not np.isin(shown, [0, 1, 2, 3, 4, 5]).any()  # [MASK] (6) or a real word: no other special id


def test_a_vocabulary_the_pipeline_cannot_use_is_named(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"lacks the BERT special tokens \['\[CLS\]', '\[SEP\]', '\[MASK\]'\]"):
        load_tokenizer(str(tmp_path / "vocab.txt"))
    (tmp_path / "bpe").mkdir()
    (tmp_path / "bpe" / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}))
    with pytest.raises(UserError, match="is a BPE tokenizer; the pipeline reads WordPiece"):
        load_tokenizer(str(tmp_path / "bpe" / "tokenizer.json"))
    (tmp_path / "latin" / "vocab.txt").parent.mkdir()
    (tmp_path / "latin" / "vocab.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="vocab.txt: not UTF-8 text"):
        load_tokenizer(str(tmp_path / "latin" / "vocab.txt"))
