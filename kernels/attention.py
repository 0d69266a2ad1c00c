"""Causal varlen attention (prefill) and paged decode attention.

Prefill semantics (flash_attn_varlen_func, causal): sequence b owns query rows
cu_seqlens_q[b]:cu_seqlens_q[b+1] (Lq of them) and key rows cu_seqlens_k[b]:cu_seqlens_k[b+1]
(Lk >= Lq); query i sees keys j <= i + Lk - Lq (the causal mask is aligned bottom-right).
GQA: query head h reads key/value head h // (Hq // Hk).
"""
from __future__ import annotations

import functools
from collections import defaultdict

import torch
import torch.nn.functional as F

from .common import (
    triton, tl,
    FLOAT_DTYPES, check_device, check_dtype, check_same_device, check_shape, dot_dtype, interpreting, round_to,
)


def _expand_kv(t: torch.Tensor, groups: int) -> torch.Tensor:
    """[..., Hk, L, D] -> [..., Hk * groups, L, D] (GQA: each kv head serves `groups` q heads)."""
    return t if groups == 1 else t.repeat_interleave(groups, dim=-3)


def varlen_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    scale: float,
) -> torch.Tensor:
    """Plain-torch causal varlen attention: SDPA in fp32 over groups of equal-length sequences.

    q: [Tq, Hq, D]; k, v: [Tk, Hk, D] (Hq a multiple of Hk); cu_seqlens_q/k: int32 [B+1];
    max_seqlen_q/k: accepted for signature parity with the kernels (unused here); scale: softmax
    scale (usually D ** -0.5). Returns [Tq, Hq, D] in q.dtype.
    """
    tq, hq, d = q.shape
    hk = k.shape[1]
    if hq % hk:
        raise ValueError(f"varlen_attention_ref: Hq={hq} is not a multiple of Hk={hk}")
    groups = hq // hk
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    by_len: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for b in range(len(cq) - 1):
        lq, lk = cq[b + 1] - cq[b], ck[b + 1] - ck[b]
        if lk < lq:
            raise ValueError(f"varlen_attention_ref: sequence {b} has {lq} queries but only {lk} keys")
        if lq > 0:
            by_len[(lq, lk)].append((cq[b], ck[b]))
    out = torch.empty_like(q)
    for (lq, lk), starts in by_len.items():
        sq = torch.tensor([s for s, _ in starts], device=q.device)
        sk = torch.tensor([s for _, s in starts], device=q.device)
        iq = sq[:, None] + torch.arange(lq, device=q.device)  # [G, Lq] row indices
        ik = sk[:, None] + torch.arange(lk, device=q.device)  # [G, Lk]
        qg = q[iq].float().transpose(1, 2)  # [G, Hq, Lq, D]
        kg = _expand_kv(k[ik].float().transpose(1, 2), groups)  # [G, Hq, Lk, D]
        vg = _expand_kv(v[ik].float().transpose(1, 2), groups)
        if lq == lk:
            og = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True, scale=scale)
        else:  # bottom-right aligned causal mask
            i = torch.arange(lq, device=q.device)[:, None]
            j = torch.arange(lk, device=q.device)[None, :]
            og = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=j <= i + (lk - lq), scale=scale)
        out[iq] = og.transpose(1, 2).to(q.dtype)  # [G, Lq, Hq, D]
    return out


