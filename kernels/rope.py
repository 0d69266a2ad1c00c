"""Rotary position embedding (non-interleaved, HF `rotate_half` convention), llama3 scaling.

Semantics for a head vector v of size D (first half v1, second half v2), position p:
    angle_i = p * inv_freq_i (fp32), cos/sin cast to v.dtype
    out = concat(v1 * cos - v2 * sin, v2 * cos + v1 * sin)
"""
from __future__ import annotations

import math

import torch

from .common import (
    triton, tl,
    FLOAT_DTYPES, check_device, check_dtype, check_same_device, check_shape, interpreting, round_to,
)


def rope_inv_freq(head_dim: int, theta: float, rope_scaling: dict | None) -> torch.Tensor:
    """Inverse frequencies, fp32 [head_dim // 2], computed exactly as HF transformers does.

    rope_scaling: None (or rope_type "default") for plain RoPE; rope_type "llama3" with keys
    factor, low_freq_factor, high_freq_factor, original_max_position_embeddings. Any other
    rope_type raises ValueError.
    """
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"rope_inv_freq: head_dim must be a positive even number, got {head_dim}")
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    rope_type = "default"
    if rope_scaling is not None:
        rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type != "llama3":
        raise ValueError(f"rope_inv_freq: unsupported rope_type {rope_type!r} (supported: default, llama3)")
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [k for k in keys if k not in rope_scaling]
    if missing:
        raise ValueError(f"rope_inv_freq: llama3 rope_scaling lacks {missing}; got keys {sorted(rope_scaling)}")
    factor = rope_scaling["factor"]
    low, high = rope_scaling["low_freq_factor"], rope_scaling["high_freq_factor"]
    old_ctx = rope_scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # HF rotate_half
    return x * cos + rot * sin


def rope_ref(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch RoPE (returns new tensors; the Triton launcher works in place).

    q: [T, Hq, D], k: [T, Hk, D] (same dtype); positions: int64 [T]; inv_freq: fp32 [D // 2].
    Returns (q_out [T, Hq, D], k_out [T, Hk, D]) in q.dtype.
    """
    cos, sin = rope_cos_sin(positions, inv_freq, q.dtype)
    return _rotate(q, cos, sin), _rotate(k, cos, sin)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each [T, 1, D] in dtype, of rope_ref: the same for every layer of a forward."""
    freqs = positions.float()[:, None] * inv_freq.float()[None, :]  # [T, D/2] fp32
    emb = torch.cat((freqs, freqs), dim=-1)  # [T, D]
    return emb.cos().to(dtype)[:, None, :], emb.sin().to(dtype)[:, None, :]


def rope_apply_ref(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """rope_ref with its (cos, sin) computed once by rope_cos_sin."""
    return _rotate(q, cos, sin), _rotate(k, cos, sin)


@triton.jit
def _rope_heads(ptr, stride_t, stride_h, rows, row_ok, n_heads, cos1, sin1, half,
                BLOCK_HEADS: tl.constexpr, BLOCK_HALF: tl.constexpr):
    # x: [ROWS, n_heads, D] rotated in place; products rounded to x.dtype like HF's
    # `q * cos + rotate_half(q) * sin` done in that dtype
    dt = ptr.dtype.element_ty
    heads = tl.arange(0, BLOCK_HEADS)[None, :, None]
    cols = tl.arange(0, BLOCK_HALF)[None, None, :]
    mask = row_ok[:, None, None] & (heads < n_heads) & (cols < half)
    p1 = ptr + rows[:, None, None] * stride_t + heads * stride_h + cols
    x1 = tl.load(p1, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(p1 + half, mask=mask, other=0.0).to(tl.float32)
    a1 = round_to(x1 * cos1, dt)
    b1 = round_to(x2 * sin1, dt)
    a2 = round_to(x2 * cos1, dt)
    b2 = round_to(x1 * sin1, dt)
    tl.store(p1, round_to(a1 - b1, dt).to(dt), mask=mask)
    tl.store(p1 + half, round_to(a2 + b2, dt).to(dt), mask=mask)


@triton.jit
def _rope_kernel(
    q_ptr, k_ptr, pos_ptr, inv_freq_ptr,
    T, Hq, Hk, half, stride_qt, stride_qh, stride_kt, stride_kh,
    ROWS: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    # ROWS tokens per program: angles in fp32, cos/sin rounded to q.dtype, all heads of q and k
    rows = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)
    row_ok = rows < T
    cols = tl.arange(0, BLOCK_HALF)
    inv = tl.load(inv_freq_ptr + cols, mask=cols < half, other=0.0)
    pos = tl.load(pos_ptr + rows, mask=row_ok, other=0).to(tl.float32)
    ang = pos[:, None] * inv[None, :]  # [ROWS, D/2]
    dt = q_ptr.dtype.element_ty
    cos1 = round_to(tl.cos(ang), dt)[:, None, :]
    sin1 = round_to(tl.sin(ang), dt)[:, None, :]
    _rope_heads(q_ptr, stride_qt, stride_qh, rows, row_ok, Hq, cos1, sin1, half, BLOCK_HQ, BLOCK_HALF)
    _rope_heads(k_ptr, stride_kt, stride_kh, rows, row_ok, Hk, cos1, sin1, half, BLOCK_HK, BLOCK_HALF)


def rope(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton RoPE, in place on q and k (views of a fused qkv buffer are fine); returns (q, k).

    Same arguments and semantics as rope_ref: q [T, Hq, D], k [T, Hk, D] with unit last stride,
    positions int64 [T], inv_freq fp32 [D // 2].
    """
    for name, t in (("q", q), ("k", k)):
        check_device(f"rope: {name}", t)
        check_dtype(f"rope: {name}", t, FLOAT_DTYPES)
        if t.dim() != 3 or t.stride(-1) != 1:
            raise ValueError(f"rope: {name} must be [T, H, D] with unit last stride, got shape {tuple(t.shape)} strides {t.stride()}")
    tt, hq, d = q.shape
    check_same_device("rope", q, k=k, positions=positions, inv_freq=inv_freq)
    check_shape("rope: k", k, (tt, k.shape[1], d))
    check_dtype("rope: k", k, (q.dtype,))
    if d % 2:
        raise ValueError(f"rope: head dim must be even, got {d}")
    check_shape("rope: positions", positions, (tt,))
    check_dtype("rope: positions", positions, (torch.int64, torch.int32))
    check_shape("rope: inv_freq", inv_freq, (d // 2,))
    check_dtype("rope: inv_freq", inv_freq, (torch.float32,))
    if tt == 0:
        return q, k
    block_hq, block_half = triton.next_power_of_2(hq), triton.next_power_of_2(d // 2)
    # GPU: one token per program for model shapes (32 heads x 64 pairs); the interpreter pays per
    # program, so there a program takes up to 16K elements
    rows = max(1, min(triton.next_power_of_2(tt), (16384 if interpreting() else 2048) // (block_hq * block_half)))
    _rope_kernel[(triton.cdiv(tt, rows),)](
        q, k, positions.contiguous(), inv_freq.contiguous(),
        tt, hq, k.shape[1], d // 2, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        ROWS=rows, BLOCK_HQ=block_hq, BLOCK_HK=triton.next_power_of_2(k.shape[1]), BLOCK_HALF=block_half,
    )
    return q, k
