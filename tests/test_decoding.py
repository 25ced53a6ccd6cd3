"""Decoding (greedy, sampling, beam search) against plain numpy references on toy trigram "models".

The toy step function looks its logits up in a fixed table by the previous two tokens, and the older one lives
only in the cache, so a beam search that reorders the cache wrongly produces wrong logits. A per-row step counter
in the cache must agree with the `index` argument, or the logits turn NaN.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import chisquare

from plm_jax.models.decoding import (
    beam_search,
    expand_to_beams,
    gather_beams,
    greedy,
    sample,
    top_k_filter,
    top_p_filter,
)

START = 3  # decoding position of the first fed token
POSITIONS = 64


class Trigram:
    """logits(next | prev2, prev1, index) = table[prev2, prev1] + pos[index]; prev2 is held in the cache."""

    def __init__(self, table_VxVxV: np.ndarray, pos_PxV: np.ndarray):
        self.table = np.asarray(table_VxVxV, np.float32)
        self.pos = np.asarray(pos_PxV, np.float32)
        self.vocab = self.table.shape[0]
        self.calls = 0  # step_fn executions, counted from inside the loop by a debug callback

    def logits(self, prev2: int, prev1: int, index: int) -> np.ndarray:
        return (self.table[prev2, prev1] + self.pos[index]).astype(np.float64)

    def logprobs(self, prev2: int, prev1: int, index: int) -> np.ndarray:
        x = self.logits(prev2, prev1, index)
        return x - x.max() - np.log(np.exp(x - x.max()).sum())

    def cache(self, prev2_B: np.ndarray) -> dict:
        prev2_B = jnp.asarray(prev2_B, jnp.int32)
        b = prev2_B.shape[0]
        return {
            "recent_Bx2": jnp.stack([jnp.zeros_like(prev2_B), prev2_B], axis=1),  # a 2-D leaf: [prev3, prev2]
            "count_B": jnp.zeros((b,), jnp.int32),
        }

    def step_fn(self, ids_B: jax.Array, cache: dict, index: jax.Array) -> tuple[jax.Array, dict]:
        jax.debug.callback(self._count)
        prev2_B = cache["recent_Bx2"][:, 1]
        logits_BxV = jnp.asarray(self.table)[prev2_B, ids_B] + jnp.asarray(self.pos)[index]
        in_sync_B = cache["count_B"] == index - START
        logits_BxV = logits_BxV + jnp.where(in_sync_B, 0.0, jnp.nan)[:, None]
        new_cache = {"recent_Bx2": jnp.stack([prev2_B, ids_B], axis=1), "count_B": cache["count_B"] + 1}
        return logits_BxV, new_cache

    def _count(self) -> None:
        self.calls += 1


def random_trigram(seed: int, vocab: int, scale: float = 1.5, eos_id: int | None = None) -> Trigram:
    """A dense random table; with eos_id, EOS is made (almost) impossible."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(vocab, vocab, vocab)) * scale
    if eos_id is not None:
        table[..., eos_id] = -30.0
    return Trigram(table, rng.normal(size=(POSITIONS, vocab)) * 0.3)


EOS = 1
CHAIN_NEXT = {0: 7, 1: 0, 2: 3, 3: 4, 4: EOS, 5: 6, 6: 5, 7: 2}  # 5 <-> 6 never reaches EOS


def chain_trigram(seed: int = 0) -> Trigram:
    """Greedy follows CHAIN_NEXT whatever prev2 is; EOS is unlikely unless it is the chain's next token, so the
    only finishing candidates are the greedy ones (beam search with one beam then equals greedy)."""
    rng = np.random.default_rng(seed)
    vocab = len(CHAIN_NEXT)
    table = rng.normal(size=(vocab, vocab, vocab)) * 0.5
    table[..., EOS] = -8.0
    for prev1, nxt in CHAIN_NEXT.items():
        table[:, prev1, nxt] = 4.0 + rng.normal(size=vocab) * 0.1
    return Trigram(table, rng.normal(size=(POSITIONS, vocab)) * 0.1)


