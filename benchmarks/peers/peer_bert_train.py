#!/usr/bin/env python3
"""One Hugging Face BERT masked-LM training run, timed: the peers that benchmarks/vs_peers.py measures plm_jax against.

What it measures: the wall time of full training steps (forward, backward, AdamW update) of Hugging Face
transformers' BERT for masked LM, on a synthetic batch, in one implementation per process (so that the peak RSS
is that implementation's own):

  torch          `BertForMaskedLM` + `torch.optim.AdamW`, eager PyTorch
  torch_compile  the same model under `torch.compile` (the optimizer step stays eager)
  flax           `FlaxBertForMaskedLM` + `optax.adamw`, the whole step under `jax.jit`, parameters and optimizer
                 state donated

The work is the same as plm_jax's `launch.py bench --config.bench.head=dense`: fp32, dropout on, vocab 30522,
random token ids, exactly round(0.15 * seq) labelled positions per row, and the MLM head projecting every position
through the vocabulary. BERT sizes from Turc et al. 2019 (layers, hidden, heads; MLP 4 x hidden).

It runs in the peers' own venv (benchmarks/peers/build_venv.sh), not in plm_jax's:

    /tmp/plm-peers-venv/bin/python benchmarks/peers/peer_bert_train.py --impl flax --config mini --steps 3

and prints one JSON line: every timed step's seconds, their median, tokens/s (batch x seq / median step), the
first step's time (compilation plus one step), the setup time, peak RSS, the process's CPU use over the timed
steps (2.0 = two cores busy), the loss at the first and last step, FLOPs per step and the library versions.

FLOPs per step = T * (6 N + 12 L H S): T = batch x seq tokens, N = the weights used in matmuls and element-wise
ops (encoder layers, MLM head transform, the tied V x H output projection at all T positions, biases and layer
norms; the position and token-type tables are gathers and not counted).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import statistics
import tempfile
import time

import numpy as np

# name -> (layers, hidden, heads)
SIZES = {"tiny": (2, 128, 2), "mini": (4, 256, 4), "small": (4, 512, 8), "medium": (8, 512, 8)}
MASK_FRACTION = 0.15
LR, WEIGHT_DECAY = 1e-4, 0.01


def flop_params(layers: int, hidden: int, vocab: int) -> int:
    """Weights that take part in matmuls or element-wise ops in one forward pass (see the module docstring)."""
    h = hidden
    per_layer = (4 * h * h + 4 * h) + (2 * h * 4 * h + 4 * h + h) + 4 * h  # attention q/k/v/o, MLP, two LayerNorms
    head = (h * h + h) + 2 * h + (vocab * h + vocab)  # transform, its LayerNorm, tied output projection + bias
    return layers * per_layer + head + 2 * h  # + the embedding LayerNorm


def synthetic_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random token ids, and labels at exactly round(0.15 * seq) random positions of each row (-100 elsewhere)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (batch, seq), dtype=np.int64)
    labels = np.full((batch, seq), -100, np.int64)
    predicted = round(MASK_FRACTION * seq)
    for row in range(batch):
        positions = rng.permutation(seq)[:predicted]
        labels[row, positions] = ids[row, positions]
    return ids, labels


def torch_step(bert_config: dict, ids: np.ndarray, labels: np.ndarray, compile_: bool, cache_dir: str):
    """A `step()` closure for PyTorch (eager or torch.compile), and the versions it ran with."""
    if compile_:
        # A fresh inductor cache unless one is given, so that compilation is cold, as JAX's is (no persistent
        # cache). Inductor also writes headers under TMPDIR: keep them in the same place.
        if not cache_dir:
            cache_dir = tempfile.mkdtemp(prefix="inductor_")
            atexit.register(shutil.rmtree, cache_dir, ignore_errors=True)
        os.makedirs(cache_dir, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.environ["TMPDIR"] = tempfile.tempdir = cache_dir
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(transformers.BertConfig(**bert_config)).train()
    forward = torch.compile(model) if compile_ else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    input_ids = torch.from_numpy(ids)
    batch = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                 token_type_ids=torch.zeros_like(input_ids), labels=torch.from_numpy(labels))

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = forward(**batch).loss
        loss.backward()
        optimizer.step()
        return loss.item()  # waits for the step

    info = dict(torch=torch.__version__, transformers=transformers.__version__, threads=torch.get_num_threads(),
                attn=model.config._attn_implementation, n_params=sum(p.numel() for p in model.parameters()))
    return step, info


def flax_step(bert_config: dict, ids: np.ndarray, labels: np.ndarray):
    """A `step()` closure for HF Flax under jax.jit, and the versions it ran with."""
    import flax
    import jax
    import jax.numpy as jnp
    import optax
    import transformers

    model = transformers.FlaxBertForMaskedLM(transformers.BertConfig(**bert_config), seed=0)
    tx = optax.adamw(LR, weight_decay=WEIGHT_DECAY)
    state = {"params": model.params, "opt_state": tx.init(model.params), "rng": jax.random.PRNGKey(0)}
    batch = dict(input_ids=jnp.asarray(ids, jnp.int32), labels=jnp.asarray(labels, jnp.int32))

    def loss_fn(params, batch, dropout_rng):
        ids = batch["input_ids"]
        logits = model(ids, jnp.ones_like(ids), jnp.zeros_like(ids), params=params, dropout_rng=dropout_rng,
                       train=True).logits
        labelled = batch["labels"] != -100
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(labelled, batch["labels"], 0))
        return (ce * labelled).sum() / labelled.sum()

    def train_step(params, opt_state, rng, batch):
        rng, dropout_rng = jax.random.split(rng)
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, dropout_rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, rng, loss

    jitted = jax.jit(train_step, donate_argnums=(0, 1))

    def step() -> float:
        params, opt_state, rng, loss = jitted(state["params"], state["opt_state"], state["rng"], batch)
        state.update(params=params, opt_state=opt_state, rng=rng)
        return float(jax.block_until_ready(loss))  # the parameters come out of the same executable

    info = dict(jax=jax.__version__, flax=flax.__version__, optax=optax.__version__,
                transformers=transformers.__version__, backend=jax.default_backend(),
                n_params=sum(x.size for x in jax.tree_util.tree_leaves(model.params)))
    return step, info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", required=True, choices=["torch", "torch_compile", "flax"])
    p.add_argument("--config", default="tiny", choices=list(SIZES), help="BERT size (layers, hidden, heads)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before them; the first one compiles")
    p.add_argument("--inductor-cache", default="", help="torch_compile: reuse this cache directory (warm compile)")
    p.add_argument("--round", type=int, default=0, help="copied into the JSON line, for the caller's bookkeeping")
    a = p.parse_args()

    layers, hidden, heads = SIZES[a.config]
    bert_config = dict(vocab_size=a.vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       intermediate_size=4 * hidden, max_position_embeddings=max(512, a.seq))
    ids, labels = synthetic_batch(a.batch, a.seq, a.vocab)

    t0 = time.perf_counter()
    if a.impl == "flax":
        step, info = flax_step(bert_config, ids, labels)
    else:
        step, info = torch_step(bert_config, ids, labels, a.impl == "torch_compile", a.inductor_cache)
    setup_s = time.perf_counter() - t0

    step_s, losses, load_start = [], [], os.getloadavg()[0]
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            cpu0, wall0 = time.process_time(), time.perf_counter()
        t = time.perf_counter()
        losses.append(step())
        step_s.append(time.perf_counter() - t)
    cpu_util = (time.process_time() - cpu0) / (time.perf_counter() - wall0)

    tokens = a.batch * a.seq
    n_flop_params = flop_params(layers, hidden, a.vocab)
    flops_per_step = tokens * (6 * n_flop_params + 12 * layers * hidden * a.seq)
    timed = step_s[a.warmup:]
    median = statistics.median(timed)
    print(json.dumps(dict(
        round=a.round, impl=a.impl, config=a.config, L=layers, H=hidden, A=heads, batch=a.batch, seq=a.seq,
        vocab=a.vocab, n_flop_params=n_flop_params, flops_per_step=flops_per_step,
        setup_s=setup_s, first_step_s=step_s[0], step_s=timed, median_step_s=median, tokens_per_s=tokens / median,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, cpu_util=cpu_util,
        loadavg_start=load_start, loss_first=losses[0], loss_last=losses[-1], **info)))


if __name__ == "__main__":
    main()
