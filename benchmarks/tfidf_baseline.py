"""Reference baseline for the packaged classification sets: TF-IDF + logistic regression (scikit-learn).

A fine-tuned encoder should beat these numbers; if it does not, suspect the fine-tuning code before the model.
Two protocols per dataset: (i) a stratified 80/20 split of all examples (seed 0), comparable with numbers quoted
for the raw corpora, and (ii) our own train split, evaluated on our validation and test splits (the ones the
fine-tuning runs use).

    python benchmarks/tfidf_baseline.py [--data_dir DIR]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from plm_jax.tasks.classification import LabeledSet, default_task_config, label_counts, load_split

DATASETS = {
    "rotten_tomatoes": {"tfds_name": "plm_rotten_tomatoes", "text_a": "text", "label": "label"},
    "wiki_offline_11": {"tfds_name": "plm_wiki_offline", "text_a": "text", "label": "topic",
                        "exclude_labels": ("Uncategorized",)},
}


def fit_and_score(train: LabeledSet, evaluations: dict[str, LabeledSet]) -> dict[str, tuple[float, float]]:
    """(accuracy, macro-F1) per evaluation set of one TF-IDF + logistic-regression model fit on train."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = vectorizer.fit_transform([e.text_a for e in train.examples])
    model = LogisticRegression(C=10.0, max_iter=2000)
    model.fit(x_train, [e.label for e in train.examples])
    scores = {}
    for name, data in evaluations.items():
        y = [e.label for e in data.examples]
        predicted = model.predict(vectorizer.transform([e.text_a for e in data.examples]))
        scores[name] = (accuracy_score(y, predicted), f1_score(y, predicted, average="macro"))
    return scores


def run(name: str, overrides: dict, data_dir: str) -> None:
    cfg = default_task_config()
    cfg.update({"source": "tfds", "tfds_data_dir": data_dir, "test_split": "test", **overrides})
    start = time.perf_counter()
    splits = {split: load_split(cfg, split) for split in ("train", "eval", "test")}
    names = splits["train"].label_names
    sizes = ", ".join(f"{s} {len(d.examples):,}" for s, d in splits.items())
    print(f"\n== {name} ({cfg.tfds_name}): {sizes}; {len(names)} classes; loaded in "
          f"{time.perf_counter() - start:.1f} s; skipped {splits['train'].skipped or 'none'} (train)")
    print(f"   train label counts: {label_counts(splits['train'])}")

    from sklearn.model_selection import train_test_split

    everything = [e for d in splits.values() for e in d.examples]
    train_idx, test_idx = train_test_split(np.arange(len(everything)), test_size=0.2, random_state=0,
                                           stratify=[e.label for e in everything])
    pooled = {key: LabeledSet([everything[i] for i in idx], names, {}, "pooled")
              for key, idx in (("train", train_idx), ("test", test_idx))}
    protocols = {
        "(i) stratified 80/20 of all, seed 0": fit_and_score(pooled["train"], {"20% held out": pooled["test"]}),
        "(ii) our train split": fit_and_score(splits["train"], {"validation": splits["eval"],
                                                                "test": splits["test"]}),
    }
    for protocol, scores in protocols.items():
        for split, (accuracy, macro_f1) in scores.items():
            print(f"   {protocol:38s} {split:13s} accuracy {accuracy:.3f}  macro-F1 {macro_f1:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="", help="TFDS data dir ('' = the TFDS default)")
    args = parser.parse_args()
    print("TF-IDF (word 1-2 grams, min_df=2, sublinear tf) + logistic regression (C=10)")
    for name, overrides in DATASETS.items():
        run(name, overrides, args.data_dir)


if __name__ == "__main__":
    main()