def lp(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


# ------------------------------------------------------------------------------------------ references


def greedy_reference(m: Trigram, prev2_B, first_B, max_len: int, eos_id: int, pad_id: int):
    tokens = np.full((len(first_B), max_len), pad_id, np.int32)
    logprobs = np.zeros(len(first_B))
    for b, (p2, p1) in enumerate(zip(prev2_B, first_B)):
        for t in range(max_len):
            lsm = m.logprobs(p2, p1, START + t)
            nxt = int(np.argmax(lsm))
            tokens[b, t], logprobs[b] = nxt, logprobs[b] + lsm[nxt]
            if nxt == eos_id:
                break
            p2, p1 = p1, nxt
    return tokens, logprobs


def sequence_logprob(m: Trigram, prev2: int, first: int, seq) -> float:
    total, p2, p1 = 0.0, prev2, first
    for t, tok in enumerate(seq):
        total += m.logprobs(p2, p1, START + t)[tok]
        p2, p1 = p1, tok
    return total


def exhaustive_beams(m: Trigram, prev2: int, first: int, max_len: int, eos_id: int, alpha: float, n: int,
                     pad_id: int):
    """Every sequence: ending in EOS (length counts it) or cut at max_len; scored log-prob / lp(length)."""
    found: list[tuple[float, list[int]]] = []

    def extend(seq: list[int], p2: int, p1: int, logp: float) -> None:
        if len(seq) == max_len:
            found.append((logp / lp(max_len, alpha), seq))
            return
        lsm = m.logprobs(p2, p1, START + len(seq))
        for tok in range(m.vocab):
            if tok == eos_id:
                found.append(((logp + lsm[tok]) / lp(len(seq) + 1, alpha), seq + [tok]))
            else:
                extend(seq + [tok], p1, tok, logp + lsm[tok])

    extend([], prev2, first, 0.0)
    found.sort(key=lambda x: -x[0])
    tokens = np.full((n, max_len), pad_id, np.int32)
    for i, (_, seq) in enumerate(found[:n]):
        tokens[i, : len(seq)] = seq
    return tokens, np.array([s for s, _ in found[:n]])


def top_k_reference(logits: np.ndarray, k: int) -> np.ndarray:
    out = logits.copy()
    for row in out:
        if 0 < k < row.size:
            row[row < np.sort(row)[::-1][k - 1]] = -np.inf
    return out


def top_p_reference(logits: np.ndarray, p: float) -> np.ndarray:
    """Brute force: grow the most likely set until it holds p; keep everything tied with its last member."""
    out = logits.copy()
    for row in out:
        probs = np.exp(row.astype(np.float64) - row.max())
        probs /= probs.sum()
        order = np.argsort(-row, kind="stable")
        m = next((m for m in range(1, row.size + 1) if probs[order[:m]].sum() >= p), row.size)
        row[row < row[order[m - 1]]] = -np.inf
    return out


# ----------------------------------------------------------------------------------------------- filters


def test_top_k_filter_matches_numpy_with_ties():
    hand = np.array([[3.0, 1.0, 3.0, 0.0, 1.0]], np.float32)
    ninf = -np.inf
    np.testing.assert_array_equal(top_k_filter(jnp.asarray(hand), 1), [[3, ninf, 3, ninf, ninf]])
    np.testing.assert_array_equal(top_k_filter(jnp.asarray(hand), 3), [[3, 1, 3, ninf, 1]])
    rng = np.random.default_rng(0)
    logits = rng.integers(-3, 4, size=(64, 9)).astype(np.float32)  # many ties
    logits[:32] = rng.normal(size=(32, 9))
    for k in (0, 1, 2, 3, 5, 9, 12):
        np.testing.assert_array_equal(np.asarray(top_k_filter(jnp.asarray(logits), k)), top_k_reference(logits, k))


def test_top_p_filter_matches_numpy_with_ties():
    hand = np.log(np.array([[0.2, 0.3, 0.2, 0.3]], np.float32))
    ninf = -np.inf
    np.testing.assert_array_equal(np.isfinite(top_p_filter(jnp.asarray(hand), 0.5)), [[False, True, False, True]])
    np.testing.assert_array_equal(top_p_filter(jnp.asarray(hand), 0.65), hand)  # the two 0.2s tie at the boundary
    np.testing.assert_array_equal(np.isfinite(top_p_filter(jnp.asarray(hand), 0.0)), [[False, True, False, True]])
    assert np.asarray(top_p_filter(jnp.asarray([[5.0, 0.0, ninf]]), 0.3)).tolist() == [[5.0, ninf, ninf]]

    rng = np.random.default_rng(1)
    logits = rng.integers(-2, 3, size=(64, 7)).astype(np.float32)
    logits[:32] = rng.normal(size=(32, 7)) * 2
    for p in (0.05, 0.3, 0.5, 0.77, 0.95, 1.0):
        got = np.asarray(top_p_filter(jnp.asarray(logits), p))
        want = top_p_reference(logits, p)
        # away from float32 rounding of exact boundaries, the sets must agree exactly
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        cum = np.cumsum(np.sort(probs / probs.sum(-1, keepdims=True), -1)[:, ::-1], -1)
        safe = (np.abs(cum - p).min(-1) > 1e-5) | (p == 1.0)  # p = 1 keeps everything, tiny tokens included
        assert safe.sum() > 40
        np.testing.assert_array_equal(got[safe], want[safe])


# ------------------------------------------------------------------------------------------------ greedy


@pytest.mark.parametrize("model", [chain_trigram(), random_trigram(2, 6)], ids=["chain", "random"])
def test_greedy_matches_python_loop(model: Trigram):
    prev2, first = np.array([0, 3, 5, 2, 1]), np.array([4, 2, 7, 5, 0]) % model.vocab
    tokens, logprobs = greedy(model.step_fn, model.cache(prev2), jnp.asarray(first), start_index=START, max_len=9,
                              eos_id=EOS, pad_id=0)
    want_tokens, want_logprobs = greedy_reference(model, prev2, first, 9, EOS, 0)
    np.testing.assert_array_equal(tokens, want_tokens)
    np.testing.assert_allclose(logprobs, want_logprobs, rtol=1e-5, atol=1e-5)


def test_greedy_eos_stops_rows_independently_and_exits_early():
    model = chain_trigram()
    first = jnp.asarray([4, 2, 7, 5])  # EOS after 1, 3 and 4 tokens; 5 <-> 6 never ends
    tokens, _ = greedy(model.step_fn, model.cache(np.zeros(4)), first, start_index=START, max_len=6, eos_id=EOS,
                       pad_id=9)
    np.testing.assert_array_equal(tokens, [[1, 9, 9, 9, 9, 9], [3, 4, 1, 9, 9, 9], [2, 3, 4, 1, 9, 9],
                                           [6, 5, 6, 5, 6, 5]])
    model.calls = 0
    greedy(model.step_fn, model.cache(np.zeros(3)), first[:3], start_index=START, max_len=40, eos_id=EOS)
    assert model.calls == 4  # the slowest row's EOS is the 4th token: no call after that


# ------------------------------------------------------------------------------------------------ sampling


def test_sample_cold_and_top_k_one_equal_greedy():
    model = random_trigram(3, 7)
    prev2, first = np.array([0, 1, 2, 3, 4, 5]), jnp.asarray([6, 5, 4, 3, 2, 1])
    kw = dict(start_index=START, max_len=8, eos_id=EOS)
    want_tokens, want_logprobs = greedy(model.step_fn, model.cache(prev2), first, **kw)
    assert (np.asarray(want_tokens) == EOS).any()  # the EOS rule is exercised
    for extra in (dict(temperature=0.0), dict(temperature=1e-3), dict(top_k=1), dict(temperature=3.0, top_k=1)):
        tokens, logprobs = sample(model.step_fn, model.cache(prev2), first, jax.random.key(0), **kw, **extra)
        np.testing.assert_array_equal(tokens, want_tokens, err_msg=str(extra))
        np.testing.assert_allclose(logprobs, want_logprobs, rtol=1e-5, atol=1e-5, err_msg=str(extra))


def _filtered_probs(model: Trigram, prev2: int, prev1: int, index: int, temperature: float, top_k: int,
                    top_p: float) -> np.ndarray:
    scaled = (model.logits(prev2, prev1, index) / temperature)[None]
    kept = top_p_reference(top_k_reference(scaled, top_k), top_p)[0]
    probs = np.exp(kept - kept.max())
    return probs / probs.sum()


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(1.0, 0, 1.0), (0.5, 0, 1.0), (2.0, 3, 1.0), (1.5, 0, 0.7), (0.7, 5, 0.8)]
)
def test_sample_two_token_frequencies(temperature: float, top_k: int, top_p: float):
    """The joint counts of the first two sampled tokens over many identical rows match p(t0) p(t1 | t0) of the
    tempered, filtered model (an EOS first token is followed by pad), which also needs fresh noise each step."""
    model = random_trigram(4, 8, scale=1.0)
    rows, prev2, first, pad_id = 40000, 2, 5, 0
    tokens, _ = sample(model.step_fn, model.cache(np.full(rows, prev2)), jnp.full((rows,), first),
                       jax.random.key(7), start_index=START, max_len=2, eos_id=EOS, temperature=temperature,
                       top_k=top_k, top_p=top_p, pad_id=pad_id)
    tokens = np.asarray(tokens)
    v = model.vocab
    observed = np.bincount(tokens[:, 0] * v + tokens[:, 1], minlength=v * v).astype(float)

    p0 = _filtered_probs(model, prev2, first, START, temperature, top_k, top_p)
    assert 1 < (p0 > 0).sum() < v or (top_k, top_p) == (0, 1.0)  # the filters bite
    expected = np.zeros((v, v))
    for t0 in np.flatnonzero(p0):
        if t0 == EOS:
            expected[t0, pad_id] = p0[t0]
        else:
            expected[t0] = p0[t0] * _filtered_probs(model, first, t0, START + 1, temperature, top_k, top_p)
    expected = expected.reshape(-1) * rows
    assert observed[expected == 0].sum() == 0
    big, rare = expected >= 5, (expected > 0) & (expected < 5)  # pool rare cells: the chi-square needs counts
    f_obs, f_exp = observed[big], expected[big]
    if rare.any():
        f_obs, f_exp = np.append(f_obs, observed[rare].sum()), np.append(f_exp, expected[rare].sum())
    assert chisquare(f_obs, f_exp).pvalue > 1e-3


