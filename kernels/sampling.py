"""Batch-invariant sampling on the GPU: Philox4x32-10 exponential race with top-k / top-p / min-p.

The token of a row is a pure function of (its probabilities, temperature, top_k, top_p, min_p,
seed, request id, step); the full contract is written at the top of csrc/sampling.cpp and holds
for all three implementations: `_C.sample` (C++, the CPU path), `sample` (these Triton kernels, the
GPU path) and `sample_ref` (plain torch, sort-based: an independent reading of the contract).
In short, per row, in float64:
    b_i = float32 bits of p_i (0 for NaN / <= 0 / inf);   greedy (T == 0): lowest argmax of b
    w_i = (p_i / p_max) ** (1 / T);   W_i = floor(w_i * 2^32) (exact integer mass for top-p)
    top-k keeps b_i >= (k-th largest b, ties kept); top-p keeps i iff the W-mass strictly above
    b_i is < top_p * (W-mass of the top-k survivors); min-p keeps w_i >= min_p
    token = lowest argmax over kept i of x_i / E_i, x_i = p_i (T == 1) or w_i,
            E_i = -log((Philox(seed, request, step, i) + 0.5) / 2^32)
Philox word i of (seed, request, step): counter (i // 4, step, request_lo, request_hi), key
(seed_lo, seed_hi), lane i % 4 (Random123's philox4x32_10).

How: each row is split into chunks of CHUNK = 4,096 entries, one program per (row, chunk), so
batch 64 of a 128k vocabulary runs 2,048 programs (one per row before: 64 on 132 SMs). The
thresholds are found by radix selection on the 31-bit patterns: per level one kernel histograms
the chunk's entries under the prefix chosen so far (counts for top-k, masses W for top-p) into the
row's bins with integer atomics, and a one-program-per-row kernel picks the digit. Reads of a
row's probabilities per call (before: bisection, 32 passes per threshold, one program per row):
    greedy 1 (was 1); temperature / min-p 2 (was 2); top-k 6 (was 34); top-p 5 (was 35);
    top-k + top-p 9 (was 67), the top-p and race passes then skipping tiles without a top-k survivor.
The float64 weight w (exp + log) is computed once per entry (was once per pass: 34 times with
top-p): the first top-p level stores it (float64 [N, V], 8 bytes an entry; read by the two later
levels and the race). The race skips tiles with no entry at or above t_p. Every combination
across programs is an integer sum, a max, or a lowest-index argmax, so nothing depends on the
launch shape, the batch or the order in which programs run.
"""
from __future__ import annotations

import torch

from .common import check_device, tl, triton

MASS_SCALE = 4294967296.0  # 2^32: W_i = floor(w_i * 2^32)
BINS = 2048  # histogram bins per row
# radix levels, (shift, shift of the prefix, digit mask): top-p takes 11 + 10 + 10 bits (3 levels,
# each recomputing nothing: w is stored by the first); top-k 7 + 8 + 8 + 8 bits, because the work
# of tl.histogram grows with its bins (as we read its lowering: a ballot per bin bit, then a
# popcount for each bin a lane owns; not measured on a card) and counts need no weights.
# The digits chosen do not change the thresholds (both searches are exact); the C++ uses
# 11 + 10 + 10 for both.
LEVELS_P = ((20, 31, 2047), (10, 20, 1023), (0, 10, 1023))
LEVELS_K = ((24, 31, 255), (16, 24, 255), (8, 16, 255), (0, 8, 255))
BLOCK = 1024  # entries per tile
TILES = 4  # tiles per program: CHUNK = 4,096 entries, 32 programs per 128k row
# per-row state, int64 [N, STATE]: [KEY] max of (b_i << 32) | (2^32 - 1 - i); [TK] / [TP] the top-k /
# top-p radix prefix (the threshold once all levels ran); [KABOVE] / [MABOVE] the count / mass
# strictly above the prefix's range; [Z] the top-p mass of the top-k survivors
STATE = 8
_S = tl.constexpr(STATE)
_KEY, _TK, _KABOVE = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
_TP, _MABOVE, _Z = tl.constexpr(3), tl.constexpr(4), tl.constexpr(5)
SAMPLE_WARPS = 8  # bench/bench_compile.py: no spills on sm_90 under triton 3.6 / 3.7 with 8


