"""Fused SiLU x mul, the MLP's gate: out = silu(gate) * up over the fused gate|up projection.

Semantics (torch's order of casts on a [T, 2I] gate_up in the activation dtype):
    gate, up = gate_up[:, :I], gate_up[:, I:]
    out = (silu(gate.float()).to(dtype).float() * up.float()).to(dtype)          # [T, I]
Unfused, torch makes three passes (silu, then the product reading its result back); the kernel
reads gate_up once and writes out once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import triton, tl, FLOAT_DTYPES, check_device, check_dtype, round_to


def silu_mul_ref(gate_up: torch.Tensor) -> torch.Tensor:
    """Plain torch: gate_up [T, 2I] -> silu(gate) * up [T, I] in gate_up's dtype."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, I, stride_gu, stride_out, BLOCK: tl.constexpr):
    # program (row, column tile): out[row, cols] = silu(gate[row, cols]) * up[row, cols]
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < I
    dt = out_ptr.dtype.element_ty
    g = tl.load(gu_ptr + row * stride_gu + cols, mask=ok, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * stride_gu + I + cols, mask=ok, other=0.0).to(tl.float32)
    s = round_to(g / (1.0 + tl.exp(-g)), dt)  # silu in fp32, rounded as torch's silu output is
    tl.store(out_ptr + row * stride_out + cols, round_to(s * u, dt).to(dt), mask=ok)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """Triton fused silu(gate) * up; same semantics as silu_mul_ref. gate_up: [T, 2I], unit last
    stride."""
    check_device("silu_mul: gate_up", gate_up)
    check_dtype("silu_mul: gate_up", gate_up, FLOAT_DTYPES)
    if gate_up.dim() != 2 or gate_up.shape[1] % 2 or gate_up.stride(1) != 1:
        raise ValueError(f"silu_mul: gate_up must be [T, 2I] with unit last stride, got shape "
                         f"{tuple(gate_up.shape)} strides {gate_up.stride()}")
    t, i = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty((t, i), dtype=gate_up.dtype, device=gate_up.device)
    if t == 0 or i == 0:
        return out
    block = min(2048, triton.next_power_of_2(i))
    _silu_mul_kernel[(t, triton.cdiv(i, block))](gate_up, out, i, gate_up.stride(0), out.stride(0),
                                                  BLOCK=block, num_warps=4 if block <= 1024 else 8)
    return out