def test_sampled_sequences_follow_eos_rule_and_score():
    model = random_trigram(5, 6, scale=1.0)
    rows = 64
    rng = np.random.default_rng(0)
    prev2, first = rng.integers(0, 6, rows), rng.integers(0, 6, rows)
    tokens, logprobs = sample(model.step_fn, model.cache(prev2), jnp.asarray(first), jax.random.key(1),
                              start_index=START, max_len=7, eos_id=EOS, pad_id=0, temperature=1.3, top_p=0.9)
    tokens = np.asarray(tokens)
    ended = 0
    for b in range(rows):
        eos_at = np.flatnonzero(tokens[b] == EOS)
        seq = tokens[b] if eos_at.size == 0 else tokens[b, : eos_at[0] + 1]
        ended += eos_at.size > 0
        assert (tokens[b, len(seq):] == 0).all()
        np.testing.assert_allclose(logprobs[b], sequence_logprob(model, prev2[b], first[b], seq), atol=1e-4)
    assert 0 < ended < rows
    assert len({tuple(r) for r in tokens}) > rows // 2  # rows sample independently


# ----------------------------------------------------------------------------------------------- beam search


def test_expand_and_gather_beams():
    tree = {"a": jnp.arange(6).reshape(2, 3), "b": jnp.asarray([10, 20])}
    expanded = expand_to_beams(tree, 2)
    np.testing.assert_array_equal(expanded["b"], [10, 10, 20, 20])
    expanded = {**expanded, "b": expanded["b"] + jnp.arange(4)}  # beams of a row now differ: 10 11 | 22 23
    gathered = gather_beams(expanded, jnp.asarray([[1, 1, 0], [0, 1, 1]]), 2, 2)
    np.testing.assert_array_equal(gathered["b"], [11, 11, 10, 22, 23, 23])
    np.testing.assert_array_equal(gathered["a"], [[0, 1, 2]] * 3 + [[3, 4, 5]] * 3)