# ---------------------------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------------------------
@triton.jit
def _bits(p):
    """float32 block -> int32 bit patterns (monotone for p >= 0); NaN, <= 0 and inf -> 0."""
    ok = (p > 0.0) & (p < float("inf"))
    return tl.where(ok, p.to(tl.int32, bitcast=True), 0)


@triton.jit
def _weight(b, pmax, temp):
    """w = (p / p_max) ** (1 / temp) in float64 from the bit patterns b (0 where b == 0).
    temp is one row's: a branch, not a select, so T == 1 computes no exp / log at all."""
    p = b.to(tl.float32, bitcast=True).to(tl.float64)
    r = tl.where(b > 0, p / pmax, 1.0)
    if temp != 1.0:
        r = tl.exp(tl.log(r) / temp)
    return tl.where(b > 0, r, 0.0)


@triton.jit
def _tile(probs_ptr, stride, V, row, chunk, t, BLOCK: tl.constexpr, TILES: tl.constexpr):
    """Indices [BLOCK] and bit patterns of tile t of (row, chunk); 0 beyond the vocabulary."""
    idx = (chunk * TILES + t) * BLOCK + tl.arange(0, BLOCK)
    p = tl.load(probs_ptr + row.to(tl.int64) * stride + idx, mask=idx < V, other=0.0)
    return idx, _bits(p)


@triton.jit
def _row(state_ptr, temp_ptr, topk_ptr, topp_ptr, row, V):
    """A row's settings, its max bit pattern and its thresholds t_k, t_p as far as found."""
    st = state_ptr + row * _S
    temp = tl.load(temp_ptr + row)
    top_k = tl.load(topk_ptr + row)
    top_p = tl.load(topp_ptr + row)
    bmax = (tl.load(st + _KEY) >> 32).to(tl.int32)
    topk_on = (top_k > 0) & (top_k < V)
    t_k = tl.where(topk_on, tl.maximum(tl.load(st + _TK).to(tl.int32), 1), 1)
    t_p = tl.where(top_p < 1.0, tl.maximum(tl.load(st + _TP).to(tl.int32), t_k), t_k)
    return st, temp, top_k, top_p, bmax, topk_on, t_k, t_p


@triton.jit
def _check_kernel(temp_ptr, topk_ptr, topp_ptr, minp_ptr, steps_ptr, N, V, flags_ptr,
                  BLOCK_N: tl.constexpr):
    """Settings check and what the batch needs, into flags int64 [5] (initialised to N):
    [0] the first row with invalid settings (N: none); [1] [2] [3] N minus the rows that do not
    sample / take top-k / take top-p (so a launch that never runs, as when bench/compile_launches.py
    records it, leaves every phase on). One launch and one small read instead of ~20 torch ops."""
    r = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = r < N
    temp = tl.load(temp_ptr + r, mask=m, other=0.0)
    top_k = tl.load(topk_ptr + r, mask=m, other=0)
    top_p = tl.load(topp_ptr + r, mask=m, other=1.0)
    min_p = tl.load(minp_ptr + r, mask=m, other=0.0)
    step = tl.load(steps_ptr + r, mask=m, other=0)
    ok = ((temp >= 0.0) & (temp < float("inf")) & (top_k >= 0) & (top_p > 0.0) & (top_p <= 1.0)
          & (min_p >= 0.0) & (min_p <= 1.0) & (step >= 0) & (step < 4294967296))
    sampled = temp > 0.0
    tl.atomic_min(flags_ptr, tl.min(tl.where(m & ~ok, r, N), 0))
    tl.atomic_add(flags_ptr + 1, -tl.sum((m & ~sampled).to(tl.int64), 0))
    tl.atomic_add(flags_ptr + 2, -tl.sum((m & ~(sampled & (top_k > 0) & (top_k < V))).to(tl.int64), 0))
    tl.atomic_add(flags_ptr + 3, -tl.sum((m & ~(sampled & (top_p < 1.0))).to(tl.int64), 0))


