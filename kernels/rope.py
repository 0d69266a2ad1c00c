"""Rotary position embedding (non-interleaved, HF `rotate_half` convention), llama3 scaling.

Semantics for a head vector v of size D (first half v1, second half v2), position p:
    angle_i = p * inv_freq_i (fp32), cos/sin cast to v.dtype
    out = concat(v1 * cos - v2 * sin, v2 * cos + v1 * sin)
"""
from __future__ import annotations

import math

import torch


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
    freqs = positions.float()[:, None] * inv_freq.float()[None, :]  # [T, D/2] fp32
    emb = torch.cat((freqs, freqs), dim=-1)  # [T, D]
    cos = emb.cos().to(q.dtype)[:, None, :]  # [T, 1, D]
    sin = emb.sin().to(q.dtype)[:, None, :]
    return _rotate(q, cos, sin), _rotate(k, cos, sin)
