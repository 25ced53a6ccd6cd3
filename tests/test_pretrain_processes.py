"""Several processes on one machine (jax.distributed on 127.0.0.1, 4 CPU devices each): they train like one
process, resume bit for bit, and a dead peer ends the others with a clear error. Apart from test_pretrain.py so
that the two heaviest files run side by side under pytest-xdist."""

import json
import os
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from plm_jax.train.checkpoint import tree_equal
from tests.test_pretrain import ROOT, STEPS, _final_state, _wait_for_checkpoint, setup, uninterrupted  # noqa: F401


def _launch_processes(config_path, workdir, port, *extra, n=2):
    """n processes of 8 // n CPU devices each on 127.0.0.1, forming one 8-device mesh through jax.distributed."""
    env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": ""}  # devices come from --cpu_devices, not the test's 8
    return [subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "launch.py"), "pretrain", f"--config={config_path}",
         f"--workdir={workdir}", f"--num_processes={n}", f"--process_id={i}", f"--coordinator=127.0.0.1:{port}",
         f"--cpu_devices={8 // n}", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for i in range(n)]


def _finish(procs, timeout=600):
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n\n".join(o[-3000:] for o in outs)
    return outs


@pytest.mark.slow
def test_two_processes_equal_one_and_resume(setup, uninterrupted):  # noqa: F811 (the imported fixtures)
    """2 processes x 4 CPU devices (jax.distributed, gloo) train like 1 process x 8 devices; each host reads its
    own half of every batch; Orbax saves cooperatively; a resume from a mid-run checkpoint ends where the
    uninterrupted 2-process run ended, bit for bit."""
    base, corpus, config_path = setup
    workdir = str(base / "two_processes")
    every = f"--config.train.checkpoint_every={STEPS // 2}"  # the resume below needs step 40 only: fewer saves
    outs = _finish(_launch_processes(config_path, workdir, 29400 + os.getpid() % 500, every))
    assert "process 0 of 2; 4 local and 8 global devices" in outs[0]
    two, two_data = _final_state(workdir, corpus)
    reference, reference_data = _final_state(uninterrupted[0], corpus)
    assert two_data == reference_data
    for a, b in zip(jax.tree.leaves(two.params), jax.tree.leaves(reference.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)
    evals = [[r["loss"] for r in map(json.loads, open(os.path.join(w, "metrics.jsonl"))) if r["split"] == "eval"]
             for w in (workdir, uninterrupted[0])]
    np.testing.assert_allclose(evals[0], evals[1], rtol=1e-5)

    for step in os.listdir(os.path.join(workdir, "checkpoints")):
        if step.isdigit() and int(step) > STEPS // 2:
            shutil.rmtree(os.path.join(workdir, "checkpoints", step))
    outs = _finish(_launch_processes(config_path, workdir, 29900 + os.getpid() % 500, every))
    assert f"at step {STEPS // 2}" in outs[0]
    resumed, _ = _final_state(workdir, corpus)
    assert tree_equal(resumed, two)


@pytest.mark.slow
def test_a_dead_process_ends_the_others_with_a_clear_error(setup):  # noqa: F811
    base, corpus, config_path = setup
    workdir = str(base / "dead_peer")
    procs = _launch_processes(config_path, workdir, 29300 + os.getpid() % 100, "--distributed_timeout_s=10",
                              "--config.train.steps=100000")
    try:
        _wait_for_checkpoint(workdir, 20, procs[0])
        procs[1].kill()
        killed_at = time.time()
        out, _ = procs[0].communicate(timeout=120)
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode != 0
    assert time.time() - killed_at < 90
    assert "stopped sending heartbeats" in out, out[-3000:]
    state, data = _final_state(workdir, corpus, step=20)  # what was saved before the failure is intact
    assert int(state.step) == 20 and data["rows_consumed"] == 20 * 16
