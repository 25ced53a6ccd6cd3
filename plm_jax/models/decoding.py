"""Model-agnostic autoregressive decoding: greedy, sampling (temperature / top-k / top-p) and beam search.

The model is seen only through a step function

    step_fn(token_ids_B: int32[B], cache, index: int32[]) -> (logits_BxV: float[B, V], new_cache)

which feeds one token per row at decoding position `index` (the same for every row) and returns the logits of
the next token. Every function here is pure, runs under `jax.jit` with the config arguments static, and has
static shapes: the outputs are always `max_len` long, and the loops (`lax.while_loop`) stop early once every
row is finished.

Cache contract: the cache is any pytree whose every leaf has the batch as its leading axis (no scalar leaves,
no shared leaves such as a step counter of shape []). Beam search relies on this: it repeats each row
`beam_size` times at the start and reorders rows by parent beam after every step with `jnp.take(leaf, idx, 0)`.
A leaf that is the same for every row (a position counter) must therefore be stored per row. The cache must
keep its structure, shapes and dtypes across a step (a `lax.while_loop` carry).

Positions: the first call feeds `first_ids_B` at `start_index`; generated token t (0-based) comes from the
call at `start_index + t`, so at most `max_len` calls are made and the cache needs room for positions up to
`start_index + max_len - 1`.

Shapes in names: B batch, N beams, T max_len (generated tokens), V vocab.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from plm_jax.errors import UserError

Cache = Any  # a pytree whose every leaf leads with the batch axis
StepFn = Callable[[jax.Array, Cache, jax.Array], tuple[jax.Array, Cache]]
ChooseFn = Callable[[jax.Array, jax.Array], jax.Array]

_NEG_INF = -jnp.inf  # beam scores: -inf marks an empty slot; it never meets another inf, so no NaN arises


# ----------------------------------------------------------------------------------------------- filters


def top_k_filter(logits_BxV: jax.Array, k: int) -> jax.Array:
    """Keep the k largest logits per row (and any tied with the k-th, so the result does not depend on the
    order of equal logits); the rest become -inf. k <= 0 or k >= V keeps everything. k must be static."""
    vocab = logits_BxV.shape[-1]
    if k <= 0 or k >= vocab:
        return logits_BxV
    kth_Bx1 = jax.lax.top_k(logits_BxV, k)[0][..., -1:]
    return jnp.where(logits_BxV >= kth_Bx1, logits_BxV, -jnp.inf)


def top_p_filter(logits_BxV: jax.Array, p: float | jax.Array) -> jax.Array:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability is >= p (always at least
    one token, plus any tied with the least likely kept one); the rest become -inf."""
    if isinstance(p, int | float) and p >= 1.0:
        return logits_BxV
    sorted_BxV = jnp.flip(jnp.sort(logits_BxV, axis=-1), axis=-1)  # descending
    probs_BxV = jax.nn.softmax(sorted_BxV.astype(jnp.float32), axis=-1)
    cum_BxV = jnp.cumsum(probs_BxV, axis=-1)
    before_BxV = jnp.concatenate([jnp.zeros_like(cum_BxV[..., :1]), cum_BxV[..., :-1]], axis=-1)
    # a token is needed while the more likely ones do not reach p yet; the first one always is
    keep_BxV = (before_BxV < p) | (jnp.arange(sorted_BxV.shape[-1]) == 0)
    threshold_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits_BxV >= threshold_Bx1, logits_BxV, -jnp.inf)


# ------------------------------------------------------------------------------------ greedy and sampling


class _DecodeState(NamedTuple):
    step: jax.Array  # int32[]: tokens generated so far
    last_B: jax.Array  # int32[B]: the token to feed next
    cache: Cache
    tokens_BxT: jax.Array
    logprobs_B: jax.Array
    done_B: jax.Array


def _decode(step_fn: StepFn, cache: Cache, first_ids_B: jax.Array, choose: ChooseFn, *, start_index: int | jax.Array,
            max_len: int, eos_id: int, pad_id: int) -> tuple[jax.Array, jax.Array]:
    """The loop shared by greedy and sampling; `choose(logits_BxV, step) -> ids_B` picks the next tokens."""
    first_ids_B = jnp.asarray(first_ids_B, jnp.int32)
    batch = first_ids_B.shape[0]
    start = jnp.asarray(start_index, jnp.int32)

    def cond(s: _DecodeState) -> jax.Array:
        return (s.step < max_len) & ~jnp.all(s.done_B)

    def body(s: _DecodeState) -> _DecodeState:
        logits_BxV, cache = step_fn(s.last_B, s.cache, start + s.step)
        logits_BxV = logits_BxV.astype(jnp.float32)
        ids_B = jnp.where(s.done_B, pad_id, choose(logits_BxV, s.step).astype(jnp.int32))
        # log-probs under the model itself (temperature 1, unfiltered), so scores compare across settings
        logp_B = jnp.take_along_axis(jax.nn.log_softmax(logits_BxV, axis=-1), ids_B[:, None], axis=-1)[:, 0]
        return _DecodeState(
            step=s.step + 1,
            last_B=ids_B,
            cache=cache,
            tokens_BxT=jax.lax.dynamic_update_slice(s.tokens_BxT, ids_B[:, None], (0, s.step)),
            logprobs_B=s.logprobs_B + jnp.where(s.done_B, 0.0, logp_B),
            done_B=s.done_B | (ids_B == eos_id),
        )

    init = _DecodeState(
        step=jnp.zeros((), jnp.int32),
        last_B=first_ids_B,
        cache=cache,
        tokens_BxT=jnp.full((batch, max_len), pad_id, jnp.int32),
        logprobs_B=jnp.zeros((batch,), jnp.float32),
        done_B=jnp.zeros((batch,), bool),
    )
    out = jax.lax.while_loop(cond, body, init)
    return out.tokens_BxT, out.logprobs_B


