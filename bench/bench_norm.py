"""Fused residual-add RMSNorm vs rmsnorm_ref, Llama-8B width, 8192 tokens, bf16 (memory bound)."""
import pytest
import torch

from warmfast.kernels.norm import rmsnorm, rmsnorm_ref

T, H = 8192, 4096


@pytest.mark.parametrize("impl", ["triton", "ref"])
def test_bench_rmsnorm(measure, impl):
    x, r = (torch.randn(T, H, dtype=torch.bfloat16, device="cuda") for _ in range(2))
    w = torch.randn(H, dtype=torch.bfloat16, device="cuda")
    fn = rmsnorm if impl == "triton" else rmsnorm_ref
    nbytes = 2 * T * H * 2 + 2 * T * H * 2 + H * 2  # read x, residual; write out, residual_out
    measure(lambda: fn(x, w, 1e-5, r), nbytes=nbytes)