@triton.jit
def _max_kernel(probs_ptr, stride, V, state_ptr, BLOCK: tl.constexpr, TILES: tl.constexpr):
    """state[row, KEY] = max over the row of (b_i << 32) | (2^32 - 1 - i): b_max and its lowest index."""
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    best = tl.full([], 0, tl.int64)
    for t in range(TILES):
        idx, b = _tile(probs_ptr, stride, V, row, chunk, t, BLOCK, TILES)
        key = (b.to(tl.int64) << 32) | (4294967295 - idx.to(tl.int64))
        best = tl.maximum(best, tl.max(tl.where(idx < V, key, 0), 0))
    tl.atomic_max(state_ptr + row * _S + _KEY, best)


# the radix level (shift, prev, dmask) is a run-time argument, never specialised: one compiled
# kernel serves every level (19 sampler variants to compile before, 9 now)
@triton.jit(do_not_specialize=["shift", "prev", "dmask"])
def _count_kernel(probs_ptr, stride, V, temp_ptr, topk_ptr, topp_ptr, state_ptr, hist_ptr,
                  shift, prev, dmask, NB: tl.constexpr, BLOCK: tl.constexpr, TILES: tl.constexpr):
    """Top-k level: counts of the digit (b >> SHIFT) & DMASK over entries under the prefix."""
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    st, temp, _, _, bmax, topk_on, _, _ = _row(state_ptr, temp_ptr, topk_ptr, topp_ptr, row, V)
    if (temp > 0.0) & topk_on & (bmax > 0):
        prefix = tl.load(st + _TK).to(tl.int32)
        h = tl.zeros([NB], tl.int32)
        for t in range(TILES):
            idx, b = _tile(probs_ptr, stride, V, row, chunk, t, BLOCK, TILES)
            ok = (idx < V) & ((b >> prev) == (prefix >> prev))
            if tl.max(ok.to(tl.int32), 0) > 0:  # past level 0 most tiles hold no entry of the prefix
                h += tl.histogram((b >> shift) & dmask, NB, mask=ok)
        bins = tl.arange(0, NB)
        tl.atomic_add(hist_ptr + row * 2048 + bins, h.to(tl.int64), mask=h > 0)


@triton.jit(do_not_specialize=["shift", "prev", "dmask"])
def _mass_kernel(probs_ptr, stride, V, temp_ptr, topk_ptr, topp_ptr, state_ptr, hist_ptr, w_ptr,
                 shift, prev, dmask, FIRST: tl.constexpr, BLOCK: tl.constexpr, TILES: tl.constexpr):
    """Top-p level: masses W of the digit over entries under the prefix. Level 0 computes w
    (float64 exp/log, once per entry), stores it in w [N, V] for the later levels and the race,
    and sums Z."""
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    st, temp, _, top_p, bmax, _, t_k, _ = _row(state_ptr, temp_ptr, topk_ptr, topp_ptr, row, V)
    if (temp > 0.0) & (top_p < 1.0) & (bmax > 0):
        pmax = bmax.to(tl.float32, bitcast=True).to(tl.float64)
        prefix = tl.load(st + _TP).to(tl.int32)
        z = tl.full([], 0, tl.int64)
        for t in range(TILES):
            idx, b = _tile(probs_ptr, stride, V, row, chunk, t, BLOCK, TILES)
            # only the top-k survivors' masses matter (see csrc/sampling.cpp), and past level 0 only
            # entries under the prefix: other tiles are skipped. Level 0 (prefix test always true)
            # stores w for every tile holding a survivor, which is where the race reads it.
            ok = (b >= t_k) & ((b >> prev) == (prefix >> prev))
            if tl.max(ok.to(tl.int32), 0) > 0:
                w_at = w_ptr + row.to(tl.int64) * V + idx
                if FIRST:
                    w = _weight(b, pmax, temp)
                    tl.store(w_at, w, mask=idx < V)
                else:
                    w = tl.load(w_at, mask=idx < V, other=0.0)
                W = tl.where(ok, (w * 4294967296.0).to(tl.int64), 0)
                tl.atomic_add(hist_ptr + row * 2048 + ((b >> shift) & dmask), W, mask=W > 0)
                if FIRST:
                    z += tl.sum(W, 0)
        if FIRST:
            tl.atomic_add(st + _Z, z)