def test_beam_search_rejects_leaves_without_batch_axis():
    model = random_trigram(0, 5)
    cache = {**model.cache(np.zeros(2)), "shared_step": jnp.zeros((), jnp.int32)}
    with pytest.raises(ValueError, match="shared_step"):
        beam_search(model.step_fn, cache, jnp.zeros(2, jnp.int32), start_index=START, max_len=3, eos_id=EOS,
                    beam_size=2)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
@pytest.mark.parametrize("model", [chain_trigram(), random_trigram(6, 6, eos_id=EOS)], ids=["chain", "no_eos"])
def test_beam_size_one_equals_greedy(model: Trigram, alpha: float):
    prev2, first = np.array([0, 3, 5, 2]), jnp.asarray([4, 2, 7, 5])
    kw = dict(start_index=START, max_len=7, eos_id=EOS, pad_id=0)
    want_tokens, want_logprobs = greedy(model.step_fn, model.cache(prev2), first, **kw)
    tokens, scores = beam_search(model.step_fn, model.cache(prev2), first, beam_size=1, length_penalty=alpha, **kw)
    np.testing.assert_array_equal(tokens[:, 0], want_tokens)
    lengths = np.where((np.asarray(want_tokens) == EOS).any(1), (np.asarray(want_tokens) == EOS).argmax(1) + 1, 7)
    np.testing.assert_allclose(scores[:, 0], np.asarray(want_logprobs) / lp(lengths, alpha), rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
@pytest.mark.parametrize(
    "vocab,max_len,beams,suppress_eos",
    [(4, 3, 18, False), (3, 4, 12, False), (3, 4, 12, True)],
    ids=["V4T3", "V3T4", "V3T4-no-eos"],
)
def test_beam_search_equals_exhaustive_search(vocab: int, max_len: int, beams: int, suppress_eos: bool, alpha: float):
    """With 2N >= every candidate and N >= every alive prefix, beam search prunes nothing, so it must return
    exactly the exhaustive top N (EOS-ended and max_len-cut sequences competing)."""
    eos_id, pad_id = vocab - 1, 0
    model = random_trigram(10 + vocab, vocab, eos_id=eos_id if suppress_eos else None)
    prev2, first = np.array([0, 1, 2]) % vocab, np.array([2, 0, 1]) % vocab
    tokens, scores = beam_search(model.step_fn, model.cache(prev2), jnp.asarray(first), start_index=START,
                                 max_len=max_len, eos_id=eos_id, beam_size=beams, length_penalty=alpha,
                                 pad_id=pad_id)
    assert tokens.shape == (3, beams, max_len) and scores.shape == (3, beams)
    kinds = set()
    for b in range(3):
        want_tokens, want_scores = exhaustive_beams(model, prev2[b], first[b], max_len, eos_id, alpha, beams, pad_id)
        np.testing.assert_array_equal(tokens[b], want_tokens, err_msg=f"row {b}")
        np.testing.assert_allclose(scores[b], want_scores, rtol=1e-5, err_msg=f"row {b}")
        kinds |= {(row == eos_id).any() for row in want_tokens}
    assert kinds == ({False} if suppress_eos else {False, True})  # both ending kinds are exercised


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.5])
def test_pruned_beam_search_returns_consistent_hypotheses(alpha: float):
    """Past exhaustive sizes: every returned beam is a valid sequence whose score is recomputed exactly, the
    beams are distinct and sorted."""
    vocab, max_len, beams = 9, 8, 4
    model = random_trigram(20, vocab, scale=1.2)
    rng = np.random.default_rng(3)
    prev2, first = rng.integers(0, vocab, 5), rng.integers(0, vocab, 5)
    kw = dict(start_index=START, max_len=max_len, eos_id=EOS, pad_id=0)
    tokens, scores = beam_search(model.step_fn, model.cache(prev2), jnp.asarray(first), beam_size=beams,
                                 length_penalty=alpha, **kw)
    tokens, scores = np.asarray(tokens), np.asarray(scores)
    for b in range(5):
        assert len({tuple(r) for r in tokens[b]}) == beams
        assert (np.diff(scores[b]) <= 0).all()
        for row, score in zip(tokens[b], scores[b]):
            eos_at = np.flatnonzero(row == EOS)
            length = max_len if eos_at.size == 0 else eos_at[0] + 1
            assert (row[length:] == 0).all()
            want = sequence_logprob(model, prev2[b], first[b], row[:length]) / lp(length, alpha)
            np.testing.assert_allclose(score, want, rtol=1e-5)
    assert (tokens == EOS).any()


