"""BERT-base MLM training on one GPU: plm_jax's train step against Hugging Face PyTorch, bf16, seq 128.

    python benchmarks/gpu_bert_base.py --out runs/bench/gpu_bert_base     # a GPU host: 8 min at most (--budget_s)
    python benchmarks/gpu_bert_base.py --smoke --out runs/bench/smoke      # any host: BERT-tiny, checks the script

Each part runs in its own process, one after another, so that one cannot take the GPU memory of the next:
- `peak`: a bf16 8192^3 matmul through JAX on random data, the rate this GPU really reaches;
- `ours`: `launch.py bench --config configs/bench/bert_base.py` with the attention and head of the part;
- `torch`: HF BertForMaskedLM (sdpa attention) under bf16 autocast with fp32 weights and a fused AdamW, eager or
  under torch.compile; the same random batch shape, 15% of the positions labelled, dropout on.
MFU counts matmul FLOPs as plm_jax/models/flops.py does (the HF head projects every position, so its FLOPs use
the dense head), against the bf16 peak of the device table (plm_jax/perf/peak_flops.py). Our parts also give
the MFU ceiling (plm_jax/perf/roofline.py): the MFU if every matmul ran at that peak and every other kernel moved
its bytes (the "non-matmul GB" of the compiled step) at the table's memory bandwidth. Results go to
OUT/results.jsonl and OUT/table.md, each part's output to OUT/parts.log; the table is printed last. Parts that
fail or outrun their time are listed with their error; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from vs_peers import bench_command, last_json  # benchmarks/, the script's own folder (sys.path[0] of a script)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASE = dict(layers=12, hidden=768, heads=12, vocab=30522, seq=128)
SMOKE = dict(layers=2, hidden=128, heads=2, vocab=30522, seq=128)


def _flops(shape: dict, batch: int, dense: bool) -> float:
    from plm_jax.models.config import TransformerConfig
    from plm_jax.models.flops import mlm_train_flops_per_step

    cfg = TransformerConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], num_layers=shape["layers"],
                            num_heads=shape["heads"], mlp_dim=4 * shape["hidden"])
    predictions = shape["seq"] if dense else round(0.15 * shape["seq"])
    return mlm_train_flops_per_step(cfg, batch, shape["seq"], predictions)


def part_peak(smoke: bool) -> dict:
    import jax
    import jax.numpy as jnp

    n = 1024 if smoke else 8192
    a, b = (jax.random.normal(jax.random.key(i), (n, n), jnp.bfloat16) for i in (0, 1))
    f = jax.jit(lambda x, y: x @ y)
    start = time.perf_counter()
    while time.perf_counter() - start < (0.2 if smoke else 3.0):  # until the clocks have risen from idle
        f(a, b).block_until_ready()
    times = []
    for _ in range(10):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
            "matmul_bf16_tflops": 2 * n**3 / statistics.median(times) / 1e12}


def part_torch(shape: dict, batch: int, steps: int, compile_: bool) -> dict:
    import numpy as np
    import torch
    import transformers

    from plm_jax.perf.peak_flops import table_peak_flops

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"],
                                     num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                                     intermediate_size=4 * shape["hidden"], max_position_embeddings=512,
                                     attn_implementation="sdpa")
    model = transformers.BertForMaskedLM(config).to(device).train()
    forward = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=device == "cuda")
    rng = np.random.default_rng(0)
    seq = shape["seq"]
    ids = rng.integers(5, shape["vocab"], (batch, seq))
    labels = np.full((batch, seq), -100)
    for row in range(batch):
        chosen = rng.choice(seq, round(0.15 * seq), replace=False)
        labels[row, chosen] = ids[row, chosen]
    inputs = {"input_ids": torch.from_numpy(ids).to(device), "labels": torch.from_numpy(labels).to(device),
              "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
              "token_type_ids": torch.zeros(batch, seq, dtype=torch.long, device=device)}

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = forward(**inputs).loss
        loss.backward()
        opt.step()
        return loss.item()  # waits for the GPU

    t = time.perf_counter()
    step()
    first_step_s = time.perf_counter() - t
    step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    flops = _flops(shape, batch, dense=True)
    kind = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = table_peak_flops(kind, "bfloat16")
    return {"tokens_per_sec": batch * seq / median, "median_step_ms": 1e3 * median, "first_step_s": first_step_s,
            "gflop_per_step": flops / 1e9, "mfu_pct": 100 * flops / median / peak if peak else None,
            "peak_device_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0,
            "device": kind, "torch": torch.__version__, "transformers": transformers.__version__,
            "attn": model.config._attn_implementation}


def ours_command(shape: dict, batch: int, steps: int, attention: str, head: str, *extra: str) -> list[str]:
    if attention != "einsum":  # jax.nn.dot_product_attention has no attention-probability dropout
        extra = ("--config.model.attention_dropout_rate=0", *extra)
    return bench_command("bert_base", shape["layers"], shape["hidden"], shape["heads"], shape["seq"], batch, steps,
                         head, f"--config.model.attention={attention}", *extra)


def run_part(name: str, cmd: list[str], timeout: float, log_dir: str) -> dict:
    """One part in its own process; its output is appended to log_dir/parts.log, its last JSON line is the result."""
    t = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        text, status = out.stdout + out.stderr, out.returncode
    except subprocess.TimeoutExpired as err:  # its partial output comes as bytes, even with text=True
        partial = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                          for x in (err.stdout, err.stderr))
        text, status = f"{partial}\nTIMEOUT after {timeout:.0f} s", "timeout"
    with open(os.path.join(log_dir, "parts.log"), "a") as f:
        f.write(f"===== {name}: {' '.join(cmd)}\n{text}\n")
    record: dict = {"part": name, "wall_s": round(time.perf_counter() - t, 1)}
    try:
        if status != 0:
            raise RuntimeError(f"exit {status}")
        record.update(last_json(out.stdout))
    except (RuntimeError, json.JSONDecodeError) as err:
        tail = [line for line in text.strip().splitlines() if line.strip()][-3:]
        record["error"] = f"{str(err).splitlines()[0]}: " + " | ".join(tail)[-600:]
    print(json.dumps(record), flush=True)
    return record


def table(records: list[dict]) -> str:
    """Markdown: one row per part; ours also as a ratio to the fastest Hugging Face part of the same run."""
    torch_best = max((r["tokens_per_sec"] for r in records if r["part"].startswith("torch") and "error" not in r),
                     default=0.0)
    rows = ["| part | tokens/s | vs best HF | step ms | MFU % | MFU ceiling % | non-matmul GB | "
            "first step / compile s | peak device MB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if "error" in r:
            rows.append(f"| {r['part']} | failed: {r['error'][:200]} | | | | | | | |")
        elif "tokens_per_sec" in r:
            mfu = r.get("mfu_pct", r.get("mfu_pct_median"))
            ratio = f"{r['tokens_per_sec'] / torch_best:.2f}x" if torch_best else ""
            ceiling = f"{r['mfu_ceiling_pct']:.1f}" if "mfu_ceiling_pct" in r else ""  # ours: roofline.py
            other_gb = f"{r['other_gb_per_step']:.1f}" if "other_gb_per_step" in r else ""
            rows.append(f"| {r['part']} | {r['tokens_per_sec']:,.0f} | {ratio} | {r['median_step_ms']:.1f} | "
                        f"{'' if mfu is None else f'{mfu:.1f}'} | {ceiling} | {other_gb} | "
                        f"{r.get('first_step_s', r.get('compile_s')):.1f} | {r.get('peak_device_mb', 0):,.0f} |")
        elif "matmul_bf16_tflops" in r:
            rows.append(f"| peak: {r['device']}, bf16 square matmul | {r['matmul_bf16_tflops']:.0f} TFLOP/s "
                        "| | | | | | | |")
    return "\n".join(rows)


def plan(shape: dict, batch: int, steps: int, smoke: bool) -> list[tuple[str, list[str], float]]:
    """(name, command, timeout s) of every part, most wanted first: a short lease may end the list early."""
    me = [sys.executable, os.path.abspath(__file__)] + (["--smoke"] if smoke else [])
    torch_args = ["--batch", str(batch), "--steps", str(steps)]
    parts = [
        ("peak", me + ["--part", "peak"], 90),
        ("ours_einsum_sparse", ours_command(shape, batch, steps, "einsum", "sparse"), 150),
        ("torch_eager", me + ["--part", "torch"] + torch_args, 120),
        ("ours_cudnn_sparse", ours_command(shape, batch, steps, "cudnn", "sparse"), 150),
        ("torch_compile", me + ["--part", "torch_compile"] + torch_args, 200),
        ("ours_einsum_dense", ours_command(shape, batch, steps, "einsum", "dense"), 150),
        ("ours_xla_sparse", ours_command(shape, batch, steps, "xla", "sparse"), 150),
        # where the step's time goes, op by op (the table is in parts.log, the top ops in results.jsonl)
        ("ours_cudnn_sparse_profile", ours_command(shape, batch, steps, "cudnn", "sparse",
                                                   "--config.bench.op_profile=40"), 180),
        ("ours_cudnn_sparse_batch2x", ours_command(shape, 2 * batch, steps, "cudnn", "sparse"), 150),
        ("ours_cudnn_sparse_scan", ours_command(shape, batch, steps, "cudnn", "sparse",
                                                "--config.model.scan_layers=True"), 150),
        # less traffic outside the matmuls: LayerNorm outputs (the residual stream) in bf16, as MaxText and T5X
        ("ours_cudnn_sparse_bf16_norms", ours_command(shape, batch, steps, "cudnn", "sparse",
                                                      "--config.model.norm_dtype=compute"), 150),
        # the tanh GELU, which a GEMM epilogue can apply (HF BERT's is the exact erf one)
        ("ours_cudnn_sparse_gelu_tanh", ours_command(shape, batch, steps, "cudnn", "sparse",
                                                     "--config.model.mlp_activation=gelu_tanh"), 150),
        # cuBLAS for every matmul instead of XLA's choice between it and Triton-generated kernels
        ("ours_cudnn_sparse_no_triton_gemm", ["env", "XLA_FLAGS=--xla_gpu_enable_triton_gemm=false"]
         + ours_command(shape, batch, steps, "cudnn", "sparse"), 150),
    ]
    return [p for p in parts if not (smoke and "cudnn" in p[0])]  # cuDNN attention needs a GPU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench/gpu_bert_base")
    parser.add_argument("--smoke", action="store_true", help="BERT-tiny shapes, batch 8, 2 steps: checks the script")
    parser.add_argument("--budget_s", type=float, default=480, help="parts that would start after this are skipped")
    parser.add_argument("--parts", default="", help="comma-separated part names to run (default: all, in order)")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # internal: peak | torch | torch_compile
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    shape = SMOKE if args.smoke else BASE
    if args.part:
        result = (part_peak(args.smoke) if args.part == "peak" else
                  part_torch(shape, args.batch, args.steps, compile_=args.part == "torch_compile"))
        print(json.dumps(result), flush=True)
        return

    batch, steps = (8, 2) if args.smoke else (args.batch, args.steps)
    parts = plan(shape, batch, steps, args.smoke)
    if args.parts:
        wanted = args.parts.split(",")
        unknown = sorted(set(wanted) - {name for name, _, _ in parts})
        if unknown:
            parser.error(f"--parts: unknown {unknown}; known: {[name for name, _, _ in parts]}")
        parts = [p for p in parts if p[0] in wanted]
    os.makedirs(args.out, exist_ok=True)
    open(os.path.join(args.out, "parts.log"), "w").close()
    start, records = time.perf_counter(), []
    for name, cmd, timeout in parts:
        left = args.budget_s - (time.perf_counter() - start)
        if left < 30:
            records.append({"part": name, "error": f"skipped: {args.budget_s:.0f} s budget spent"})
            continue
        records.append(run_part(name, cmd, min(timeout, left), args.out))
    with open(os.path.join(args.out, "results.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    text = table(records)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