@triton.jit(do_not_specialize=["shift"])
def _select_kernel(V, temp_ptr, topk_ptr, topp_ptr, state_ptr, hist_ptr, shift,
                   MASS: tl.constexpr, NB: tl.constexpr):
    """One program per row: the digit holding the threshold, from the row's histogram (then cleared).
    top-k (MASS False): the highest digit d with above + count(digits >= d) >= k.
    top-p (MASS True): the lowest digit d with above + mass(digits > d) < top_p * Z."""
    row = tl.program_id(0)
    st, temp, top_k, top_p, bmax, topk_on, _, _ = _row(state_ptr, temp_ptr, topk_ptr, topp_ptr, row, V)
    on = (temp > 0.0) & (bmax > 0) & ((top_p < 1.0) if MASS else topk_on)
    if on:
        bins = tl.arange(0, NB)
        h = tl.load(hist_ptr + row * 2048 + bins)
        incl = tl.cumsum(h, 0)
        total = tl.sum(h, 0)
        if MASS:
            above = tl.load(st + _MABOVE)
            s = above + total - incl  # mass strictly above the top of each digit's range
            thr = top_p * tl.load(st + _Z).to(tl.float64)
            d = tl.sum((s.to(tl.float64) >= thr).to(tl.int32), 0)
            tl.store(st + _MABOVE, tl.sum(tl.where(bins == d, s, 0), 0))
            tl.store(st + _TP, tl.load(st + _TP) | (d.to(tl.int64) << shift.to(tl.int64)))
        else:
            above = tl.load(st + _KABOVE)
            ge = above + total - incl + h  # count(b >= the bottom of each digit's range)
            d = tl.sum((ge >= top_k).to(tl.int32), 0) - 1
            tl.store(st + _KABOVE, above + total - tl.sum(tl.where(bins == d, incl, 0), 0))
            tl.store(st + _TK, tl.load(st + _TK) | (d.to(tl.int64) << shift.to(tl.int64)))
        tl.store(hist_ptr + row * 2048 + bins, tl.zeros([NB], tl.int64))


@triton.jit
def _philox_words(seed, step, req_lo, req_hi, start, BLOCK: tl.constexpr):
    """Philox words of entries start .. start + BLOCK - 1 (start % 4 == 0): one Philox block per
    four entries (block j gives entries 4j .. 4j + 3), interleaved back into entry order."""
    blk = (start // 4 + tl.arange(0, BLOCK // 4)).to(tl.uint32)
    zero = tl.zeros_like(blk)
    r0, r1, r2, r3 = tl.philox(seed, blk, zero + step, zero + req_lo, zero + req_hi)
    # join(join(r0, r2), join(r1, r3))[j, c, a] = r_(2c + a): row-major order is 4j + 2c + a
    return tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), [BLOCK])


