"""Causal varlen attention (prefill) and paged decode attention.

Prefill semantics (flash_attn_varlen_func, causal): sequence b owns query rows
cu_seqlens_q[b]:cu_seqlens_q[b+1] (Lq of them) and key rows cu_seqlens_k[b]:cu_seqlens_k[b+1]
(Lk >= Lq); query i sees keys j <= i + Lk - Lq (the causal mask is aligned bottom-right).
GQA: query head h reads key/value head h // (Hq // Hk).
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F


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
    blocks = torch.where(valid, blocks, torch.zeros_like(blocks))
    slots = (pos % block_size)[None, :].expand(bsz, -1)
    keep = valid[:, :, None, None]  # past-the-end slots may hold garbage (even NaN): zero them
    kg = _expand_kv(torch.where(keep, k_cache[blocks, slots].float(), 0.0).transpose(1, 2), hq // hk)
    vg = _expand_kv(torch.where(keep, v_cache[blocks, slots].float(), 0.0).transpose(1, 2), hq // hk)
    qg = q.float()[:, :, None, :]  # [B, Hq, 1, D]
    og = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=valid[:, None, None, :], scale=scale)
    return og[:, :, 0, :].to(q.dtype)
