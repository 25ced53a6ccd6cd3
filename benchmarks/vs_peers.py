"""plm_jax's MLM train step side by side with the Hugging Face peers (benchmarks/peers/), in one run.

    bash benchmarks/peers/build_venv.sh            # once: the peers' venv at /tmp/plm-peers-venv (~2.5 min)
    python benchmarks/vs_peers.py --sizes mini --rounds 3 --out runs/bench_vs_peers.md

The peers are HF transformers' BertForMaskedLM in eager PyTorch and under torch.compile, and FlaxBertForMaskedLM
under jax.jit (benchmarks/peers/peer_bert_train.py, run with the venv's Python, --peer-python); ours is
`launch.py bench --config configs/bench/bert_mini.py` at the same shape, with the sparse MLM head (as trained) and
the dense one (the peers' work). Each round runs every implementation once, each in its own process, one after
another (A B C A B C ...), so that the shared machine's noise falls on all of them alike; the table gives medians
over rounds and the ratio of ours to the best peer measured in the same round (paired), then the median of those
ratios. docs/benchmarks.md gives the commands and the measured tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_DIR = os.path.join(ROOT, "benchmarks", "peers")  # peer_bert_train.py, requirements.txt, build_venv.sh
SIZES = {"tiny": (2, 128, 2), "mini": (4, 256, 4), "small": (4, 512, 8), "medium": (8, 512, 8)}  # layers, hidden, heads
PEERS = ("torch", "torch_compile", "flax")
OURS = ("plm_jax_sparse", "plm_jax_dense")


def last_json(text: str) -> dict:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON result in output:\n{text[-2000:]}")
    return json.loads(lines[-1])


def run_peer(python: str, impl: str, size: str, seq: int, batch: int, steps: int,
             extra_env: dict[str, str] | None = None) -> dict:
    cmd = [python, os.path.join(PEER_DIR, "peer_bert_train.py"), "--impl", impl, "--config", size,
           "--seq", str(seq), "--batch", str(batch), "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=PEER_DIR,
                         env={**os.environ, **(extra_env or {})})
    r = last_json(out.stdout)
    return {"tokens_per_sec": r["tokens_per_s"], "median_step_ms": 1e3 * r["median_step_s"],
            "first_step_s": r["first_step_s"], "peak_rss_mb": r["peak_rss_mb"]}


def bench_command(config: str, layers: int, hidden: int, heads: int, seq: int, batch: int, steps: int, head: str,
                  *extra: str) -> list[str]:
    """`launch.py bench` on configs/bench/<config>.py at this shape (MLP 4 x hidden); `extra` adds overrides."""
    return [sys.executable, os.path.join(ROOT, "launch.py"), "bench", "--config",
            os.path.join(ROOT, "configs", "bench", f"{config}.py"), f"--config.model.num_layers={layers}",
            f"--config.model.hidden_size={hidden}", f"--config.model.num_heads={heads}",
            f"--config.model.mlp_dim={4 * hidden}", f"--config.data.seq_len={seq}",
            f"--config.train.batch_size={batch}", f"--config.bench.head={head}", f"--config.bench.steps={steps}",
            *extra]


def run_ours(head: str, size: str, seq: int, batch: int, steps: int, overrides: tuple[str, ...] = ()) -> dict:
    cmd = bench_command("bert_mini", *SIZES[size], seq, batch, steps, head, f"--config.bench.name={size}",
                        *(f"--config.{kv}" for kv in overrides))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    r = last_json(out.stdout)
    return {"tokens_per_sec": r["tokens_per_sec"], "median_step_ms": r["median_step_ms"],
            "first_step_s": r["compile_s"], "peak_rss_mb": r["peak_rss_mb"], "mfu_pct": r["mfu_pct_median"],
            "peak_gflops": r["peak_gflops"], "page_faults_per_step": r["page_faults_per_step"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["mini"], choices=list(SIZES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed steps per run, after one warm-up/compile step")
    p.add_argument("--peer-python", default="/tmp/plm-peers-venv/bin/python",
                   help="the peers' venv's Python (bash benchmarks/peers/build_venv.sh [VENV] builds it)")
    p.add_argument("--impls", nargs="+", default=list(PEERS + OURS))
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.add_argument("--peer-env", nargs="*", default=[], metavar="KEY=VALUE",
                   help="environment for the peers' processes, e.g. GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (what "
                        "launch.py sets for ours; it slows PyTorch down, so the default leaves the peers as they are)")
    p.add_argument("--ours-config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for our runs, without the --config. prefix, e.g. mesh.cpu_devices=0 "
                        "(one CPU device instead of one per core)")
    a = p.parse_args()
    for flag, values in (("--peer-env", a.peer_env), ("--ours-config", a.ours_config)):
        bad = [kv for kv in values if "=" not in kv]
        if bad:
            p.error(f"{flag} takes KEY=VALUE, got {bad[0]!r}")
    peer_env = dict(kv.split("=", 1) for kv in a.peer_env)
    if set(a.impls) & set(PEERS) and not os.path.exists(a.peer_python):
        p.error(f"no peers' Python at {a.peer_python}: build the venv with `bash benchmarks/peers/build_venv.sh` "
                f"(or pass --peer-python, or --impls {' '.join(OURS)} for ours alone)")

    rows: dict[tuple[str, str], list[dict]] = {}
    for size in a.sizes:
        for rnd in range(1, a.rounds + 1):
            for impl in a.impls:
                print(f"round {rnd} {size} {impl} load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
                try:
                    if impl in PEERS:
                        r = run_peer(a.peer_python, impl, size, a.seq, a.batch, a.steps, peer_env)
                    else:
                        r = run_ours(impl.rsplit("_", 1)[1], size, a.seq, a.batch, a.steps, tuple(a.ours_config))
                except subprocess.CalledProcessError as e:
                    print(f"FAILED {impl}: {e.stderr[-1500:]}", file=sys.stderr)
                    continue
                rows.setdefault((size, impl), []).append({**r, "round": rnd})

    med = statistics.median
    lines = [f"seq {a.seq}, batch {a.batch}, vocab 30522, fp32, AdamW, dropout on; {a.rounds} rounds, "
             f"{a.steps} timed steps per run; medians over rounds.", "",
             "| size | impl | tokens/s | median step ms | first step s | peak RSS MB | MFU % | ours / best peer "
             "(paired, median) |", "|---|---|---|---|---|---|---|---|"]
    for size in a.sizes:
        best_peer = {}
        for impl in PEERS:
            for r in rows.get((size, impl), []):
                best_peer[r["round"]] = max(best_peer.get(r["round"], 0.0), r["tokens_per_sec"])
        for impl in a.impls:
            rs = rows.get((size, impl), [])
            if not rs:
                continue
            ratio = ""
            if impl in OURS and best_peer:
                paired = [r["tokens_per_sec"] / best_peer[r["round"]] for r in rs if r["round"] in best_peer]
                ratio = f"{med(paired):.2f}x" if paired else ""
            mfu = f"{med(r['mfu_pct'] for r in rs):.1f}" if "mfu_pct" in rs[0] else ""
            lines.append(f"| {size} | {impl} | {med(r['tokens_per_sec'] for r in rs):,.0f} | "
                         f"{med(r['median_step_ms'] for r in rs):,.0f} | {med(r['first_step_s'] for r in rs):.1f} | "
                         f"{med(r['peak_rss_mb'] for r in rs):,.0f} | {mfu} | {ratio} |")
    table = "\n".join(lines)
    print(table)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(table + "\n")
        with open(a.out + ".jsonl", "w") as f:
            for (size, impl), rs in rows.items():
                for r in rs:
                    f.write(json.dumps({"size": size, "impl": impl, **r}) + "\n")


if __name__ == "__main__":
    main()