@triton.jit
def _sample_kernel(probs_ptr, stride, V, seeds_ptr, reqs_ptr, steps_ptr, temp_ptr, topk_ptr,
                   topp_ptr, minp_ptr, state_ptr, w_ptr, out_ptr, out_idx_ptr, C,
                   BLOCK: tl.constexpr, TILES: tl.constexpr):
    """The race over one chunk: out[row, chunk] = its best key x_i / E_i and lowest index holding it.
    A tile with no entry at or above t_p costs one load and a compare (top-k / top-p rows keep few)."""
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    _, temp, _, top_p, bmax, _, _, t_p = _row(state_ptr, temp_ptr, topk_ptr, topp_ptr, row, V)
    best = tl.full([], -1.0, tl.float64)
    best_i = tl.full([], -1, tl.int64)
    if (temp > 0.0) & (bmax > 0):
        pmax = bmax.to(tl.float32, bitcast=True).to(tl.float64)
        min_p = tl.load(minp_ptr + row)
        seed = tl.load(seeds_ptr + row)
        req = tl.load(reqs_ptr + row).to(tl.uint64, bitcast=True)
        req_lo = (req & 0xFFFFFFFF).to(tl.uint32)
        req_hi = (req >> 32).to(tl.uint32)
        step = tl.load(steps_ptr + row).to(tl.uint32)
        min_p_or_off = tl.where(min_p > 0.0, min_p, -1.0)  # w >= -1 always: min-p off
        for t in range(TILES):
            idx, b = _tile(probs_ptr, stride, V, row, chunk, t, BLOCK, TILES)
            if tl.max(b, 0) >= t_p:
                if top_p < 1.0:  # the top-p levels stored w
                    w = tl.load(w_ptr + row.to(tl.int64) * V + idx, mask=idx < V, other=0.0)
                else:
                    w = _weight(b, pmax, temp)
                x = tl.where(temp == 1.0, b.to(tl.float32, bitcast=True).to(tl.float64), w)
                keep = (b >= t_p) & (b > 0) & (x > 0.0) & (w >= min_p_or_off)
                word = _philox_words(seed, step, req_lo, req_hi, (chunk * TILES + t) * BLOCK, BLOCK)
                e = -tl.log((word.to(tl.float64) + 0.5) * (1.0 / 4294967296.0))
                key = tl.where(keep, x / e, -1.0)
                kb = tl.max(key, 0)
                first = tl.min(tl.where(key == kb, idx, V), 0).to(tl.int64)
                best_i = tl.where(kb > best, first, best_i)
                best = tl.maximum(best, kb)
    tl.store(out_ptr + row * C + chunk, best)
    tl.store(out_idx_ptr + row * C + chunk, best_i)


@triton.jit
def _finish_kernel(temp_ptr, state_ptr, keys_ptr, idx_ptr, out_ptr, flags_ptr, C, N, CP2: tl.constexpr):
    """One program per row: greedy -> the lowest argmax; else the best chunk (lowest index on a tie).
    flags[4] = the first row with no positive finite entry (N: none)."""
    row = tl.program_id(0)
    key = tl.load(state_ptr + row * _S + _KEY)
    bmax = key >> 32
    token = 4294967295 - (key & 4294967295)
    if tl.load(temp_ptr + row) > 0.0:
        c = tl.arange(0, CP2)
        ks = tl.load(keys_ptr + row * C + c, mask=c < C, other=-2.0)
        ix = tl.load(idx_ptr + row * C + c, mask=c < C, other=0)
        kb = tl.max(ks, 0)
        token = tl.min(tl.where(ks == kb, ix, 2147483647), 0).to(tl.int64)
    tl.store(out_ptr + row, tl.where(bmax > 0, token, -1))
    tl.atomic_min(flags_ptr + 4, tl.where(bmax > 0, N, row))