def greedy(step_fn: StepFn, cache: Cache, first_ids_B: jax.Array, *, start_index: int | jax.Array, max_len: int,
           eos_id: int, pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
    """Argmax decoding -> (tokens_BxT, logprobs_B). A row stops after its EOS (kept; later slots are pad_id)
    and its log-prob sum stops with it; the loop ends as soon as every row has stopped."""
    return _decode(step_fn, cache, first_ids_B, lambda logits_BxV, _: jnp.argmax(logits_BxV, axis=-1),
                   start_index=start_index, max_len=max_len, eos_id=eos_id, pad_id=pad_id)


def sample(step_fn: StepFn, cache: Cache, first_ids_B: jax.Array, rng: jax.Array, *, start_index: int | jax.Array,
           max_len: int, eos_id: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
    """Ancestral sampling -> (tokens_BxT, logprobs_B), with the EOS/padding rules of `greedy`.

    The logits are divided by `temperature`, then filtered by top-k and then by top-p (on the tempered
    distribution, as Hugging Face does). temperature 0 is greedy. `logprobs_B` sums the model's own
    (temperature 1, unfiltered) log-probs of the chosen tokens. `rng` is a `jax.random.key`; step t uses
    `fold_in(rng, t)`.
    """
    if temperature < 0:
        raise UserError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return greedy(step_fn, cache, first_ids_B, start_index=start_index, max_len=max_len, eos_id=eos_id,
                      pad_id=pad_id)

    def choose(logits_BxV: jax.Array, step: jax.Array) -> jax.Array:
        logits_BxV = top_p_filter(top_k_filter(logits_BxV / temperature, top_k), top_p)
        return jax.random.categorical(jax.random.fold_in(rng, step), logits_BxV, axis=-1)

    return _decode(step_fn, cache, first_ids_B, choose, start_index=start_index, max_len=max_len, eos_id=eos_id,
                   pad_id=pad_id)


# ------------------------------------------------------------------------------------------- beam search


def _check_batch_leading(tree: Cache, rows: int) -> None:
    """Shapes are static, so a cache that breaks the contract fails at trace time with a clear message."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != rows:
            raise UserError(f"cache leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}; every leaf must "
                             f"lead with the batch axis ({rows} rows)")


def expand_to_beams(tree: Cache, beam_size: int) -> Cache:
    """[B, ...] -> [B*N, ...], each row repeated N times in a row (row b*N + n is beam n of example b)."""
    return jax.tree.map(lambda leaf_BxX: jnp.repeat(leaf_BxX, beam_size, axis=0), tree)


def gather_beams(tree: Cache, beam_indices_BxM: jax.Array, batch_size: int, beam_size: int) -> Cache:
    """Reorder a flat [B*N, ...] tree by beam: new beam m of example b is old beam beam_indices_BxM[b, m].
    N = beam_size is the number of beams the leaves hold now; the result holds M = beam_indices_BxM.shape[1]."""
    flat_BM = (jnp.arange(batch_size, dtype=jnp.int32)[:, None] * beam_size + beam_indices_BxM).reshape(-1)
    return jax.tree.map(lambda leaf: jnp.take(leaf, flat_BM, axis=0), tree)


def gnmt_length_penalty(length: jax.Array | int, alpha: float) -> jax.Array:
    """GNMT length penalty ((5 + length) / 6) ** alpha; a finished beam's score is its log-prob over this."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def _take_beams(x_BxNxX: jax.Array, idx_BxM: jax.Array) -> jax.Array:
    """x[b, idx[b, m], ...] for arrays laid out [B, N, ...]."""
    idx = idx_BxM.reshape(idx_BxM.shape + (1,) * (x_BxNxX.ndim - 2))
    return jnp.take_along_axis(x_BxNxX, idx, axis=1)


class _BeamState(NamedTuple):
    step: jax.Array  # int32[]: tokens generated so far (every alive beam has this length)
    alive_last_BxN: jax.Array
    alive_logprobs_BxN: jax.Array
    alive_seqs_BxNxT: jax.Array
    finished_scores_BxN: jax.Array  # sorted best first; -inf marks an empty slot
    finished_seqs_BxNxT: jax.Array
    cache: Cache  # B*N rows


def beam_search(step_fn: StepFn, cache: Cache, first_ids_B: jax.Array, *, start_index: int | jax.Array,
                max_len: int, eos_id: int, beam_size: int, length_penalty: float = 0.6,
                pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
    """Beam search -> (tokens_BxNxT, scores_BxN), best first; score = log-prob / ((5 + length) / 6) ** length_penalty.

    Flax-WMT / T5X style: each step the N alive beams propose their 2N best continuations; those ending in
    EOS (length counts the EOS) compete with the finished pool, the others refill the alive beams. A beam
    still alive after max_len tokens is scored as finished at length max_len, and competes with the EOS ones
    (as Hugging Face does), so a row where nothing emits EOS returns its alive beams. The loop stops early
    once, in every row, no alive beam can beat the worst of N finished ones (log-probs only fall, so an alive
    beam's best future score is its log-prob over the largest penalty still reachable). Slots that no valid
    sequence fills (a tiny vocabulary and max_len) have score -inf.

    The cache (batch-leading leaves, see the module docstring) is expanded to B*N rows, row b*N + n, and
    reordered by parent beam after every step; step_fn then runs on B*N rows.
    """
    first_ids_B = jnp.asarray(first_ids_B, jnp.int32)
    batch, n = first_ids_B.shape[0], beam_size
    _check_batch_leading(cache, batch)
    start = jnp.asarray(start_index, jnp.int32)
    alpha = length_penalty  # the GNMT alpha

    def cond(s: _BeamState) -> jax.Array:
        # lengths still reachable are step+1 .. max_len; the penalty is monotone, so its max is at an end
        max_penalty = jnp.maximum(gnmt_length_penalty(s.step + 1, alpha), gnmt_length_penalty(max_len, alpha))
        best_alive_B = s.alive_logprobs_BxN[:, 0] / max_penalty
        worst_finished_B = s.finished_scores_BxN[:, -1]  # -inf until N beams have finished
        return (s.step < max_len) & ~jnp.all(worst_finished_B > best_alive_B)

    def body(s: _BeamState) -> _BeamState:
        logits_BNxV, cache = step_fn(s.alive_last_BxN.reshape(batch * n), s.cache, start + s.step)
        vocab = logits_BNxV.shape[-1]
        logp_BxNxV = jax.nn.log_softmax(logits_BNxV.astype(jnp.float32), axis=-1).reshape(batch, n, vocab)
        cand_BxNV = (s.alive_logprobs_BxN[:, :, None] + logp_BxNxV).reshape(batch, n * vocab)
        # 2N candidates: even if N of them end in EOS, N remain to keep the beam full
        top_logp_BxK, top_flat_BxK = jax.lax.top_k(cand_BxNV, min(2 * n, n * vocab))
        parent_BxK, ids_BxK = top_flat_BxK // vocab, top_flat_BxK % vocab
        seqs_BxKxT = _take_beams(s.alive_seqs_BxNxT, parent_BxK).at[:, :, s.step].set(ids_BxK)
        new_len = s.step + 1
        finishing_BxK = (ids_BxK == eos_id) | (new_len == max_len)

        alive_logp_BxN, alive_pos_BxN = jax.lax.top_k(jnp.where(finishing_BxK, _NEG_INF, top_logp_BxK), n)
        cache = gather_beams(cache, _take_beams(parent_BxK, alive_pos_BxN), batch, n)

        new_scores_BxK = jnp.where(finishing_BxK, top_logp_BxK / gnmt_length_penalty(new_len, alpha), _NEG_INF)
        pool_scores_BxP = jnp.concatenate([s.finished_scores_BxN, new_scores_BxK], axis=1)
        pool_seqs_BxPxT = jnp.concatenate([s.finished_seqs_BxNxT, seqs_BxKxT], axis=1)
        finished_scores_BxN, finished_pos_BxN = jax.lax.top_k(pool_scores_BxP, n)

        return _BeamState(
            step=new_len,
            alive_last_BxN=_take_beams(ids_BxK, alive_pos_BxN),
            alive_logprobs_BxN=alive_logp_BxN,
            alive_seqs_BxNxT=_take_beams(seqs_BxKxT, alive_pos_BxN),
            finished_scores_BxN=finished_scores_BxN,
            finished_seqs_BxNxT=_take_beams(pool_seqs_BxPxT, finished_pos_BxN),
            cache=cache,
        )

    # all N beams start identical, so only beam 0 may expand at first (others start at -inf)
    alive_logp_N = jnp.where(jnp.arange(n) == 0, 0.0, _NEG_INF).astype(jnp.float32)
    init = _BeamState(
        step=jnp.zeros((), jnp.int32),
        alive_last_BxN=jnp.repeat(first_ids_B[:, None], n, axis=1),
        alive_logprobs_BxN=jnp.broadcast_to(alive_logp_N, (batch, n)),
        alive_seqs_BxNxT=jnp.full((batch, n, max_len), pad_id, jnp.int32),
        finished_scores_BxN=jnp.full((batch, n), _NEG_INF, jnp.float32),
        finished_seqs_BxNxT=jnp.full((batch, n, max_len), pad_id, jnp.int32),
        cache=expand_to_beams(cache, n),
    )
    out = jax.lax.while_loop(cond, body, init)
    return out.finished_seqs_BxNxT, out.finished_scores_BxN
