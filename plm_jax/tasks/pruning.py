"""`config.prune`: a fine-tune whose starting point is another fine-tune of the same task with its least important
attention heads removed (compress/head_pruning.py, Michel et al., 2019). Importance is measured with the starting
point's own head and loss on the training examples; the run itself is the short re-fine-tune, and
`train.eval_at_start=True` scores the pruned model before it.

    python launch.py finetune --config configs/finetune/rotten_tomatoes.py --init runs/rt_teacher \
        --workdir runs/rt_pruned --config.prune.heads=6 --config.train.eval_at_start=True
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from plm_jax.compress.head_pruning import head_importance, heads_to_keep, prune_heads
from plm_jax.errors import UserError
from plm_jax.models import layout
from plm_jax.tasks.starting_point import StartingPoint

log = logging.getLogger("plm_jax")


def heads(config: Any) -> int:
    """prune.heads: the heads each layer keeps; 0 = no pruning (also for configs without a `prune` section)."""
    return int((config.get("prune") or {}).get("heads", 0))


def check(config: Any, start: StartingPoint) -> int:
    """prune.heads (0 = off), checked against the starting point before any data is read."""
    if not heads(config):
        return 0
    keep, examples = heads(config), int(config.prune.examples)
    if keep < 0 or examples <= 0:
        raise UserError(f"prune.heads={keep} must be 0 (off) or positive, and prune.examples={examples} positive")
    cfg = start.model_cfg
    if start.finetuned is None or not start.params:
        raise UserError("prune.heads needs --init a fine-tune of this task: a head's importance is measured with "
                        "its trained task head and loss")
    if cfg.architecture != "encoder":
        raise UserError(f"prune.heads prunes an encoder's attention heads; --init {start.source} is "
                        f"model.architecture={cfg.architecture!r}")
    if keep > cfg.num_heads:
        raise UserError(f"prune.heads={keep}: keep 1 to {cfg.num_heads} of --init {start.source}'s heads a layer")
    return keep


def pruned_start(task: Any, start: StartingPoint) -> tuple[StartingPoint, dict[str, Any]]:
    """`start` (a fine-tune of `task`'s kind) with every layer's `prune.heads` most important heads, and the record
    that results.json keeps (importance per layer and head, the heads kept)."""
    config, cfg = task.config, start.model_cfg
    keep = heads(config)  # checked against `start` by `check`, before the data was read
    # the gates find each layer by its name: measure on the unscanned model
    unscanned_cfg = dataclasses.replace(cfg, scan_layers=False, remat="none")
    probe = type(task)(config, dataclasses.replace(task.info, model_cfg=unscanned_cfg), task.tokenizer, None,
                       {"train": task.splits["train"]})
    params = layout.to_unscanned(start.params)
    train = task.splits["train"].arrays
    # the examples: drawn by the seed, from a stream apart from the epochs' orders (epoch_order(seed, epoch))
    order = np.random.default_rng([int(config.seed), 1 << 20]).permutation(len(task.splits["train"]))
    order = order[: int(config.prune.examples)]
    batch_size = int(config.train.eval_batch_size)
    batches = (probe.batch(train, np.pad(order[i : i + batch_size], (0, max(0, i + batch_size - len(order))),
                                         constant_values=-1))  # padding rows: weight 0
               for i in range(0, len(order), batch_size))

    def loss_sums(p: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
        sums = probe.sums(probe.forward(p, batch, True), batch)
        return sums["loss_sum"], sums["weight_sum"]

    importance_NxH = head_importance(loss_sums, params, batches, cfg.num_layers, cfg.num_heads)
    kept_NxK = heads_to_keep(importance_NxH, keep)
    pruned = prune_heads(params, kept_NxK)
    model_cfg = dataclasses.replace(cfg, num_heads=keep, head_dim=cfg.kv_dim)
    log.info("head importance on %d training examples; kept per layer: %s", len(order),
             "; ".join(f"{i}: {list(map(int, k))}" for i, k in enumerate(kept_NxK)))
    record = {"heads_kept": keep, "heads_before": cfg.num_heads, "examples": len(order),
              "kept": kept_NxK.tolist(), "importance": np.round(importance_NxH, 8).tolist()}
    source = f"{start.source} ({keep} of {cfg.num_heads} heads a layer)"
    pruned = layout.to_scanned(pruned) if cfg.scan_layers else pruned
    return dataclasses.replace(start, source=source, model_cfg=model_cfg, params=pruned), record