def sample(probs: torch.Tensor, seeds: torch.Tensor, request_ids: torch.Tensor, steps: torch.Tensor,
           temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
           min_p: torch.Tensor) -> torch.Tensor:
    """Launch the sampler. Returns tokens int64 [N] on probs.device.

    probs: float32 [N, V], last dim contiguous, any positive scale (only ratios matter);
    seeds, request_ids: int64 [N] (the bit patterns of unsigned 64-bit values);
    steps: int64 [N] in [0, 2^32); temperature: float64 [N] >= 0 (0 = greedy);
    top_k: int64 [N] >= 0 (0 = off); top_p: float64 [N] in (0, 1]; min_p: float64 [N] in [0, 1].
    Raises when a row has no positive finite entry. Two host syncs, each reading a few int64: the
    settings check (which also says which phases any row needs) and the rows' validity.
    """
    if probs.ndim != 2:
        raise ValueError(f"sample: probs must be [N, V], got shape {tuple(probs.shape)}")
    n, v = probs.shape
    check_device("sample: probs", probs)
    if probs.dtype != torch.float32:
        raise ValueError(f"sample: probs must be float32, got {probs.dtype}")
    if probs.stride(1) != 1:
        raise ValueError(f"sample: probs must have a contiguous last dim, got strides {probs.stride()}")
    if v >= 2**31:
        raise ValueError(f"sample: vocab {v} must be < 2^31")
    want = {"seeds": (seeds, torch.int64), "request_ids": (request_ids, torch.int64),
            "steps": (steps, torch.int64), "temperature": (temperature, torch.float64),
            "top_k": (top_k, torch.int64), "top_p": (top_p, torch.float64),
            "min_p": (min_p, torch.float64)}
    for name, (t, dtype) in want.items():
        if tuple(t.shape) != (n,) or t.dtype != dtype or t.device != probs.device:
            raise ValueError(f"sample: {name} must be {dtype} [{n}] on {probs.device}, got "
                             f"{t.dtype} {tuple(t.shape)} on {t.device}")
    out = torch.empty(n, dtype=torch.int64, device=probs.device)
    if n == 0:
        return out
    flags = torch.full((5,), n, dtype=torch.int64, device=probs.device)
    _check_kernel[(triton.cdiv(n, 256),)](temperature, top_k, top_p, min_p, steps, n, v, flags,
                                          BLOCK_N=256, num_warps=4)
    first_bad, any_sampled, any_topk, any_topp = flags[:4].tolist()
    if first_bad < n:
        r = first_bad
        raise ValueError(f"sample: row {r} has invalid settings: temperature={temperature[r].item()}, "
                         f"top_k={top_k[r].item()}, top_p={top_p[r].item()}, min_p={min_p[r].item()}, "
                         f"step={steps[r].item()} (need T >= 0, top_k >= 0, 0 < top_p <= 1, "
                         "0 <= min_p <= 1, 0 <= step < 2^32)")
    block = max(16, min(BLOCK, triton.next_power_of_2(v)))  # >= 16: four entries per Philox block
    tiles = min(TILES, triton.cdiv(v, block))
    chunks = triton.cdiv(v, block * tiles)
    grid = (n, chunks)
    dev, warps = probs.device, SAMPLE_WARPS
    state = torch.zeros(n, STATE, dtype=torch.int64, device=dev)
    rows = (probs, probs.stride(0), v)
    _max_kernel[grid](*rows, state, BLOCK=block, TILES=tiles, num_warps=warps)
    settings = (temperature, top_k, top_p, state)
    if any_topk or any_topp:
        hist = torch.zeros(n, BINS, dtype=torch.int64, device=dev)
    for shift, prev, dmask in LEVELS_K if any_topk else ():
        _count_kernel[grid](*rows, *settings, hist, shift, prev, dmask, NB=dmask + 1, BLOCK=block,
                            TILES=tiles, num_warps=warps)
        _select_kernel[(n,)](v, *settings, hist, shift, MASS=False, NB=dmask + 1, num_warps=warps)
    # w [N, V] float64, written by the first top-p level for its rows (not read for other rows)
    w = torch.empty(n if any_topp else 1, v if any_topp else 1, dtype=torch.float64, device=dev)
    for level, (shift, prev, dmask) in enumerate(LEVELS_P if any_topp else ()):
        _mass_kernel[grid](*rows, *settings, hist, w, shift, prev, dmask, FIRST=level == 0, BLOCK=block,
                           TILES=tiles, num_warps=warps)
        _select_kernel[(n,)](v, *settings, hist, shift, MASS=True, NB=BINS, num_warps=warps)
    keys = torch.empty(n, chunks, dtype=torch.float64, device=dev)
    idx = torch.empty(n, chunks, dtype=torch.int64, device=dev)
    if any_sampled:
        _sample_kernel[grid](*rows, seeds, request_ids, steps, temperature, top_k, top_p, min_p, state,
                             w, keys, idx, chunks, BLOCK=block, TILES=tiles, num_warps=warps)
    _finish_kernel[(n,)](temperature, state, keys, idx, out, flags, chunks, n,
                         CP2=triton.next_power_of_2(chunks), num_warps=1)
    r = int(flags[4])
    if r < n:
        raise ValueError(f"sample: probs row {r} has no positive finite entry")
    return out


