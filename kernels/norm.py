"""Fused residual-add RMSNorm.

Semantics (HF Llama's order of casts, residual add in the activation dtype):
    s   = x + residual            if residual is given, else x      # [T, H], x.dtype
    out = weight * (s.float() * rsqrt(mean(s.float()^2, -1) + eps)).to(x.dtype)
    return out, s                                                    # s is the next residual
"""
from __future__ import annotations

import torch

from .common import (
    triton, tl,
    FLOAT_DTYPES, check_device, check_dtype, check_same_device, check_shape, interpreting, round_to,
)


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


@triton.jit
def _rmsnorm_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr,
    T, H, stride_x, stride_res, stride_out, stride_res_out, eps,
    HAS_RES: tl.constexpr, ROWS: tl.constexpr, BLOCK_H: tl.constexpr,
):
    # ROWS rows per program; x, residual: [T, H]; arithmetic in fp32 with HF's rounding points
    rows = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None]  # [ROWS, 1]
    cols = tl.arange(0, BLOCK_H)[None, :]  # [1, BLOCK_H]
    mask = (rows < T) & (cols < H)
    x = tl.load(x_ptr + rows * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        r = tl.load(res_ptr + rows * stride_res + cols, mask=mask, other=0.0).to(tl.float32)
        x = round_to(x + r, res_out_ptr.dtype.element_ty)  # s = x + residual in x.dtype
        tl.store(res_out_ptr + rows * stride_res_out + cols, x.to(res_out_ptr.dtype.element_ty), mask=mask)
    var = tl.sum(x * x, axis=1)[:, None] / H
    normed = round_to(x * tl.rsqrt(var + eps), res_out_ptr.dtype.element_ty)
    w = tl.load(w_ptr + cols, mask=cols < H, other=0.0).to(tl.float32)
    out = round_to(w * normed, out_ptr.dtype.element_ty)
    tl.store(out_ptr + rows * stride_out + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def rmsnorm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton fused residual-add RMSNorm; same semantics and returns as rmsnorm_ref.

    One pass over the row instead of three (add, square-mean, scale): reads x (+ residual) once.
    Without a residual, residual_out is x itself (no copy).
    """
    check_device("rmsnorm: x", x)
    check_dtype("rmsnorm: x", x, FLOAT_DTYPES)
    if x.dim() != 2 or x.stride(-1) != 1:
        raise ValueError(f"rmsnorm: x must be [T, H] with unit last stride, got shape {tuple(x.shape)} strides {x.stride()}")
    t, h = x.shape
    check_same_device("rmsnorm", x, weight=weight, **({} if residual is None else {"residual": residual}))
    check_shape("rmsnorm: weight", weight, (h,))
    if not weight.is_contiguous():
        raise ValueError("rmsnorm: weight must be contiguous")
    if residual is not None:
        check_shape("rmsnorm: residual", residual, (t, h))
        check_dtype("rmsnorm: residual", residual, (x.dtype,))
        if residual.stride(-1) != 1:
            raise ValueError(f"rmsnorm: residual needs unit last stride, got strides {residual.stride()}")
    out = torch.empty((t, h), dtype=torch.promote_types(weight.dtype, x.dtype), device=x.device)
    res_out = torch.empty_like(x) if residual is not None else x
    if t == 0:
        return out, res_out
    res = residual if residual is not None else x
    block_h = triton.next_power_of_2(h)
    # GPU: one row per program for model widths (>= 2K); narrow rows share a program. The
    # interpreter pays per program, so there a program takes up to 16K elements.
    rows = max(1, min(triton.next_power_of_2(t), (16384 if interpreting() else 2048) // block_h))
    _rmsnorm_kernel[(triton.cdiv(t, rows),)](
        x, res, weight, out, res_out,
        t, h, x.stride(0), res.stride(0), out.stride(0), res_out.stride(0), eps,
        HAS_RES=residual is not None, ROWS=rows, BLOCK_H=block_h,
        num_warps=min(16, max(1, rows * block_h // 256)),
    )
    return out, res_out
