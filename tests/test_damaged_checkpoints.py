"""Verified checkpoints: every committed step carries checksums of its files; a damaged or incomplete latest step
is reported in one line, moved aside (never deleted), and the run resumes from the newest intact step, bit for bit
as an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from plm_jax.config_base import mlm_pretrain_config
from plm_jax.run import train
from plm_jax.train import checksums
from tests import corpus


def _config(text: str, steps: int):
    c = mlm_pretrain_config()
    c.model.update(vocab_size=56, num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64, max_len=64)
    c.data.update(source="text", paths=(text,), seq_len=64, shuffle_buffer=64)
    c.train.update(batch_size=16, steps=steps, lr=3e-3, warmup_steps=2, log_every=4, eval_every=100,
                   eval_batches=1, checkpoint_every=4, keep_checkpoints=4, async_checkpoints=True)
    return c


def _files(step_dir: str) -> list[str]:
    return sorted(os.path.join(r, n) for r, _, ns in os.walk(step_dir) for n in ns if n != checksums.CHECKSUM_FILE)


def _array_file(step_dir: str) -> str:
    return max(_files(os.path.join(step_dir, "state")), key=os.path.getsize)


def _truncate(path: str, keep: float = 0.5) -> None:
    with open(path, "r+b") as f:
        f.truncate(int(os.path.getsize(path) * keep))


def _flip(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def _manifest(step_dir: str) -> str:
    names = [p for p in _files(step_dir) if "manifest" in os.path.basename(p) or p.endswith("_METADATA")]
    return names[0]


def _data_json(step_dir: str) -> str:
    return next(p for p in _files(os.path.join(step_dir, "data")))


FAULTS = {
    "truncated array file": lambda d: _truncate(_array_file(d)),
    "deleted file": lambda d: os.remove(_array_file(d)),
    "truncated manifest": lambda d: _truncate(_manifest(d)),
    "empty data position": lambda d: open(_data_json(d), "w").close(),
    "flipped bytes": lambda d: _flip(_array_file(d)),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("damaged")
    text = corpus.write_corpus(base / "corpus.txt", 300)
    whole = train(_config(text, 16), str(base / "whole16"))
    first = str(base / "first12")  # the same run, as if it had been killed after saving step 12
    shutil.copytree(str(base / "whole16"), first)
    shutil.rmtree(os.path.join(first, "checkpoints", "16"))
    os.remove(os.path.join(first, "results.json"))
    return base, text, first, whole


@pytest.mark.slow
def test_every_committed_step_has_checksums_that_match(runs):
    _, _, first, _ = runs
    for step in (4, 8, 12):
        assert checksums.damage(os.path.join(first, "checkpoints", str(step))) == ""


# Each resume meets two damaged steps, 12 then 8, and goes back to step 4: five faults in three runs.
PAIRS = [("truncated array file", "deleted file"), ("truncated manifest", "empty data position"),
         ("flipped bytes", "truncated array file")]


@pytest.mark.slow
@pytest.mark.parametrize("at_12,at_8", PAIRS)
def test_damaged_steps_are_moved_aside_and_the_run_resumes_from_the_newest_intact_one(runs, tmp_path, at_12, at_8,
                                                                                      caplog):
    base, text, first, _ = runs
    workdir = str(tmp_path / "run")
    shutil.copytree(first, workdir)
    FAULTS[at_12](os.path.join(workdir, "checkpoints", "12"))
    FAULTS[at_8](os.path.join(workdir, "checkpoints", "8"))
    with caplog.at_level("WARNING", logger="plm_jax"):
        results = train(_config(text, 16), workdir)
    messages = [r.getMessage() for r in caplog.records if r.name == "plm_jax"]
    for step in (12, 8):
        assert any(f"checkpoints/{step} is damaged" in m and "moved it to" in m for m in messages), messages
    assert any("resuming from step 4: 8 steps since it are lost" in m for m in messages), messages
    aside = sorted(os.listdir(os.path.join(workdir, "damaged_checkpoints")))
    assert sorted(name.split("-")[1] for name in aside) == ["12", "8"]
    assert results["steps"] == 16
    with open(os.path.join(workdir, "results.json")) as f, open(os.path.join(base, "whole16", "results.json")) as g:
        assert json.load(f)["eval_at_end"] == json.load(g)["eval_at_end"]  # the same run, bit for bit


@pytest.mark.slow
def test_an_intact_step_that_fails_to_restore_is_raised_not_moved(runs, tmp_path, monkeypatch):
    from plm_jax.train.checkpoint import Checkpointer

    _, _, first, _ = runs
    workdir = str(tmp_path / "run")
    shutil.copytree(first, workdir)

    def out_of_memory(self, step, abstract_state):
        raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")

    monkeypatch.setattr(Checkpointer, "restore", out_of_memory)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
            ckpt.restore_latest(None)
    finally:
        ckpt.close()
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "4", "8"]
    assert not os.path.exists(os.path.join(workdir, "damaged_checkpoints"))
