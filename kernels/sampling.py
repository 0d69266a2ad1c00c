"""Batch-invariant sampling on the GPU: Philox4x32-10 exponential race with top-k / top-p / min-p.

The token of a row is a pure function of (its probabilities, temperature, top_k, top_p, min_p,
seed, request id, step); the full contract is written at the top of csrc/sampling.cpp and holds
for all three implementations: `_C.sample` (C++, the CPU path), `sample` (this Triton kernel, the
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
Nothing here depends on other rows, on the batch size or on a reduction order: a sum is an
int64 sum (exact), every other reduction is a max/min/count.
"""
from __future__ import annotations

import torch

from .common import check_device, tl, triton

MASS_SCALE = 4294967296.0  # 2^32: W_i = floor(w_i * 2^32)
# 8 warps: with the default 4, triton 3.6 spills 8 B on sm_90 at BLOCK 1024 (a 128k vocabulary;
# bench/bench_compile.py), each thread then holding 8 fp64 weights and Philox words per tile
SAMPLE_WARPS = 8


# ---------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _bits(p):
    """float32 block -> int32 bit patterns (monotone for p >= 0); NaN, <= 0 and inf -> 0."""
    ok = (p > 0.0) & (p < float("inf"))
    return tl.where(ok, p.to(tl.int32, bitcast=True), 0)


@triton.jit
def _weight(b, pmax, temp):
    """w = (p / p_max) ** (1 / temp) in float64 from the bit patterns b (0 where b == 0)."""
    p = b.to(tl.float32, bitcast=True).to(tl.float64)
    r = tl.where(b > 0, p / pmax, 1.0)
    w = tl.where(temp == 1.0, r, tl.exp(tl.log(r) / temp))
    return tl.where(b > 0, w, 0.0)


