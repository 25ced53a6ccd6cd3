"""Where a compiled step spends its time, op by op, without TensorBoard's profile plugin.

`jax.profiler.trace(create_perfetto_trace=True)` writes a Chrome-trace JSON next to the XPlane file; each
executed HLO op (a fusion, a dot, a copy) is one complete event named after the HLO instruction. The compiled
HLO text maps each name to its output shape and to the model code that produced it (`op_name` metadata such
as `transpose(jvp(BertForMaskedLM))/encoder/layer_0/mlp/wi/dot_general`), so the table reads as model code.

Times are per step and per op. Ops that run concurrently (the CPU runtime overlaps independent ones) each count
their own wall time, so the column can sum to more than the step.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from collections.abc import Callable
from typing import Any

import jax

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\(?[a-z0-9]+\[[^\]]*\])")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def hlo_ops(hlo_text: str) -> dict[str, tuple[str, str]]:
    """Instruction name -> (output shape, op_name metadata) for every instruction of the compiled module."""
    ops = {}
    for line in hlo_text.splitlines():
        if m := _INSTRUCTION.match(line):
            source = _OP_NAME.search(line)
            ops[m.group(1)] = (m.group(2), re.sub(r"^jit\([^)]*\)/", "", source.group(1)) if source else "")
    return ops


def _kind(name: str, op_name: str) -> str:
    if "dot" in name or "convolution" in name or op_name.endswith("dot_general"):
        return "matmul"
    if name.startswith(("copy", "transpose")):
        return "copy/transpose"
    return "other"


def trace_events(run: Callable[[], Any], steps: int) -> list[dict[str, Any]]:
    """Complete ('X') events of `steps` calls of `run` (each call blocks until its step is done)."""
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            for _ in range(steps):
                jax.block_until_ready(run())
        files = glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True)
        if not files:
            raise RuntimeError(f"jax.profiler wrote no perfetto trace under {directory}")
        with gzip.open(files[0]) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [e for e in events if e.get("ph") == "X"]


def op_table(events: list[dict[str, Any]], hlo_text: str, steps: int) -> dict[str, Any]:
    """Per-op milliseconds per step, largest first, and totals per kind (matmul, copy/transpose, other)."""
    ops = hlo_ops(hlo_text)
    micros: collections.Counter[str] = collections.Counter()
    # On a GPU each kernel is a device event named after the kernel (a cuBLAS gemm, say) whose `hlo_op` argument
    # names the instruction; the host's launch events would count the same op again, so only kernels count there.
    # On a CPU the op's own event carries the instruction's name.
    kernels = [e for e in events if (e.get("args") or {}).get("hlo_op") in ops]
    for e in kernels or events:
        name = e["args"]["hlo_op"] if kernels else e["name"]
        if name in ops:
            micros[name] += e.get("dur", 0)
    rows = []
    by_kind: collections.Counter[str] = collections.Counter()
    for name, us in micros.most_common():
        shape, op_name = ops[name]
        ms = us / 1e3 / steps
        kind = _kind(name, op_name)
        by_kind[kind] += ms
        rows.append({"op": name, "ms": ms, "kind": kind, "shape": shape, "source": op_name})
    return {"ops": rows, "ms_by_kind": dict(by_kind), "op_ms_total": sum(by_kind.values())}


def format_table(table: dict[str, Any], top: int = 25) -> str:
    lines = [f"{'ms/step':>9}  {'kind':14}  {'shape':24}  source (op)"]
    for r in table["ops"][:top]:
        lines.append(f"{r['ms']:9.1f}  {r['kind']:14}  {r['shape']:24}  {r['source'][-90:] or '-'} ({r['op']})")
    kinds = ", ".join(f"{k} {v:.0f} ms" for k, v in sorted(table["ms_by_kind"].items(), key=lambda kv: -kv[1]))
    lines.append(f"per step, summed over ops: {table['op_ms_total']:.0f} ms ({kinds})")
    return "\n".join(lines)
