"""Plain-text tables of fine-tuning results, for the terminal (the same numbers are in the JSON files)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_SKIP = ("epoch", "total", "HasAns_total", "NoAns_total", "missing")


def metrics_table(by_split: Mapping[str, Mapping[str, float]]) -> str:
    """One row per split, one column per metric (entries named "_..." are not splits)."""
    by_split = {split: metrics for split, metrics in by_split.items() if not split.startswith("_")}
    keys: list[str] = []
    for metrics in by_split.values():
        keys += [k for k in metrics if k not in keys and k not in _SKIP and not k.startswith("_")]
    return table(["split", *keys], [[split, *(metrics.get(k) for k in keys)] for split, metrics in by_split.items()])


def results_table(results: Mapping[str, Any]) -> str:
    best = results.get("best") or {}
    rows = {}
    if best.get("metrics"):
        rows[f"eval (best, epoch {best['epoch']})"] = best["metrics"]
    if results.get("test"):
        rows["test (best checkpoint)"] = results["test"]
    head = (f"fine-tuned from {results['starting_point']['source']} ({results['starting_point']['kind']}): "
            f"{results['steps']} steps on {results['train_examples']} examples, main metric {results['main_metric']}")
    signatures = (results.get("test") or best.get("metrics") or {}).get("_signatures")
    tail = "".join(f"\nsacrebleu {name}: {sig}" for name, sig in (signatures or {}).items())
    return head + ("\n" + metrics_table(rows) if rows else "") + tail


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(header)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
