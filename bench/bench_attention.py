"""Varlen causal prefill and paged decode vs their *_ref, Llama-8B heads (32 q, 8 kv, dim 128)."""
import pytest
import torch

from warmfast.kernels.attention import (
    paged_decode_attention,
    paged_decode_attention_ref,
    varlen_attention,
    varlen_attention_ref,
)

HQ, HK, D = 32, 8, 128


@pytest.mark.parametrize("seq_len", [256, 1024])
@pytest.mark.parametrize("impl", ["triton", "ref"])
def test_bench_varlen_prefill(measure, impl, seq_len):
    n_seq = 8192 // seq_len
    t = n_seq * seq_len
    q = torch.randn(t, HQ, D, dtype=torch.bfloat16, device="cuda")
    k, v = (torch.randn(t, HK, D, dtype=torch.bfloat16, device="cuda") for _ in range(2))
    cu = torch.arange(0, t + 1, seq_len, dtype=torch.int32, device="cuda")
    args = (q, k, v, cu, cu, seq_len, seq_len, D ** -0.5)
    fn = (lambda: varlen_attention(*args, impl="triton")) if impl == "triton" else (lambda: varlen_attention_ref(*args))
    flops = 4.0 * n_seq * HQ * D * seq_len * (seq_len + 1) / 2  # QK^T and PV over the causal half
    measure(fn, flops=flops, inner=3, rounds=10)


@pytest.mark.parametrize("impl", ["triton", "ref"])
def test_bench_paged_decode(measure, impl):
    b, seq_len, block = 64, 1024, 16
    n_blocks = b * seq_len // block
    k_cache, v_cache = (torch.randn(n_blocks, block, HK, D, dtype=torch.bfloat16, device="cuda") for _ in range(2))
    tables = torch.randperm(n_blocks, device="cuda").to(torch.int32).view(b, seq_len // block)
    lens = torch.full((b,), seq_len, dtype=torch.int32, device="cuda")
    q = torch.randn(b, HQ, D, dtype=torch.bfloat16, device="cuda")
    fn = paged_decode_attention if impl == "triton" else paged_decode_attention_ref
    measure(lambda: fn(q, k_cache, v_cache, tables, lens, D ** -0.5), nbytes=2 * b * seq_len * HK * D * 2)