def paged_decode_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Plain-torch paged decode attention: one query per row over all its cached keys, fp32.

    q: [B, Hq, D]; k_cache, v_cache: [num_blocks, block_size, Hk, D]; block_tables: int32
    [B, max_blocks] (token t of row b lives in block block_tables[b, t // block_size] at slot
    t % block_size; entries past the row's length are ignored); seq_lens: int32 [B] (>= 1).
    Returns [B, Hq, D] in q.dtype.
    """
    bsz, hq, d = q.shape
    block_size, hk = k_cache.shape[1], k_cache.shape[2]
    if hq % hk:
        raise ValueError(f"paged_decode_attention_ref: Hq={hq} is not a multiple of Hk={hk}")
    max_len = int(seq_lens.max()) if bsz else 0
    pos = torch.arange(max_len, device=q.device)  # [L]
    valid = pos[None, :] < seq_lens.long()[:, None]  # [B, L]
    blocks = block_tables.long()[:, pos // block_size]  # [B, L]
    flat = torch.where(valid, blocks * block_size + pos % block_size, 0).reshape(-1)  # [B*L]
    keep = valid[:, :, None, None]  # past-the-end slots may hold garbage (even NaN): zero them
    # one index_select per cache on its [blocks*block_size, Hk, D] view, no kv-head copies:
    # SDPA's enable_gqa maps query head h to kv head h // (Hq/Hk) (1.6-2x faster decode on CPU)
    kg = torch.where(keep, k_cache.reshape(-1, hk, d).index_select(0, flat).view(bsz, max_len, hk, d).float(), 0.0)
    vg = torch.where(keep, v_cache.reshape(-1, hk, d).index_select(0, flat).view(bsz, max_len, hk, d).float(), 0.0)
    qg = q.float()[:, :, None, :]  # [B, Hq, 1, D]
    og = F.scaled_dot_product_attention(qg, kg.transpose(1, 2), vg.transpose(1, 2),
                                        attn_mask=valid[:, None, None, :], scale=scale,
                                        enable_gqa=hq != hk)
    return og[:, :, 0, :].to(q.dtype)


LOG2E = 1.4426950408889634


# ---------------------------------------------------------------- varlen causal prefill (FA-2)


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, cu_q_ptr, cu_k_ptr, qk_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr, DOT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # program (query tile, sequence, query head): FlashAttention-2 forward. Scores are scaled by
    # scale * log2(e) so the online softmax uses exp2; running max m, running sum l, output acc.
    pid_m = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    q_start = tl.load(cu_q_ptr + seq)
    lq = tl.load(cu_q_ptr + seq + 1) - q_start
    k_start = tl.load(cu_k_ptr + seq)
    lk = tl.load(cu_k_ptr + seq + 1) - k_start
    if pid_m * BLOCK_M < lq:
        kv_head = head // GROUPS
        diag = lk - lq  # query i sees keys j <= i + diag (bottom-right aligned)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        m_ok = offs_m < lq
        d_ok = offs_d < HEAD_DIM
        q_rows = (q_start + offs_m).to(tl.int64)
        q = tl.load(q_ptr + q_rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                    mask=m_ok[:, None] & d_ok[None, :], other=0.0).to(DOT)
        m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
        hi = tl.minimum(lk, (pid_m + 1) * BLOCK_M + diag)  # keys past this are masked for every row
        for n0 in range(0, hi, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            n_ok = offs_n < lk
            k_rows = (k_start + offs_n).to(tl.int64)
            kv_mask = n_ok[:, None] & d_ok[None, :]
            k = tl.load(k_ptr + k_rows[:, None] * stride_kt + kv_head * stride_kh + offs_d[None, :],
                        mask=kv_mask, other=0.0).to(DOT)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N]
            visible = (offs_n[None, :] <= offs_m[:, None] + diag) & n_ok[None, :]
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))  # finite: key 0 is visible to every row
            p = tl.exp2(s - m_new[:, None])
            alpha = tl.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(v_ptr + k_rows[:, None] * stride_vt + kv_head * stride_vh + offs_d[None, :],
                        mask=kv_mask, other=0.0).to(DOT)
            acc = tl.dot(p.to(DOT), v, acc * alpha[:, None], input_precision=PRECISION)
            m_i = m_new
        out = acc / l_i[:, None]
        tl.store(o_ptr + q_rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
                 round_to(out, o_ptr.dtype.element_ty).to(o_ptr.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])


@functools.cache
def _flash_attn_func():
    """flash_attn_varlen_func when flash-attn is installed, else None (an optional extra).
    Looked up once per process: a failed import is not retried on every prefill call."""
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


def _check_qkv(who: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_device(f"{who}: {name}", t)
        check_dtype(f"{who}: {name}", t, (q.dtype,) if name != "q" else FLOAT_DTYPES)
        if t.stride(-1) != 1:
            raise ValueError(f"{who}: {name} needs unit last stride, got shape {tuple(t.shape)} strides {t.stride()}")
    check_same_device(who, q, k=k, v=v)
    if q.shape[-1] != k.shape[-1] or k.shape[-1] != v.shape[-1]:
        raise ValueError(f"{who}: head dims differ: q {q.shape[-1]}, k {k.shape[-1]}, v {v.shape[-1]}")
    if q.shape[-2] % k.shape[-2] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{who}: Hq={q.shape[-2]} must be a multiple of Hk={k.shape[-2]} (v has {v.shape[-2]})")
    if q.shape[-1] > 256:
        raise ValueError(f"{who}: head dim {q.shape[-1]} above 256 is not supported")


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    scale: float,
    impl: str = "auto",
) -> torch.Tensor:
    """Causal varlen attention; same arguments and semantics as varlen_attention_ref.

    impl: "triton" (the kernel above), "flash" (flash_attn_varlen_func; needs flash-attn and
    CUDA), or "auto" (flash when it imports and q is on CUDA, else triton). cu_seqlens are not
    read back to the host (no sync): the caller guarantees Lk >= Lq and max_seqlen_q bounds Lq.
    """
    who = "varlen_attention"
    _check_qkv(who, q, k, v)
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3 or k.shape != v.shape:
        raise ValueError(f"{who}: want q [Tq, Hq, D], k and v [Tk, Hk, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    for name, c in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        check_dtype(f"{who}: {name}", c, (torch.int32,))
        if c.dim() != 1 or c.device != q.device:
            raise ValueError(f"{who}: {name} must be 1-D int32 on {q.device}, got {tuple(c.shape)} on {c.device}")
    if cu_seqlens_q.shape != cu_seqlens_k.shape:
        raise ValueError(f"{who}: cu_seqlens_q has {cu_seqlens_q.shape[0]} entries, cu_seqlens_k {cu_seqlens_k.shape[0]}")
    if impl not in ("auto", "triton", "flash"):
        raise ValueError(f"{who}: impl must be auto, triton or flash, got {impl!r}")
    flash = _flash_attn_func() if q.is_cuda and impl != "triton" else None
    if impl == "flash" and flash is None:
        raise ValueError(f"{who}: impl='flash' needs flash-attn installed and CUDA tensors (q on {q.device})")
    if flash is not None:
        return flash(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                     softmax_scale=scale, causal=True)
    out = torch.empty_like(q)
    n_seq = cu_seqlens_q.shape[0] - 1
    if n_seq <= 0 or max_seqlen_q <= 0 or q.shape[0] == 0:
        return out
    d = q.shape[-1]
    block_d = max(16, triton.next_power_of_2(d))
    block_m = 64 if interpreting() else (128 if block_d <= 64 else 64)
    block_n = 64 if interpreting() else (64 if block_d <= 64 else 32)
    block_m = min(block_m, max(16, triton.next_power_of_2(max_seqlen_q)))
    grid = (triton.cdiv(max_seqlen_q, block_m), n_seq, q.shape[1])
    _prefill_kernel[grid](
        q, k, v, out, cu_seqlens_q, cu_seqlens_k, scale * LOG2E,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        GROUPS=q.shape[1] // k.shape[1], HEAD_DIM=d, DOT=dot_dtype(q),
        PRECISION="ieee", BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        num_warps=4 if block_d <= 64 else 8, num_stages=2,
    )
    return out


# ---------------------------------------------------------------- paged decode


@triton.jit
def _paged_decode_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, tables_ptr, lens_ptr, qk_scale,
    stride_qb, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
    stride_ob, stride_oh, stride_tb,
    GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, DOT: tl.constexpr, PRECISION: tl.constexpr,
):
    # program (row, kv head): the GROUPS query heads sharing this kv head (padded to BLOCK_G >= 16
    # rows for tl.dot) read each cached position once; TILE positions per iteration, gathered
    # across TILE / BLOCK_SIZE blocks of the row's table (16 positions a step was latency-bound:
    # 66 us a layer at 64 rows x 136 positions on an H200, ~9x its bandwidth time)
    b = tl.program_id(0)
    kv_head = tl.program_id(1)
    seq_len = tl.load(lens_ptr + b)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    g_ok = g < GROUPS
    d_ok = d < HEAD_DIM
    heads = kv_head * GROUPS + g
    q = tl.load(q_ptr + b.to(tl.int64) * stride_qb + heads[:, None] * stride_qh + d[None, :],
                mask=g_ok[:, None] & d_ok[None, :], other=0.0).to(DOT)  # [BLOCK_G, BLOCK_D]
    m_i = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
    offs = tl.arange(0, TILE)
    table = tables_ptr + b.to(tl.int64) * stride_tb
    for start in range(0, seq_len, TILE):
        t = start + offs
        t_ok = t < seq_len
        block_id = tl.load(table + t // BLOCK_SIZE, mask=t_ok, other=0).to(tl.int64)  # [TILE]
        slot = (t % BLOCK_SIZE).to(tl.int64)
        kv_mask = t_ok[:, None] & d_ok[None, :]  # past-the-end slots may hold garbage, even NaN
        k = tl.load(k_ptr + block_id[:, None] * stride_kb + slot[:, None] * stride_ks + kv_head * stride_kh
                    + d[None, :], mask=kv_mask, other=0.0).to(DOT)  # [TILE, BLOCK_D]
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [BLOCK_G, TILE] fp32
        s = tl.where(t_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + block_id[:, None] * stride_vb + slot[:, None] * stride_vs + kv_head * stride_vh
                    + d[None, :], mask=kv_mask, other=0.0).to(DOT)
        acc = acc * alpha[:, None] + tl.dot(p.to(DOT), v, input_precision=PRECISION)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(o_ptr + b.to(tl.int64) * stride_ob + heads[:, None] * stride_oh + d[None, :],
             round_to(out, o_ptr.dtype.element_ty).to(o_ptr.dtype.element_ty), mask=g_ok[:, None] & d_ok[None, :])


DECODE_TILE = 64  # cached positions per step of the paged decode kernel (whole blocks at least)


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Paged decode attention; same arguments and semantics as paged_decode_attention_ref.

    block_size (k_cache.shape[1]) must be a power of two. seq_lens and block_tables are not read
    back to the host (no sync): the caller guarantees 1 <= seq_lens[b] <= max_blocks * block_size.
    """
    who = "paged_decode_attention"
    _check_qkv(who, q, k_cache, v_cache)
    if q.dim() != 3 or k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"{who}: want q [B, Hq, D], k_cache and v_cache [blocks, block_size, Hk, D]; got "
                         f"{tuple(q.shape)}, {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    bsz = q.shape[0]
    block_size = k_cache.shape[1]
    if block_size & (block_size - 1):
        raise ValueError(f"{who}: block_size {block_size} must be a power of two")
    check_dtype(f"{who}: block_tables", block_tables, (torch.int32,))
    check_dtype(f"{who}: seq_lens", seq_lens, (torch.int32,))
    if block_tables.dim() != 2 or block_tables.shape[0] != bsz or block_tables.stride(1) != 1:
        raise ValueError(f"{who}: block_tables must be [B={bsz}, max_blocks] with unit last stride, got "
                         f"{tuple(block_tables.shape)} strides {block_tables.stride()}")
    check_shape(f"{who}: seq_lens", seq_lens, (bsz,))
    for name, t in (("block_tables", block_tables), ("seq_lens", seq_lens)):
        if t.device != q.device:
            raise ValueError(f"{who}: {name} is on {t.device}, q on {q.device}")
    out = torch.empty_like(q)
    if bsz == 0:
        return out
    hk = k_cache.shape[2]
    groups = q.shape[1] // hk
    _paged_decode_kernel[(bsz, hk)](
        q, k_cache, v_cache, out, block_tables, seq_lens.contiguous(), scale * LOG2E,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), out.stride(0), out.stride(1),
        block_tables.stride(0),
        GROUPS=groups, HEAD_DIM=q.shape[-1], BLOCK_SIZE=block_size, TILE=max(block_size, DECODE_TILE),
        BLOCK_G=max(16, triton.next_power_of_2(groups)), BLOCK_D=max(16, triton.next_power_of_2(q.shape[-1])),
        DOT=dot_dtype(q), PRECISION="ieee" if q.dtype == torch.float32 else "tf32", num_warps=4,
    )
    return out
