"""`launch.py tpu create|run|delete|ssh`: a Cloud TPU VM (pod slice) driven through the `gcloud` CLI.

`run` ships the committed code (`git archive HEAD`) to every worker, installs requirements.txt plus `jax[tpu]`,
and runs the same `launch.py` command on all workers, which find each other through `--distributed_auto`.
If the run fails because the slice was preempted, it recreates the slice and runs again; with `--workdir` on
storage that outlives the VMs (a mounted bucket or NFS), the run resumes from its last checkpoint.
`--dry_run` prints the exact commands instead of running them.
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence

from plm_jax.errors import UserError

JAX_TPU = "jax[tpu]==0.10.2"  # the same JAX as requirements.txt, with libtpu
REMOTE_DIR = "plm_jax"
ARCHIVE = "plm_jax.tar.gz"
PREEMPTED_STATES = ("PREEMPTED", "TERMINATED")


@dataclasses.dataclass(frozen=True)
class TpuVm:
    name: str
    zone: str
    accelerator_type: str = "v5litepod-16"
    runtime_version: str = "v2-alpha-tpuv5-lite"
    project: str | None = None
    spot: bool = False

    def _gcloud(self, verb: str, *args: str) -> list[str]:
        cmd = ["gcloud", "compute", "tpus", "tpu-vm", verb, *args, f"--zone={self.zone}"]
        return cmd + ([f"--project={self.project}"] if self.project else [])

    def create(self) -> list[str]:
        return self._gcloud("create", self.name, f"--accelerator-type={self.accelerator_type}",
                            f"--version={self.runtime_version}", *(["--spot"] if self.spot else []))

    def delete(self) -> list[str]:
        return self._gcloud("delete", self.name, "--quiet")

    def state(self) -> list[str]:
        return self._gcloud("describe", self.name, "--format=value(state)")

    def ssh(self, command: str | None = None, worker: str = "all") -> list[str]:
        return self._gcloud("ssh", self.name, f"--worker={worker}", *([f"--command={command}"] if command else []))

    def scp_to_all(self, local: str, remote: str) -> list[str]:
        return self._gcloud("scp", local, f"{self.name}:{remote}", "--worker=all")


def ship_and_install(vm: TpuVm, archive: str) -> list[list[str]]:
    """The committed tree to every worker, unpacked fresh, with its pinned requirements and TPU JAX."""
    setup = (f"rm -rf ~/{REMOTE_DIR} && mkdir -p ~/{REMOTE_DIR} && tar xzf ~/{ARCHIVE} -C ~/{REMOTE_DIR} && "
             f"cd ~/{REMOTE_DIR} && python3 -m pip install -q -r requirements.txt {shlex.quote(JAX_TPU)}")
    return [["git", "archive", "--format=tar.gz", "-o", archive, "HEAD"], vm.scp_to_all(archive, ARCHIVE),
            vm.ssh(setup)]


def run_on_all(vm: TpuVm, launch_args: Sequence[str]) -> list[str]:
    args = [*launch_args, "--distributed_auto"]
    return vm.ssh(f"cd ~/{REMOTE_DIR} && python3 launch.py {shlex.join(args)}")


class Shell:
    """Runs commands, or only prints them (`dry_run`); `output` returns a command's stdout."""

    def __init__(self, dry_run: bool, echo: Callable[[str], None] = print):
        self.dry_run, self.echo = dry_run, echo

    def __call__(self, cmd: list[str]) -> int:
        self.echo("+ " + shlex.join(cmd))
        return 0 if self.dry_run else subprocess.run(cmd).returncode

    def output(self, cmd: list[str]) -> str:
        self.echo("+ " + shlex.join(cmd))
        if self.dry_run:
            return "READY"
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()


def _all(shell: Shell, cmds: list[list[str]]) -> int:
    for cmd in cmds:
        if rc := shell(cmd):
            return rc
    return 0


def run_with_retries(vm: TpuVm, launch_args: Sequence[str], shell: Shell, *, retries: int = 3,
                     archive: str = "/tmp/" + ARCHIVE) -> int:
    """Ship, install, run; on a failure whose cause is preemption, recreate the slice and go again."""
    if rc := _all(shell, ship_and_install(vm, archive)):
        return rc
    for attempt in range(retries + 1):
        rc = shell(run_on_all(vm, launch_args))
        if rc == 0:
            return 0
        state = shell.output(vm.state())
        if state not in PREEMPTED_STATES or attempt == retries:
            print(f"run failed (exit {rc}, slice state {state or 'unknown'}); not retrying", file=sys.stderr)
            return rc
        print(f"slice {vm.name} was {state.lower()}: recreating it (retry {attempt + 1} of {retries})",
              file=sys.stderr)
        if rc := _all(shell, [vm.delete(), vm.create(), *ship_and_install(vm, archive)]):
            return rc
    return rc


def main(verb: str, vm: TpuVm, launch_args: Sequence[str], *, dry_run: bool, retries: int) -> int:
    shell = Shell(dry_run)
    if verb == "create":
        return shell(vm.create())
    if verb == "delete":
        return shell(vm.delete())
    if verb == "ssh":
        return shell(vm.ssh(shlex.join(launch_args) if launch_args else None, worker="0"))
    if verb == "run":
        if not launch_args:
            raise UserError("`tpu run` needs the launch.py command after --, e.g. -- pretrain --config … --workdir …")
        return run_with_retries(vm, launch_args, shell, retries=retries)
    raise UserError(f"unknown tpu verb {verb!r}; expected create, run, delete or ssh")
