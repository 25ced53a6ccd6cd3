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


def test_a_comma_list_override_of_a_tuple_key_is_split(tmp_path):
    from absl import flags
    from ml_collections import config_flags

    from plm_jax.config_base import split_list_overrides

    argv = ["launch.py", f"--config={ROOT}/configs/finetune/local.py:classification",
            "--config.task.label_names=neg, pos", "--config.task.exclude_labels=meh", "--config.task.text_a=a,b"]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, sys_argv=argv)
    fv(argv)
    assert fv.config.task.label_names == ("neg, pos",)  # what ml_collections alone makes of it
    split_list_overrides(fv.config, argv)
    assert fv.config.task.label_names == ("neg", "pos") and fv.config.task.exclude_labels == ("meh",)
    assert fv.config.task.text_a == "a,b"  # a string key keeps its commas
    # end to end: the two declared classes reach the data check, which names a label outside them
    data = tmp_path / "train.csv"
    data.write_text("text,label\ngood,pos\nbad,neg\nso so,meh\n", encoding="utf-8")
    cache = tmp_path / "cache"  # the data is checked before MiniLM is fetched into it
    out = _launch("finetune", f"--config={ROOT}/configs/finetune/local.py:classification",
                  f"--workdir={tmp_path / 'r'}", f"--config.task.train_file={data}",
                  "--config.task.label_names=neg,pos", "--init=minilm",
                  env={**os.environ, "PLM_JAX_HUGE_PAGES": "0", "PLM_CACHE_DIR": str(cache)})
    assert out.returncode == 2 and "'meh'" in out.stderr and "('neg', 'pos')" in out.stderr, out.stderr[-1500:]
    assert not cache.exists()
