"""The TPU VM launcher: exact gcloud commands (dry run) and the preemption retry, with a scripted shell."""

import os
import subprocess
import sys

import pytest

from plm_jax.cloud import tpu_vm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VM = tpu_vm.TpuVm(name="pod", zone="us-west4-a", accelerator_type="v5litepod-16", project="proj", spot=True)


def test_commands_are_exact():
    assert VM.create() == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod", "--accelerator-type=v5litepod-16",
                           "--version=v2-alpha-tpuv5-lite", "--spot", "--zone=us-west4-a", "--project=proj"]
    assert VM.delete()[4:7] == ["delete", "pod", "--quiet"]
    assert tpu_vm.run_on_all(VM, ["pretrain", "--config", "c.py", "--workdir", "/mnt/b r"]) == [
        "gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod", "--worker=all",
        "--command=cd ~/plm_jax && python3 launch.py pretrain --config c.py --workdir '/mnt/b r' --distributed_auto",
        "--zone=us-west4-a", "--project=proj"]


class ScriptedShell(tpu_vm.Shell):
    """Records commands; the run fails `failures` times with the slice in `state`, then succeeds."""

    def __init__(self, failures, state):
        super().__init__(dry_run=True, echo=lambda _: None)
        self.log, self.failures, self.slice_state = [], failures, state

    def __call__(self, cmd):
        self.log.append(cmd[4] if cmd[0] == "gcloud" else cmd[0])
        if cmd[0] == "gcloud" and any("launch.py" in c for c in cmd) and self.failures:
            self.failures -= 1
            return 1
        return 0

    def output(self, cmd):
        self.log.append(cmd[4])
        return self.slice_state


def test_preempted_slice_is_recreated_and_the_run_repeated():
    shell = ScriptedShell(failures=2, state="PREEMPTED")
    assert tpu_vm.run_with_retries(VM, ["pretrain"], shell, retries=3) == 0
    ship = ["git", "scp", "ssh"]
    again = ["describe", "delete", "create", *ship, "ssh"]
    assert shell.log == [*ship, "ssh", *again, *again]


def test_a_real_failure_is_not_retried_and_retries_are_bounded():
    shell = ScriptedShell(failures=5, state="READY")
    assert tpu_vm.run_with_retries(VM, ["pretrain"], shell, retries=3) == 1
    assert shell.log.count("create") == 0
    shell = ScriptedShell(failures=5, state="PREEMPTED")
    assert tpu_vm.run_with_retries(VM, ["pretrain"], shell, retries=2) == 1
    assert shell.log.count("create") == 2


def test_cli_dry_run_prints_the_commands():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), "tpu", "run", "--name=pod",
                          "--zone=us-west4-a", "--dry_run", "--", "pretrain", "--config", "configs/quickstart.py",
                          "--workdir", "/mnt/bucket/run"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("+ ")]
    assert lines[0] == "+ git archive --format=tar.gz -o /tmp/plm_jax.tar.gz HEAD"
    assert "--worker=all" in lines[-1] and "--distributed_auto" in lines[-1] and "/mnt/bucket/run" in lines[-1]
    missing = subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), "tpu", "run", "--zone=z", "--dry_run"],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert missing.returncode == 2 and "needs --name" in missing.stderr


def test_run_without_a_command_is_refused():
    with pytest.raises(ValueError, match="needs the launch.py command"):
        tpu_vm.main("run", VM, [], dry_run=True, retries=0)
