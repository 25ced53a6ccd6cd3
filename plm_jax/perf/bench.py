"""`launch.py bench`: train-step throughput, MFU, compile time and peak memory on synthetic MLM batches.

The batch matches the Hugging Face peers' (benchmarks/peers/peer_bert_train.py: random tokens, one document per
row, 15% of positions predicted) so the numbers sit in the same table (benchmarks/vs_peers.py). `bench.head=dense`
projects every position through the vocabulary, the peers' amount of work; `sparse` (the default, and what training
uses) only the P masked ones.
`bench.op_profile=N` adds where the step's time goes: the N slowest ops, each with the model code it came from
(op_profile.py), printed to stderr and kept in the JSON.
"""

from __future__ import annotations

import json
import math
import resource
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from plm_jax.data.data_config import resolve_max_predictions
from plm_jax.errors import UserError
from plm_jax.models.config import TransformerConfig
from plm_jax.models.flops import mlm_train_flops_per_step
from plm_jax.perf import op_profile, roofline
from plm_jax.perf.peak_flops import table_bandwidth, table_peak_flops
from plm_jax.tasks.pretraining import PretrainingTask
from plm_jax.train import state as state_lib
from plm_jax.train.setup import build


def measure_matmul_peak(n: int = 4096, reps: int = 3, dtype: Any = jnp.float32) -> float:
    """Best n x n matmul rate on device 0 in FLOP/s: the MFU denominator on CPU (no spec sheet). On a CPU it uses
    all the process's cores, however many CPU devices the process has."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


def device_peak_flops(bench: Any, dtype: Any) -> tuple[float, str]:
    """Per-device peak and where it came from: the config's `peak_flops`, the table of known accelerators
    (peak_flops.py), or a matmul measured here (CPUs, unknown devices, or `measure_peak=True`)."""
    if float(bench.peak_flops) > 0:
        return float(bench.peak_flops), "config"
    known = None if bench.measure_peak else table_peak_flops(jax.devices()[0].device_kind, dtype)
    if known:
        return known, "table"
    return measure_matmul_peak(dtype=jnp.dtype(dtype)), "measured"


def device_bandwidth(bench: Any) -> tuple[float, str]:
    """Per-device memory bandwidth (bytes/s) and where it came from: the table, or measured here."""
    known = None if bench.measure_peak else table_bandwidth(jax.devices()[0].device_kind)
    return (known, "table") if known else (roofline.measure_bandwidth(), "measured")


def peak_units() -> int:
    """How many times the per-device peak the run has: its devices, but on a CPU one per process, because a
    process's CPU devices share its cores (the measured peak already uses all of them)."""
    return jax.process_count() if jax.devices()[0].platform == "cpu" else jax.device_count()


def synthetic_batch(rng: np.random.Generator, cfg: TransformerConfig, batch: int, seq_len: int,
                    predictions: int, dense_head: bool) -> dict[str, np.ndarray]:
    ids = rng.integers(5, cfg.vocab_size, (batch, seq_len), dtype=np.int32)
    chosen = np.sort(np.stack([rng.choice(seq_len, predictions, replace=False) for _ in range(batch)]), axis=1)
    if dense_head:  # every position through the vocabulary; the loss still covers the chosen 15% only
        positions = np.tile(np.arange(seq_len, dtype=np.int32), (batch, 1))
        weights = np.zeros((batch, seq_len), np.float32)
        np.put_along_axis(weights, chosen, 1.0, axis=1)
        targets = ids
    else:
        positions, weights = chosen.astype(np.int32), np.ones((batch, predictions), np.float32)
        targets = np.take_along_axis(ids, chosen, axis=1)
    return dict(input_ids=ids, segment_ids=np.ones_like(ids), positions=np.tile(np.arange(seq_len, dtype=np.int32),
                (batch, 1)), masked_positions=positions.astype(np.int32), masked_ids=targets.astype(np.int32),
                masked_weights=weights)


def measure_pipeline(config: Any, batches: int) -> float:
    """Tokens/s of the tf.data MLM pipeline alone (read, tokenize, pack, mask, batch) on the configured text."""
    from plm_jax.data.pipeline import mlm_dataset
    from plm_jax.data.tokenizer import load_tokenizer

    if not config.data.tokenizer:
        raise UserError("bench.pipeline needs --config.data.tokenizer=<SentencePiece model> "
                         "(e.g. runs/quickstart/tokenizer.model)")
    ds = mlm_dataset(config.data, load_tokenizer(config.data.tokenizer), split="train", repeat=True,
                     batch_size=config.train.batch_size, seed=config.seed)
    it = ds.as_numpy_iterator()
    next(it)  # start-up (threads, first buffers) is not throughput
    t, tokens = time.perf_counter(), 0
    for _ in range(batches):
        tokens += int(np.count_nonzero(next(it)["segment_ids"]))
    return tokens / (time.perf_counter() - t)