# ----------------------------------------------------------------------------------------------------- jit


def test_everything_jits_with_same_results():
    model = random_trigram(30, 7)
    prev2, first = np.array([0, 1, 2, 3]), jnp.asarray([3, 4, 5, 6])
    cache = model.cache(prev2)
    kw = dict(max_len=6, eos_id=EOS, pad_id=0)

    g = functools.partial(greedy, model.step_fn)
    jit_g = jax.jit(lambda c, f, s: g(c, f, start_index=s, **kw))  # start_index traced
    for a, b in zip(jit_g(cache, first, START), g(cache, first, start_index=START, **kw)):
        np.testing.assert_allclose(a, b, rtol=1e-6)

    s = functools.partial(sample, model.step_fn)
    static = ("start_index", "max_len", "eos_id", "temperature", "top_k", "top_p", "pad_id")
    skw = dict(start_index=START, temperature=0.8, top_k=4, top_p=0.9, **kw)
    for a, b in zip(jax.jit(s, static_argnames=static)(cache, first, jax.random.key(3), **skw),
                    s(cache, first, jax.random.key(3), **skw)):
        np.testing.assert_allclose(a, b, rtol=1e-6)

    bs = functools.partial(beam_search, model.step_fn)
    static = ("start_index", "max_len", "eos_id", "beam_size", "length_penalty", "pad_id")
    bkw = dict(start_index=START, beam_size=3, length_penalty=0.6, **kw)
    for a, b in zip(jax.jit(bs, static_argnames=static)(cache, first, **bkw), bs(cache, first, **bkw)):
        np.testing.assert_allclose(a, b, rtol=1e-6)

    filters = jax.jit(lambda x: (top_k_filter(x, 3), top_p_filter(x, 0.6)))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 7)), jnp.float32)
    for a, b in zip(filters(x), (top_k_filter(x, 3), top_p_filter(x, 0.6))):
        np.testing.assert_array_equal(a, b)