# ---------------------------------------------------------------------------------------------
# Plain-torch reference (sort-based; shares no code with the kernel or the C++)
# ---------------------------------------------------------------------------------------------
_M32 = 0xFFFFFFFF


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    prod = b * a  # int64 wraps modulo 2^64: the low 64 bits of the exact product are kept
    return (prod >> 32) & _M32, prod & _M32


def philox4x32_10_ref(c: list[torch.Tensor], k0: int, k1: int) -> list[torch.Tensor]:
    """Random123 philox4x32_10 on int64 tensors holding uint32 values; c: 4 counter words."""
    c0, c1, c2, c3 = c
    for _ in range(10):
        hi0, lo0 = _mulhilo(0xD2511F53, c0)
        hi1, lo1 = _mulhilo(0xCD9E8D57, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + 0x9E3779B9) & _M32, (k1 + 0xBB67AE85) & _M32
    return [c0, c1, c2, c3]


def philox_words_ref(seed: int, request: int, step: int, n: int) -> torch.Tensor:
    """Words 0..n-1 of (seed, request, step) as int64 [n] holding uint32 values."""
    i = torch.arange(n, dtype=torch.int64)
    full = lambda x: torch.full_like(i, x)
    out = philox4x32_10_ref([i >> 2, full(step), full(request & _M32), full(request >> 32)],
                            seed & _M32, seed >> 32)
    return torch.stack(out, 1).gather(1, (i & 3)[:, None])[:, 0]


def sample_ref(probs: torch.Tensor, seeds: list[int], request_ids: list[int], steps: list[int],
               temperature: list[float], top_k: list[int], top_p: list[float],
               min_p: list[float]) -> list[int]:
    """The contract, row by row, with sorting instead of radix selection. probs: [N, V] (any float)."""
    out = []
    for r in range(probs.shape[0]):
        p = probs[r].detach().float().cpu()
        ok = (p > 0) & torch.isfinite(p)
        b = torch.where(ok, p.view(torch.int32), 0).long()  # [V] bit patterns
        if int(b.max()) == 0:
            raise ValueError(f"sample_ref: probs row {r} has no positive finite entry")
        t = float(temperature[r])
        if t == 0.0:
            out.append(int(b.argmax()))  # torch.argmax: the first maximal index
            continue
        p64 = torch.where(ok, p, 0.0).double()
        ratio = torch.where(ok, p64 / p64.max(), 1.0)
        w = torch.where(ok, ratio if t == 1.0 else torch.exp(torch.log(ratio) / t), 0.0)
        keep = b > 0
        k = int(top_k[r])
        if 0 < k < b.numel():
            keep &= b >= torch.topk(b, k).values[-1]
        if float(top_p[r]) < 1.0:
            W = torch.floor(w * MASS_SCALE).long()
            Z = int(W[keep].sum())
            vals, inverse = torch.unique(b[keep], sorted=True, return_inverse=True)  # ascending
            mass = torch.zeros(vals.numel(), dtype=torch.int64).index_add_(0, inverse, W[keep])
            above = mass.flip(0).cumsum(0).flip(0) - mass  # mass strictly above each distinct value
            s_above = torch.zeros_like(b)
            s_above[keep] = above[inverse]
            keep &= s_above.double() < float(top_p[r]) * float(Z)
        if float(min_p[r]) > 0.0:
            keep &= w >= float(min_p[r])
        x = p64 if t == 1.0 else w
        keep &= x > 0
        words = philox_words_ref(int(seeds[r]), int(request_ids[r]), int(steps[r]), b.numel())
        e = -torch.log((words.double() + 0.5) / MASS_SCALE)
        key = torch.where(keep, x / e, -1.0)
        out.append(int(key.argmax()))
    return out
