"""kernels/rope.py: inv_freq vs HF, rope_ref vs HF apply_rotary_pos_emb, Triton RoPE vs rope_ref."""

import pytest
import torch

from warmfast.kernels.rope import rope, rope_inv_freq, rope_ref
from kernel_common import DEV, _default_device, _err  # noqa: F401  (autouse fixture)

LLAMA3 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=64)


def _hf_rotary(head_dim: int, theta: float, scaling: dict | None):
    from transformers.models.llama.modeling_llama import LlamaConfig, LlamaRotaryEmbedding

    cfg = LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, num_key_value_heads=1,
                      rope_theta=theta, rope_scaling=scaling, max_position_embeddings=4096)
    return LlamaRotaryEmbedding(cfg)


@pytest.mark.parametrize("scaling", [None, LLAMA3], ids=["default", "llama3"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inv_freq_and_ref_match_hf(scaling, dtype):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    emb = _hf_rotary(64, 500000.0, scaling)
    inv = rope_inv_freq(64, 500000.0, scaling)
    torch.testing.assert_close(inv, emb.inv_freq, rtol=0, atol=0)
    if scaling is not None:  # the scaling really changes something
        assert _err(inv, rope_inv_freq(64, 500000.0, None)) > 1e-3
    q, k = torch.randn(7, 2, 64, dtype=dtype), torch.randn(7, 1, 64, dtype=dtype)
    pos = torch.tensor([0, 1, 2, 100, 5, 3000, 3])
    cos, sin = emb(q, pos[None])
    qh, kh = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin)
    qo, ko = rope_ref(q, k, pos, inv)
    torch.testing.assert_close(qo, qh[0].transpose(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(ko, kh[0].transpose(0, 1), rtol=0, atol=0)


def test_inv_freq_rejects_unknown_rope_type():
    with pytest.raises(ValueError, match="unsupported rope_type 'yarn'"):
        rope_inv_freq(64, 10000.0, {"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(ValueError, match="lacks"):
        rope_inv_freq(64, 10000.0, {"rope_type": "llama3", "factor": 8.0})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "tokens,heads,head_dim",
    [(t, (4, 2), 64) for t in (1, 3, 7, 133)] + [(7, (3, 1), 128), (5, (2, 2), 32), (3, (64, 8), 512)],
)  # the last: one token per program (the GPU layout); the others share programs

def test_rope_kernel_matches_ref_in_place(dtype, tokens, heads, head_dim):
    hq, hk = heads
    qkv = torch.randn(tokens, hq + 2 * hk, head_dim, dtype=dtype)  # fused buffer: q and k are views
    q, k = qkv[:, :hq], qkv[:, hq:hq + hk]
    q0, k0, v0 = q.clone(), k.clone(), qkv[:, hq + hk:].clone()
    pos = torch.randint(0, 5000, (tokens,))
    inv = rope_inv_freq(head_dim, 500000.0, LLAMA3)
    q_ref, k_ref = rope_ref(q0, k0, pos, inv)
    q_out, k_out = rope(q, k, pos, inv)
    assert q_out.data_ptr() == q.data_ptr() and k_out.data_ptr() == k.data_ptr()
    torch.testing.assert_close(qkv[:, hq + hk:], v0, rtol=0, atol=0)  # v untouched
    if dtype == torch.float32:
        torch.testing.assert_close(q, q_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(k, k_ref, rtol=1e-5, atol=1e-5)
    else:  # derived: kernel error <= 2x the bf16 ref's own error against the fp32 ref
        q_true, k_true = rope_ref(q0.float(), k0.float(), pos, inv)
        assert _err(q, q_true) <= 2 * _err(q_ref, q_true) + 1e-6
        assert _err(k, k_true) <= 2 * _err(k_ref, k_true) + 1e-6


def test_rope_rejects_bad_inputs():
    q, k = torch.randn(3, 2, 16), torch.randn(3, 1, 16)
    with pytest.raises(ValueError, match=r"rope: inv_freq has shape \(4,\), expected \(8,\)"):
        rope(q, k, torch.arange(3), torch.ones(4))
    with pytest.raises(ValueError, match="rope: positions has shape"):
        rope(q, k, torch.arange(4), torch.ones(8))
