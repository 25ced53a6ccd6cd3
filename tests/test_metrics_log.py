"""The metrics log survives a write cut short by a kill: a torn last line is dropped and repaired on resume; a
damaged line before the end is a one-line error that names the file and the line."""

import json

import pytest

from plm_jax.errors import UserError
from plm_jax.train.metrics_log import MetricWriter, read_jsonl


def test_a_torn_last_line_is_dropped_and_repaired_by_the_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    good = [{"step": 10, "split": "train", "loss": 2.0}, {"step": 20, "split": "train", "loss": 1.5}]
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"step": 30, "split": "tr', encoding="utf-8")
    assert read_jsonl(str(path)) == good
    writer = MetricWriter(str(tmp_path), tensorboard=False)
    writer.truncate_after(20)
    writer.write(30, "train", {"loss": 1.25})
    assert read_jsonl(str(path)) == [*good, {"step": 30, "split": "train", "loss": 1.25}]
    assert path.read_text(encoding="utf-8").count("\n") == 3


def test_a_damaged_line_before_the_end_is_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": \n{"step": 3}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"metrics.jsonl line 2: malformed JSON"):
        read_jsonl(str(path))