def run_bench(config: Any) -> dict[str, Any]:
    bench = config.bench
    batch, seq_len = config.train.batch_size, config.data.seq_len
    predictions = resolve_max_predictions(config.data)
    dense_head = bench.head == "dense"
    setup = build(PretrainingTask(config))
    cfg, data_sharding, train_step = setup.model_cfg, setup.data_sharding, setup.train_step
    state = setup.init_state(config.seed)

    rng = np.random.default_rng(config.seed)
    batches = [{k: jax.device_put(v, data_sharding) for k, v in
                synthetic_batch(rng, cfg, batch, seq_len, predictions, dense_head).items()} for _ in range(2)]
    peak_before, peak_source = device_peak_flops(bench, cfg.compute_dtype)

    t = time.perf_counter()
    compiled = train_step.lower(state, batches[0]).compile()
    compile_s = time.perf_counter() - t
    traffic = roofline.memory_traffic(compiled.as_text())
    state, _ = compiled(state, batches[0])  # warm-up
    jax.block_until_ready(state)
    times, faults_before = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(bench.steps):
        t = time.perf_counter()
        state, metrics = compiled(state, batches[i % 2])
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    faults_per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / len(times)
    peak = (max(peak_before, measure_matmul_peak(dtype=jnp.dtype(cfg.compute_dtype))) if peak_source == "measured"
            else peak_before)
    bandwidth, bandwidth_source = device_bandwidth(bench)
    op_rows = int(bench.get("op_profile", 0))
    if op_rows:
        holder = [state]

        def one_step() -> Any:
            holder[0], step_metrics = compiled(holder[0], batches[0])
            return step_metrics

        profile_steps = max(1, min(bench.steps, 3))
        table = op_profile.op_table(op_profile.trace_events(one_step, profile_steps), compiled.as_text(),
                                    profile_steps)
        print(op_profile.format_table(table, op_rows), file=sys.stderr)

    flops = mlm_train_flops_per_step(cfg, batch, seq_len, seq_len if dense_head else predictions)
    median, best = statistics.median(times), min(times)
    device = jax.devices()[0]
    mem = device.memory_stats() or {}
    result = {
        "config": bench.name, "head": bench.head, "batch": batch, "seq_len": seq_len, "layers": cfg.num_layers,
        "hidden": cfg.hidden_size, "vocab": cfg.vocab_size, "params": state_lib.count_params(state.params),
        "devices": f"{jax.device_count()}x{device.device_kind}", "median_step_ms": 1e3 * median,
        "min_step_ms": 1e3 * best, "tokens_per_sec": batch * seq_len / median,
        "tokens_per_sec_per_device": batch * seq_len / median / jax.device_count(),
        "gflop_per_step": flops / 1e9, "peak_gflops": peak / 1e9, "peak_source": peak_source,
        "mfu_pct_median": 100 * flops / median / (peak * peak_units()),
        "mfu_pct_best": 100 * flops / best / (peak * peak_units()),
        "compile_s": compile_s,
        # Roofline (roofline.py): per device; the ceiling has matmuls at the peak and all else at the bandwidth.
        "xla_gb_per_step": roofline.xla_bytes_accessed(compiled) / 1e9, **roofline.traffic_fields(traffic),
        "bandwidth_gbps": bandwidth / 1e9, "bandwidth_source": bandwidth_source,
        "mfu_ceiling_pct": roofline.ceiling(flops / peak_units(), peak, traffic["other_bytes"] * jax.device_count()
                                            / peak_units(), bandwidth),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_mb": mem.get("peak_bytes_in_use", 0) / 2**20, "steps_timed": len(times),
        "page_faults_per_step": faults_per_step,  # host: see plm_jax/huge_pages.py
    }
    if op_rows:
        result["op_ms_by_kind"] = table["ms_by_kind"]
        result["top_ops"] = table["ops"][:op_rows]
    if bench.pipeline:
        result["pipeline_tokens_per_sec"] = measure_pipeline(config, bench.pipeline_batches)
        result["pipeline_over_step"] = result["pipeline_tokens_per_sec"] / result["tokens_per_sec"]
    print(json.dumps(result))
    return result