def test_exhaustive_premise():
    """The exhaustive test's beam sizes cover every alive prefix and every candidate of the last step."""
    for vocab, max_len, beams in [(4, 3, 18), (3, 4, 12)]:
        alive = (vocab - 1) ** (max_len - 1)
        assert beams >= alive and 2 * beams >= alive * vocab


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_search_exits_early(alpha: float):
    """Once N beams have finished and no alive beam can beat them, the loop stops, and a longer max_len, which
    only adds candidates that cannot win, changes nothing."""
    model = random_trigram(20, 9, scale=1.2)
    prev2, first = np.zeros(3), jnp.asarray([1, 2, 3])
    results = []
    for max_len in (40, 60):
        model.calls = 0
        tokens, scores = beam_search(model.step_fn, model.cache(prev2), first, start_index=START, max_len=max_len,
                                     eos_id=EOS, beam_size=3, length_penalty=alpha)
        assert model.calls < 15
        assert np.isfinite(scores).all() and (np.asarray(tokens) == EOS).any(-1).all()
        results.append((np.asarray(tokens)[..., :40], np.asarray(scores)))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)


def test_beam_search_continues_while_a_longer_beam_can_still_win():
    """alpha = 2 rewards length: EOS first (p = .6) finishes at once, but token 2 (p = .3) then repeats almost
    surely and, cut at max_len, scores log .3 / lp(5) > log .6 / lp(1) > log .3 / lp(2). The stopping bound
    must use the largest penalty still reachable (lp(5)), not the next one (lp(2))."""
    table = np.full((3, 3, 3), -20.0)
    table[:, 0] = np.log([0.1, 0.6, 0.3])
    table[:, 2, 2] = 0.0
    model = Trigram(table, np.zeros((POSITIONS, 3)))
    tokens, scores = beam_search(model.step_fn, model.cache(np.zeros(1)), jnp.zeros(1, jnp.int32),
                                 start_index=START, max_len=5, eos_id=EOS, beam_size=1, length_penalty=2.0)
    want_tokens, want_scores = exhaustive_beams(model, 0, 0, 5, EOS, 2.0, 1, 0)
    np.testing.assert_array_equal(want_tokens, [[2, 2, 2, 2, 2]])
    np.testing.assert_array_equal(tokens[0], want_tokens)
    np.testing.assert_allclose(scores[0], want_scores, rtol=1e-5)
