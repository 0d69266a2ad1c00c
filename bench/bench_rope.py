"""RoPE in place vs rope_ref, Llama-8B heads (32 q, 8 kv, dim 128), 8192 tokens, bf16."""
import pytest
import torch

from warmfast.kernels.rope import rope, rope_inv_freq, rope_ref

T, HQ, HK, D = 8192, 32, 8, 128
LLAMA3 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=8192)


@pytest.mark.parametrize("impl", ["triton", "ref"])
def test_bench_rope(measure, impl):
    qkv = torch.randn(T, HQ + 2 * HK, D, dtype=torch.bfloat16, device="cuda")
    q, k = qkv[:, :HQ], qkv[:, HQ:HQ + HK]
    pos = torch.arange(T, device="cuda") % 256
    inv = rope_inv_freq(D, 500000.0, LLAMA3).cuda()
    fn = rope if impl == "triton" else rope_ref
    nbytes = 2 * T * (HQ + HK) * D * 2 + T * 8  # read + write q and k, positions
    measure(lambda: fn(q, k, pos, inv), nbytes=nbytes)
