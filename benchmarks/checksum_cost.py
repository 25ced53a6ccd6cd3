"""What the checkpoint checksums cost: save and restore time of a full train state (parameters and AdamW moments),
with and without the CRC-32 pass, for the quickstart model and BERT-base.

    python benchmarks/checksum_cost.py [--configs configs/quickstart.py,configs/bench/bert_base.py] [--repeats 3]

Per config and repeat: an Orbax save (waited for), then `write_checksums` on the committed step (what the trainer
adds), then `damage` (the check before a restore) and the Orbax restore. Prints one JSON line per config with the
medians and the overheads in percent. The step's files are in the page cache right after the save, as they are when
the trainer seals them; a restore after a reboot reads them from disk for the checksum and again for Orbax.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import jax


def measure(config_path: str, repeats: int, root: str) -> dict:
    from plm_jax.sweep.spec import load_python_config
    from plm_jax.tasks.pretraining import PretrainingTask
    from plm_jax.train import checksums, setup
    from plm_jax.train.checkpoint import Checkpointer

    config = load_python_config(config_path)
    built = setup.build(PretrainingTask(config), jax.devices()[:1])
    state = _like_trained(built.init_state(0))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    times: dict[str, list[float]] = {"save_s": [], "checksum_s": [], "verify_s": [], "restore_s": []}
    nbytes = 0
    for r in range(repeats):
        directory = os.path.join(root, f"run{r}")
        ckpt = Checkpointer(directory, keep=1, use_async=True)
        t0 = time.perf_counter()
        ckpt.manager.save(1, args=_args(state))
        ckpt.manager.wait_until_finished()
        t1 = time.perf_counter()
        step_dir = os.path.join(directory, "1")
        nbytes = checksums.write_checksums(step_dir)
        t2 = time.perf_counter()
        assert checksums.damage(step_dir) == ""
        t3 = time.perf_counter()
        restored, _ = ckpt.restore(1, abstract)
        jax.block_until_ready(restored)
        t4 = time.perf_counter()
        for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[key].append(value)
        ckpt.manager.close()
        shutil.rmtree(directory)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "config": config_path, "bytes_on_disk": nbytes, "repeats": repeats,
        **{k: round(v, 3) for k, v in med.items()},
        "save_overhead_pct": round(100 * med["checksum_s"] / med["save_s"], 1),
        "restore_overhead_pct": round(100 * med["verify_s"] / med["restore_s"], 1),
        "crc_gb_per_s": round(nbytes / 1e9 / med["checksum_s"], 2),
    }


def _like_trained(state):
    """Random values in every float array: fresh AdamW moments are zeros, which Orbax's compression shrinks to
    almost nothing, unlike a trained run's."""
    import jax.numpy as jnp

    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    leaves = [jax.random.normal(k, x.shape, x.dtype) * 0.02 if jnp.issubdtype(x.dtype, jnp.floating) else x
              for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, leaves)


def _args(state):
    import orbax.checkpoint as ocp

    return ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave({"rows_consumed": 0}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="configs/quickstart.py,configs/bench/bert_base.py")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="checksum_cost_")
    try:
        for path in args.configs.split(","):
            print(json.dumps(measure(path, args.repeats, root)), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