@triton.jit
def _sample_kernel(probs_ptr, stride, V, seeds_ptr, reqs_ptr, steps_ptr, temp_ptr, topk_ptr,
                   topp_ptr, minp_ptr, out_ptr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = probs_ptr + row.to(tl.int64) * stride
    offs = tl.arange(0, BLOCK)

    # pass 1: the maximum bit pattern and the lowest index holding it (greedy)
    bmax = tl.full([], 0, tl.int32)
    amax = tl.full([], -1, tl.int64)
    for start in range(0, V, BLOCK):
        idx = start + offs
        b = _bits(tl.load(base + idx, mask=idx < V, other=0.0))
        blk = tl.max(b, 0)
        first = tl.min(tl.where(b == blk, idx, V), 0).to(tl.int64)
        amax = tl.where(blk > bmax, first, amax)
        bmax = tl.maximum(bmax, blk)

    temp = tl.load(temp_ptr + row)
    token = tl.where(bmax > 0, amax, -1)
    if (temp > 0.0) & (bmax > 0):
        top_k = tl.load(topk_ptr + row)
        top_p = tl.load(topp_ptr + row)
        min_p = tl.load(minp_ptr + row)
        pmax = bmax.to(tl.float32, bitcast=True).to(tl.float64)

        # top-k: t_k = the largest t with count(b >= t) >= k (bisection on bit patterns)
        t_k = tl.full([], 1, tl.int32)
        if (top_k > 0) & (top_k < V):
            lo = tl.full([], 1, tl.int32)
            hi = bmax
            for _ in range(32):
                mid = lo + (hi - lo + 1) // 2
                count = tl.full([], 0, tl.int64)
                for start in range(0, V, BLOCK):
                    idx = start + offs
                    b = _bits(tl.load(base + idx, mask=idx < V, other=0.0))
                    count += tl.sum((b >= mid).to(tl.int64), 0)
                active = lo < hi
                ok = count >= top_k
                lo = tl.where(active & ok, mid, lo)
                hi = tl.where(active & ~ok, mid - 1, hi)
            t_k = lo

        # top-p: t_p = the smallest t in [t_k, b_max] whose mass strictly above is < top_p * Z
        t_p = t_k
        if top_p < 1.0:
            Z = tl.full([], 0, tl.int64)
            for start in range(0, V, BLOCK):
                idx = start + offs
                b = _bits(tl.load(base + idx, mask=idx < V, other=0.0))
                W = (_weight(b, pmax, temp) * 4294967296.0).to(tl.int64)
                Z += tl.sum(tl.where(b >= t_k, W, 0), 0)
            thr = top_p * Z.to(tl.float64)
            lo = t_k
            hi = bmax
            for _ in range(32):
                mid = lo + (hi - lo) // 2
                S = tl.full([], 0, tl.int64)
                for start in range(0, V, BLOCK):
                    idx = start + offs
                    b = _bits(tl.load(base + idx, mask=idx < V, other=0.0))
                    W = (_weight(b, pmax, temp) * 4294967296.0).to(tl.int64)
                    S += tl.sum(tl.where(b > mid, W, 0), 0)
                active = lo < hi
                ok = S.to(tl.float64) < thr
                hi = tl.where(active & ok, mid, hi)
                lo = tl.where(active & ~ok, mid + 1, lo)
            t_p = lo

        # the race: argmax of x_i / E_i over kept entries, lowest index on an exact tie
        seed = tl.load(seeds_ptr + row)
        req = tl.load(reqs_ptr + row).to(tl.uint64, bitcast=True)
        req_lo = (req & 0xFFFFFFFF).to(tl.uint32)
        req_hi = (req >> 32).to(tl.uint32)
        step = tl.load(steps_ptr + row).to(tl.uint32)
        min_p_or_off = tl.where(min_p > 0.0, min_p, -1.0)  # w >= -1 always: min-p off
        best = tl.full([], -1.0, tl.float64)
        best_i = tl.full([], -1, tl.int64)
        for start in range(0, V, BLOCK):
            idx = start + offs
            b = _bits(tl.load(base + idx, mask=idx < V, other=0.0))
            w = _weight(b, pmax, temp)
            x = tl.where(temp == 1.0, b.to(tl.float32, bitcast=True).to(tl.float64), w)
            keep = (b >= t_p) & (b > 0) & (x > 0.0) & (w >= min_p_or_off)
            iu = idx.to(tl.uint32)
            zero = tl.zeros_like(iu)
            r0, r1, r2, r3 = tl.philox(seed, iu >> 2, zero + step, zero + req_lo, zero + req_hi)
            lane = iu & 3
            word = tl.where(lane == 0, r0, tl.where(lane == 1, r1, tl.where(lane == 2, r2, r3)))
            e = -tl.log((word.to(tl.float64) + 0.5) * (1.0 / 4294967296.0))
            key = tl.where(keep, x / e, -1.0)
            kb = tl.max(key, 0)
            first = tl.min(tl.where(key == kb, idx, V), 0).to(tl.int64)
            best_i = tl.where(kb > best, first, best_i)
            best = tl.maximum(best, kb)
        token = best_i
    tl.store(out_ptr + row, token)


def sample(probs: torch.Tensor, seeds: torch.Tensor, request_ids: torch.Tensor, steps: torch.Tensor,
           temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
           min_p: torch.Tensor) -> torch.Tensor:
    """Launch the sampler: one program per row. Returns tokens int64 [N] on probs.device.

    probs: float32 [N, V], last dim contiguous, any positive scale (only ratios matter);
    seeds, request_ids: int64 [N] (the bit patterns of unsigned 64-bit values);
    steps: int64 [N] in [0, 2^32); temperature: float64 [N] >= 0 (0 = greedy);
    top_k: int64 [N] >= 0 (0 = off); top_p: float64 [N] in (0, 1]; min_p: float64 [N] in [0, 1].
    Raises when a row has no positive finite entry (the one host sync, shared with reading tokens).
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
    bad = ((temperature < 0) | ~torch.isfinite(temperature) | (top_k < 0) | ~(top_p > 0)
           | (top_p > 1) | ~(min_p >= 0) | (min_p > 1) | (steps < 0) | (steps >= 2**32))
    out = torch.empty(n, dtype=torch.int64, device=probs.device)
    if n == 0:
        return out
    if bool(bad.any()):
        r = int(bad.nonzero()[0, 0])
        raise ValueError(f"sample: row {r} has invalid settings: temperature={temperature[r].item()}, "
                         f"top_k={top_k[r].item()}, top_p={top_p[r].item()}, min_p={min_p[r].item()}, "
                         f"step={steps[r].item()} (need T >= 0, top_k >= 0, 0 < top_p <= 1, "
                         "0 <= min_p <= 1, 0 <= step < 2^32)")
    block = min(1024, triton.next_power_of_2(v))
    _sample_kernel[(n,)](probs, probs.stride(0), v, seeds, request_ids, steps, temperature, top_k,
                         top_p, min_p, out, BLOCK=block, num_warps=SAMPLE_WARPS)
    if bool((out < 0).any()):
        r = int((out < 0).nonzero()[0, 0])
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
    full = lambda x: torch.full_like(i, x)  # noqa: E731
    out = philox4x32_10_ref([i >> 2, full(step), full(request & _M32), full(request >> 32)],
                            seed & _M32, seed >> 32)
    return torch.stack(out, 1).gather(1, (i & 3)[:, None])[:, 0]


def sample_ref(probs: torch.Tensor, seeds: list[int], request_ids: list[int], steps: list[int],
               temperature: list[float], top_k: list[int], top_p: list[float],
               min_p: list[float]) -> list[int]:
    """The contract, row by row, with sorting instead of bisection. probs: [N, V] (any float)."""
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
