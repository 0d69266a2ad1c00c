"""Fused residual-add RMSNorm.

Semantics (HF Llama's order of casts, residual add in the activation dtype):
    s   = x + residual            if residual is given, else x      # [T, H], x.dtype
    out = weight * (s.float() * rsqrt(mean(s.float()^2, -1) + eps)).to(x.dtype)
    return out, s                                                    # s is the next residual
"""
from __future__ import annotations

import torch


def rmsnorm_ref(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch RMSNorm with an optional fused residual add.

    x: [T, H] (any float dtype); weight: [H]; residual: [T, H] like x, or None.
    Returns (out [T, H] in the dtype of weight * x, residual_out [T, H] = x (+ residual) in x.dtype).
    """
    s = x if residual is None else x + residual  # [T, H], x.dtype
    sf = s.float()
    normed = sf * torch.rsqrt(sf.pow(2).mean(-1, keepdim=True) + eps)  # [T, H] fp32
    return weight * normed.to(x.dtype), s
