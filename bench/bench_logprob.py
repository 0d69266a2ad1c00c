"""Fused lm_head log-prob vs logprob_ref: Llama-3 vocab (128256) x 4096, bf16 (compute bound)."""
import pytest
import torch

from warmfast.kernels.logprob import logprob, logprob_ref

H, V = 4096, 128256


@pytest.mark.parametrize("n", [256, 2048])
@pytest.mark.parametrize("impl", ["triton", "ref"])
def test_bench_logprob(measure, impl, n):
    hidden = torch.randn(n, H, dtype=torch.bfloat16, device="cuda")
    weight = (torch.randn(V, H, device="cuda") * 0.02).to(torch.bfloat16)
    targets = torch.randint(0, V, (n,), device="cuda")
    fn = logprob if impl == "triton" else logprob_ref
    measure(lambda: fn(hidden, weight, targets), flops=2.0 * n * H * V, nbytes=V * H * 2 + n * H * 2,
            inner=3, rounds=10)
