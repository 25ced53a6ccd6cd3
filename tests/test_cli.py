"""launch.py: the list of commands, each command's own flags and help, one-line errors, quiet TensorFlow."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("pretrain", "finetune", "tokenizer", "bench", "compile-only", "evaluate", "predict", "generate", "export",
            "demo", "wiki-qa", "bible", "sweep", "report", "tpu")


def _launch(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PLM_JAX_HUGE_PAGES": "0"} if env is None else env
    return subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_command():
    for flag in ("--help", "-h"):
        out = _launch(flag)
        assert out.returncode == 0, out.stderr
        listed = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("  ")]
        assert listed == list(COMMANDS), out.stdout
    bare = _launch()
    assert bare.returncode == 2 and "pretrain" in bare.stderr and not bare.stdout


def test_each_command_lists_its_own_flags():
    finetune = _launch("finetune", "--help")
    assert finetune.returncode == 0, finetune.stderr
    assert finetune.stdout.startswith("usage: python launch.py finetune")
    assert "--init" in finetune.stdout and "--config" in finetune.stdout and "--coordinator" in finetune.stdout
    assert "--zone" not in finetune.stdout and "--temperature" not in finetune.stdout
    generate = _launch("generate", "-h")
    assert generate.returncode == 0, generate.stderr
    assert "--temperature (default: 0.8)" in generate.stdout and "--config" not in generate.stdout
    tpu = _launch("tpu", "--help")
    assert "--[no]dry_run (default: false)" in tpu.stdout and "--type (default: 'v5litepod-16')" in tpu.stdout
    for command in COMMANDS:
        assert _launch(command, "--help").returncode == 0, command


def test_an_unknown_flag_is_one_line_naming_it_and_the_command():
    out = _launch("pretrain", "--zone=x")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [out.stderr.strip()] and out.stderr.startswith("error: "), out.stderr
    assert "--zone" in out.stderr and "`pretrain`" in out.stderr
    typo = _launch("finetune", "--workdi=x")
    assert typo.returncode == 2 and "did you mean --workdir?" in typo.stderr, typo.stderr
    sweep = _launch("sweep", "configs/sweeps/mask_rate.py", "--config=x")
    assert sweep.returncode == 2 and "positional argument" in sweep.stderr, sweep.stderr
    extra = _launch("report", "a", "b")
    assert extra.returncode == 2 and "takes 1 positional argument" in extra.stderr, extra.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None,
                    reason="checks a host without an NVIDIA GPU")
def test_a_cpu_run_prints_no_tensorflow_cuda_start_up_lines(tmp_path):
    (tmp_path / "a.txt").write_text("".join(f"the {w} fox jumps over the lazy dog {i}\n" for i in range(200)
                                            for w in ("quick", "brown", "red")))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # conftest sets it
    out = _launch("tokenizer", "--config", "configs/quickstart.py", f"--output={tmp_path / 'spm.model'}",
                  "--config.data.source=text", f"--config.data.paths=('{tmp_path}/*.txt',)",
                  "--config.model.vocab_size=50", env={**env, "PLM_JAX_HUGE_PAGES": "0"}, timeout=300)
    assert out.returncode == 0 and "50 pieces" in out.stdout, out.stderr[-2000:]
    for noise in ("cuInit", "cuda drivers", "oneDNN", "absl::InitializeLog", "cuDNN"):
        assert noise not in out.stderr, out.stderr[-2000:]
    # the first TensorFlow op's "failed call to cuInit" ERROR (this tokenizer run has none) needs level 3
    level = subprocess.run([sys.executable, "-c", "import os, launch; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert level.stdout.strip() == "3", level.stderr
