"""How close to the matmul peak a compiled step could get: its memory traffic outside the matmuls, from the HLO.

One device runs a step's kernels one after another. The matmul kernels (dots, convolutions, cuBLAS/Triton GEMMs,
cuDNN attention) can at best run at the peak FLOP rate. Every other kernel (layer norm, softmax, GELU, dropout,
residual adds, the optimizer, gathers and scatters) reads and writes memory, and at best runs at the memory
bandwidth. So MFU cannot exceed

    ceiling = t_matmul / (t_matmul + t_other),   t_matmul = FLOPs / peak,   t_other = other bytes / bandwidth.

The other bytes are read from the compiled (optimised, fused) HLO: each top-level instruction that is not a
matmul counts its output and operand bytes, and a while loop's body counts once per known trip. A fusion that
reads a slice of an operand counts the whole operand, so the figure errs high, and the ceiling low, where the
program slices in place (scanned layers).
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import jax
import jax.numpy as jnp

from plm_jax.errors import UserError

_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
          "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16}
_SHAPE = re.compile(r"\b(" + "|".join(_BYTES) + r")\[([0-9,]*)\]")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$")
_HEADER = re.compile(r"^(ENTRY\s+)?%([\w.\-]+) \((.*)\) -> .* \{$")
_PARAM = re.compile(r"([\w.\-]+): ((?:\([^)]*\))|[\w\[\]{},:]+)")
_MATMUL_TARGET = re.compile(r"gemm|matmul|cublas|fmha|cudnn|conv", re.I)
_FREE = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "after-all", "partition-id",
         "replica-id", "iota", "copy-start", "copy-done", "opt-barrier"}


def shape_bytes(text: str) -> int:
    """Bytes of every array shape written in `text` (a tuple shape sums its elements)."""
    total = 0
    for dtype, dims in _SHAPE.findall(text):
        total += _BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def _parse(hlo_text: str) -> tuple[dict[str, list[tuple[str, str, str, str]]], dict[str, str], str]:
    """Computations as lists of (name, shape, opcode, rest of line); shapes of every named value; the entry."""
    computations: dict[str, list[tuple[str, str, str, str]]] = {}
    shapes: dict[str, str] = {}
    entry, current = "", None
    for line in hlo_text.splitlines():
        header = _HEADER.match(line)
        if header:
            current = header.group(2)
            computations[current] = []
            entry = current if header.group(1) else entry
            for name, shape in _PARAM.findall(header.group(3)):
                shapes[name] = shape
            continue
        instruction = _INSTRUCTION.match(line) if current else None
        if instruction:
            name, shape, opcode, rest = instruction.groups()
            shapes[name] = shape
            computations[current].append((name, shape, opcode, rest))
    if not entry:
        raise UserError("no ENTRY computation in the HLO text")
    return computations, shapes, entry


def _called(rest: str, attribute: str) -> str | None:
    found = re.search(rf"\b{attribute}=%([\w.\-]+)", rest)
    return found.group(1) if found else None


def _operands(rest: str) -> list[str]:
    depth, end = 1, len(rest)
    for i, char in enumerate(rest):  # the operand list ends at the parenthesis that closes the opcode's
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            end = i
            break
    return re.findall(r"%([\w.\-]+)", rest[:end])


def _source(rest: str, opcode: str) -> str:
    """The model code an instruction came from (its op_name), with layer numbers folded: `layer_N`."""
    found = re.search(r'op_name="([^"]*)"', rest)
    if not found:
        return f"({opcode}, no source)"
    names = found.group(1)
    if names.startswith("(") and names.endswith(")"):  # a combined op lists its sources joined by ':'
        names = names[1:-1]
    unique = list(dict.fromkeys(re.sub(r"(layers?_)\d+", r"\1N", re.sub(r"^jit\([^)]*\)/", "", name))
                                for name in names.split(":")))
    return unique[0] + (f" (+{len(unique) - 1} more)" if len(unique) > 1 else "")


def memory_traffic(hlo_text: str) -> dict[str, Any]:
    """Bytes a compiled program moves in its matmul kernels and in all its other kernels (one device), and the
    other kernels' bytes by the model code they came from (`other_by_source`, largest first)."""
    computations, shapes, entry = _parse(hlo_text)
    has_matmul: dict[str, bool] = {}

    def contains_matmul(computation: str) -> bool:
        if computation not in has_matmul:
            has_matmul[computation] = False  # no recursion through cycles
            has_matmul[computation] = any(_is_matmul(opcode, rest) for _, _, opcode, rest in
                                          computations.get(computation, []))
        return has_matmul[computation]

    def _is_matmul(opcode: str, rest: str) -> bool:
        if opcode in ("dot", "convolution", "ragged-dot"):
            return True
        if opcode == "custom-call":
            target = re.search(r'custom_call_target="([^"]*)"', rest)
            return bool(target and _MATMUL_TARGET.search(target.group(1)))
        called = _called(rest, "calls") if opcode == "fusion" else None
        return bool(called and contains_matmul(called))

    totals = {"matmul_bytes": 0.0, "other_bytes": 0.0}
    by_source: dict[str, float] = {}

    def walk(computation: str, times: float) -> None:
        for _, shape, opcode, rest in computations[computation]:
            if opcode == "while":
                trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
                walk(_called(rest, "body") or "", times * (int(trips.group(1)) if trips else 1))
                continue
            callee = _called(rest, "to_apply" if opcode == "call" else "calls") if opcode in ("call", "async-start") \
                else None
            if callee:
                walk(callee, times)
                continue
            if opcode in _FREE:
                continue
            moved = shape_bytes(shape) + sum(shape_bytes(shapes.get(name, "")) for name in _operands(rest))
            if _is_matmul(opcode, rest):
                totals["matmul_bytes"] += times * moved
            else:
                totals["other_bytes"] += times * moved
                source = _source(rest, opcode)
                by_source[source] = by_source.get(source, 0.0) + times * moved

    computations.setdefault("", [])
    walk(entry, 1.0)
    return {**totals, "other_by_source": sorted(by_source.items(), key=lambda item: -item[1])}


def traffic_fields(traffic: dict[str, Any], top: int = 6) -> dict[str, Any]:
    """The JSON fields of `bench` and `compile-only`: GB per step per device, and the biggest other sources."""
    return {"matmul_gb_per_step": traffic["matmul_bytes"] / 1e9, "other_gb_per_step": traffic["other_bytes"] / 1e9,
            "other_gb_top": [[source, gb / 1e9] for source, gb in traffic["other_by_source"][:top]]}


def measure_bandwidth(megabytes: int = 128, reps: int = 3) -> float:
    """Bytes/s of an elementwise pass (read one array, write another) on device 0: the memory side of the
    roofline where no table knows the device (CPUs)."""
    x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
    f = jax.jit(lambda a: a * 2.0 + 1.0)
    f(x).block_until_ready()
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        f(x).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * x.nbytes / best


def ceiling(flops_per_unit: float, peak_flops: float, other_bytes_per_unit: float, bandwidth: float) -> float:
    """The highest MFU (%) the step allows: matmuls at the peak, every other kernel at the full bandwidth."""
    t_matmul = flops_per_unit / peak_flops
    return 100.0 * t_matmul / (t_matmul + other_bytes_per_unit / bandwidth)


def xla_bytes_accessed(compiled: Any) -> float:
    """XLA's own estimate of the bytes a compiled program accesses (0 when the backend gives none)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("bytes accessed", 0.0))
