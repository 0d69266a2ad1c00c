"""Fused lm_head log-prob: for selected hidden rows, log p(target), argmax and logsumexp.

Semantics per row n: logits = hidden[n] @ weight.T in fp32 ([V]);
    logsumexp[n] = log(sum(exp(logits))); logprob[n] = logits[targets[n]] - logsumexp[n];
    argmax[n] = first index of max(logits).
"""
from __future__ import annotations

import torch

from .common import (
    triton, tl,
    FLOAT_DTYPES, check_device, check_dtype, check_same_device, check_shape, dot_dtype, interpreting,
)


def logprob_ref(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain-torch log-prob, fp32 logits chunk by chunk over rows (at most [chunk, V] live).

    hidden: [N, H]; weight: [V, H] (lm_head); targets: int64 [N] in [0, V); chunk: rows per step.
    Returns (logprob fp32 [N], argmax int64 [N], logsumexp fp32 [N]).
    Memory note: a non-fp32 weight is upcast once (V * H * 4 bytes) for fp32 logits.
    """
    n = hidden.shape[0]
    if chunk <= 0:
        raise ValueError(f"logprob_ref: chunk must be positive, got {chunk}")
    w32 = weight.float()  # no copy when already fp32
    logprob = torch.empty(n, dtype=torch.float32, device=hidden.device)
    lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
    amax = torch.empty(n, dtype=torch.int64, device=hidden.device)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        logits = hidden[s:e].float() @ w32.T  # [n, V] fp32
        lse[s:e] = torch.logsumexp(logits, dim=-1)
        amax[s:e] = logits.argmax(dim=-1)
        logprob[s:e] = logits.gather(1, targets[s:e, None].long())[:, 0] - lse[s:e]
    return logprob, amax, lse


def _configs() -> list[triton.Config]:
    if interpreting():  # one small config: the interpreter is slow and tuning there means nothing
        return [triton.Config({"BLOCK_N": 16, "BLOCK_K": 16}, num_warps=4)]
    return [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st)
        # (64, 64) and (32, 128) with 4 warps are gone: they spill 8 B on sm_80 (bench/bench_compile.py)
        for bn, bk, w, st in [(64, 64, 8, 4), (128, 64, 8, 3), (16, 128, 4, 4), FP32_CONFIG]
    ]


# fp32 (the CPU-oracle dtype, rare on GPU) gets one config of its own: (64, 64) with 4 warps
# spills on sm_90 in fp32 (bench/bench_compile.py: 255 registers + 12 B spill stores)
FP32_CONFIG = (32, 64, 8, 2)


BLOCK_V = 128  # vocab columns per tile (fixed: it sets how the vocab is split over programs)


def _is_fp32_config(c: triton.Config) -> bool:
    return (c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps, c.num_stages) == FP32_CONFIG


def _prune(configs, named_args, **kwargs):
    # fp32: its own config alone (its tiles compile slowly and the bf16 ones spill in fp32)
    fp32 = named_args["h_ptr"].dtype == torch.float32
    return [c for c in configs if _is_fp32_config(c) == fp32] or configs[:1]


@triton.autotune(configs=_configs(), key=["n_bucket", "H", "V"], prune_configs_by={"early_config_prune": _prune})
@triton.jit(do_not_specialize=["N", "n_bucket"])  # one compile for every row count
def _logprob_kernel(
    h_ptr, w_ptr, tgt_ptr, m_ptr, s_ptr, best_ptr, arg_ptr, t_ptr,
    N, H, V, blocks_per_split, stride_h, stride_w, n_bucket,
    DOT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # program (row block, vocab split): streams vocab tiles [BLOCK_N, BLOCK_V] of fp32 logits and
    # keeps, per row, a running max m, sum of exp(logit - m), best logit + its index, target logit
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    tgt = tl.load(tgt_ptr + rows, mask=row_ok, other=-1)
    m = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    s = tl.zeros((BLOCK_N,), tl.float32)
    best = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    arg = tl.zeros((BLOCK_N,), tl.int64)
    t = tl.zeros((BLOCK_N,), tl.float32)
    v_begin = split * blocks_per_split * BLOCK_V
    v_end = tl.minimum(V, v_begin + blocks_per_split * BLOCK_V)
    ks = tl.arange(0, BLOCK_K)
    for v0 in range(v_begin, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_ok = cols < V
        cols64 = cols.to(tl.int64)
        acc = tl.zeros((BLOCK_N, BLOCK_V), tl.float32)
        for k0 in range(0, H, BLOCK_K):
            k_ok = (k0 + ks) < H
            h = tl.load(h_ptr + rows64[:, None] * stride_h + (k0 + ks)[None, :],
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0).to(DOT)
            w = tl.load(w_ptr + cols64[:, None] * stride_w + (k0 + ks)[None, :],
                        mask=col_ok[:, None] & k_ok[None, :], other=0.0).to(DOT)
            acc = tl.dot(h, tl.trans(w), acc, input_precision="ieee")  # [BLOCK_N, BLOCK_V] fp32
        logits = tl.where(col_ok[None, :], acc, float("-inf"))
        blk_max = tl.max(logits, axis=1)
        blk_arg = tl.argmax(logits, axis=1, tie_break_left=True).to(tl.int64) + v0
        take = blk_max > best  # strict: an earlier tile keeps ties (first maximum wins)
        arg = tl.where(take, blk_arg, arg)
        best = tl.where(take, blk_max, best)
        m_new = tl.maximum(m, blk_max)
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(logits - m_new[:, None]), axis=1)
        m = m_new
        t += tl.sum(tl.where(cols[None, :] == tgt[:, None], logits, 0.0), axis=1)
    out = split * N + rows
    tl.store(m_ptr + out, m, mask=row_ok)
    tl.store(s_ptr + out, s, mask=row_ok)
    tl.store(best_ptr + out, best, mask=row_ok)
    tl.store(arg_ptr + out, arg, mask=row_ok)
    tl.store(t_ptr + out, t, mask=row_ok)


def logprob(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, split_v: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton fused lm_head log-prob; same semantics and returns as logprob_ref.

    hidden [N, H] and weight [V, H] (same dtype, unit last stride); targets int64 [N] in [0, V).
    The vocab is split over `split_v` programs per row block (default: enough to fill the GPU);
    each split keeps its own running (max, sum-exp, argmax, target logit) and a tiny torch step
    merges them. Live memory is O(N * split_v), never [N, V].
    """
    check_device("logprob: hidden", hidden)
    check_dtype("logprob: hidden", hidden, FLOAT_DTYPES)
    if hidden.dim() != 2 or weight.dim() != 2:
        raise ValueError(f"logprob: hidden and weight must be 2-D, got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    n, h = hidden.shape
    check_same_device("logprob", hidden, weight=weight, targets=targets)
    v = weight.shape[0]
    check_shape("logprob: weight", weight, (v, h))
    check_dtype("logprob: weight", weight, (hidden.dtype,))
    check_shape("logprob: targets", targets, (n,))
    check_dtype("logprob: targets", targets, (torch.int64,))
    for name, t in (("hidden", hidden), ("weight", weight)):
        if t.stride(-1) != 1:
            raise ValueError(f"logprob: {name} needs unit last stride, got strides {t.stride()}")
    if n:  # one device sync per call; an out-of-range target would silently score 0
        lo, hi = int(targets.min()), int(targets.max())
        if lo < 0 or hi >= v:
            raise ValueError(f"logprob: targets must lie in [0, {v}), got range [{lo}, {hi}]")
    dev = hidden.device
    if n == 0:
        z = torch.empty(0, dtype=torch.float32, device=dev)
        return z, torch.empty(0, dtype=torch.int64, device=dev), z.clone()
    n_vblocks = triton.cdiv(v, BLOCK_V)
    if split_v is None:  # ~2 programs per SM on an H100 (132 SMs), rows counted in 64-row blocks
        split_v = max(1, min(n_vblocks, triton.cdiv(264, triton.cdiv(n, 64))))
    if split_v < 1:
        raise ValueError(f"logprob: split_v must be >= 1, got {split_v}")
    per_split = triton.cdiv(n_vblocks, split_v)
    split_v = triton.cdiv(n_vblocks, per_split)  # every split owns at least one vocab tile
    m, s, best, t = (torch.empty((split_v, n), dtype=torch.float32, device=dev) for _ in range(4))
    arg = torch.empty((split_v, n), dtype=torch.int64, device=dev)
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), split_v)  # noqa: E731
    _logprob_kernel[grid](
        hidden, weight, targets, m, s, best, arg, t,
        n, h, v, per_split, hidden.stride(0), weight.stride(0), min(triton.next_power_of_2(n), 4096),
        DOT=dot_dtype(hidden), BLOCK_V=BLOCK_V,
    )
    # merge splits: [split_v, N] -> [N]
    m_all = m.max(dim=0).values
    lse = m_all + torch.log((s * torch.exp(m - m_all)).sum(dim=0))
    which = best.argmax(dim=0, keepdim=True)  # first split holding the maximum
    argmax = arg.gather(0, which)[0]
    return t.sum(dim=0) - lse, argmax, lse
