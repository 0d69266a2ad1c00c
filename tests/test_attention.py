"""kernels/attention.py: Triton varlen prefill and paged decode against their *_ref.

The bf16 tolerance is derived as in flash-attention's tests: the kernel's error against the fp32
ref is at most 2x that of a plain low-precision attention (matmuls in bf16, softmax in fp32,
probabilities rounded to bf16, as HF's eager path does) on the same inputs.
"""
import math

import pytest
import torch

from warmfast.kernels import attention as attn_mod
from warmfast.kernels.attention import (
    paged_decode_attention,
    paged_decode_attention_ref,
    varlen_attention,
    varlen_attention_ref,
)
from kernel_common import DEV, _default_device, _err  # noqa: F401  (autouse fixture)


def _cu(lens: list[int]) -> torch.Tensor:
    out = [0]
    for n in lens:
        out.append(out[-1] + n)
    return torch.tensor(out, dtype=torch.int32)


def _lowp_attention(q, k, v, lq, lk, scale):
    """Per sequence, per head, in q.dtype: bf16 matmuls, fp32 softmax rounded to bf16."""
    out = torch.empty_like(q)
    g = q.shape[1] // k.shape[1]
    cq, ck = _cu(lq).tolist(), _cu(lk).tolist()
    for b in range(len(lq)):
        qs, ks, vs = q[cq[b]:cq[b + 1]], k[ck[b]:ck[b + 1]], v[ck[b]:ck[b + 1]]
        i = torch.arange(lq[b])[:, None]
        j = torch.arange(lk[b])[None, :]
        for h in range(q.shape[1]):
            s = (qs[:, h] @ ks[:, h // g].T) * scale
            s = s.float().masked_fill(j > i + lk[b] - lq[b], -math.inf)
            out[cq[b]:cq[b + 1], h] = s.softmax(-1).to(q.dtype) @ vs[:, h // g]
    return out


CASES = [  # (query lens, key lens, Hq, Hk, head dim)
    ([1], [1], 2, 2, 64),
    ([3, 7, 1], [3, 7, 1], 4, 2, 64),  # odd lengths, GQA 2
    ([5, 70, 2], [9, 77, 2], 4, 1, 64),  # keys beyond queries (bottom-right causal), a tile edge
    ([19, 1, 33], [19, 40, 33], 2, 2, 128),
    ([9, 9, 9], [9, 9, 9], 8, 2, 128),  # equal lengths, GQA 4
    ([6, 11], [6, 11], 3, 1, 32),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lq,lk,hq,hk,d", CASES)
def test_varlen_prefill_matches_ref(lq, lk, hq, hk, d, dtype):
    q = torch.randn(sum(lq), hq, d, dtype=dtype)
    k = torch.randn(sum(lk), hk, d, dtype=dtype)
    v = torch.randn(sum(lk), hk, d, dtype=dtype)
    scale = d ** -0.5
    args = (_cu(lq), _cu(lk), max(lq), max(lk), scale)
    got = varlen_attention(q, k, v, *args, impl="triton")
    want = varlen_attention_ref(q, k, v, *args)
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)
    else:
        truth = varlen_attention_ref(q.float(), k.float(), v.float(), *args)
        assert _err(got, truth) <= 2 * _err(_lowp_attention(q, k, v, lq, lk, scale), truth) + 1e-6


def test_varlen_ref_equals_plain_masked_softmax():
    """The ref itself against a loop over sequences and heads in fp32 (bottom-right mask, GQA)."""
    lq, lk = [3, 5, 1], [3, 8, 4]
    q, k, v = torch.randn(9, 4, 16), torch.randn(15, 2, 16), torch.randn(15, 2, 16)
    want = _lowp_attention(q, k, v, lq, lk, 0.3)  # in fp32 this is the exact textbook formula
    got = varlen_attention_ref(q, k, v, _cu(lq), _cu(lk), 5, 8, 0.3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_varlen_rejects_bad_inputs():
    q, k = torch.randn(4, 3, 16), torch.randn(4, 2, 16)
    with pytest.raises(ValueError, match="Hq=3 must be a multiple of Hk=2"):
        varlen_attention(q, k, k, _cu([4]), _cu([4]), 4, 4, 0.25)
    with pytest.raises(ValueError, match="cu_seqlens_q has dtype"):
        varlen_attention(q[:, :2], k, k, _cu([4]).long(), _cu([4]), 4, 4, 0.25)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="impl='flash' needs flash-attn"):
            varlen_attention(q[:, :2], k, k, _cu([4]), _cu([4]), 4, 4, 0.25, impl="flash")


@pytest.mark.skipif(not torch.cuda.is_available() or attn_mod._flash_attn_func() is None,
                    reason="flash-attn path needs CUDA and the flash-attn package (optional extra)")
def test_flash_attn_path_equals_triton():
    lq, lk = [5, 70, 2], [9, 77, 2]
    q = torch.randn(sum(lq), 4, 128, dtype=torch.bfloat16, device="cuda")
    k = torch.randn(sum(lk), 2, 128, dtype=torch.bfloat16, device="cuda")
    v = torch.randn(sum(lk), 2, 128, dtype=torch.bfloat16, device="cuda")
    args = (_cu(lq).cuda(), _cu(lk).cuda(), 70, 77, 128 ** -0.5)
    truth = varlen_attention_ref(q.float(), k.float(), v.float(), *args)
    lowp = _lowp_attention(q.cpu(), k.cpu(), v.cpu(), lq, lk, 128 ** -0.5)
    tol = 2 * _err(lowp, truth.cpu()) + 1e-6
    assert _err(varlen_attention(q, k, v, *args, impl="flash"), truth) <= tol
    assert _err(varlen_attention(q, k, v, *args, impl="triton"), truth) <= tol


def _paged_case(lens, hq, hk, d, block_size, dtype, gen):
    """A shuffled block pool; unused slots (and unused blocks) hold NaN to prove they are ignored."""
    max_blocks = max(-(-n // block_size) for n in lens) + 1
    n_blocks = len(lens) * max_blocks + 3
    k_cache = torch.full((n_blocks, block_size, hk, d), float("nan"), dtype=dtype, device="cpu")
    v_cache = torch.full_like(k_cache, float("nan"))
    perm = torch.randperm(n_blocks, generator=gen, device="cpu").tolist()
    tables = torch.zeros(len(lens), max_blocks, dtype=torch.int32, device="cpu")
    for b, n in enumerate(lens):
        for i in range(-(-n // block_size)):
            blk = perm.pop()
            tables[b, i] = blk
            used = min(block_size, n - i * block_size)
            k_cache[blk, :used] = torch.randn(used, hk, d, generator=gen, device="cpu").to(dtype)
            v_cache[blk, :used] = torch.randn(used, hk, d, generator=gen, device="cpu").to(dtype)
    q = torch.randn(len(lens), hq, d, generator=gen, device="cpu").to(dtype)
    return tuple(t.to(DEV) for t in (q, k_cache, v_cache, tables, torch.tensor(lens, dtype=torch.int32)))


def _lowp_paged(q, kc, vc, tables, lens, scale):
    bs = kc.shape[1]
    outs = []
    for b, n in enumerate(lens.tolist()):
        blocks = tables[b, : -(-n // bs)].long()
        k = kc[blocks].reshape(-1, kc.shape[2], kc.shape[3])[:n]
        v = vc[blocks].reshape(-1, vc.shape[2], vc.shape[3])[:n]
        outs.append(_lowp_attention(q[b:b + 1], k, v, [1], [n], scale))
    return torch.cat(outs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lens,hq,hk,d,block_size", [
    ([1], 2, 2, 64, 16),
    ([1, 17, 33], 4, 2, 64, 16),
    ([7, 40, 3, 16, 9, 1, 64], 8, 2, 128, 16),
    ([5, 12], 3, 1, 32, 8),
    ([150, 3, 65, 64], 8, 2, 64, 8),  # 64-position tiles across 8 blocks of 8, the last one partial
    ([130, 1], 4, 1, 32, 128),  # a block wider than the tile: one block per tile
])
def test_paged_decode_matches_ref(lens, hq, hk, d, block_size, dtype):
    gen = torch.Generator(device="cpu").manual_seed(len(lens) * 7 + d)
    q, kc, vc, tables, seq_lens = _paged_case(lens, hq, hk, d, block_size, dtype, gen)
    scale = d ** -0.5
    got = paged_decode_attention(q, kc, vc, tables, seq_lens, scale)
    want = paged_decode_attention_ref(q, kc, vc, tables, seq_lens, scale)
    assert not torch.isnan(want).any() and not torch.isnan(got).any()
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)
    else:
        truth = paged_decode_attention_ref(q.float(), kc.float(), vc.float(), tables, seq_lens, scale)
        assert _err(got, truth) <= 2 * _err(_lowp_paged(q, kc, vc, tables, seq_lens, scale), truth) + 1e-6


def test_paged_decode_rejects_bad_inputs():
    q, kc = torch.randn(2, 2, 16), torch.randn(4, 6, 2, 16)
    with pytest.raises(ValueError, match="block_size 6 must be a power of two"):
        paged_decode_attention(q, kc, kc, torch.zeros(2, 2, dtype=torch.int32), torch.ones(2, dtype=torch.int32), 0.25)
    kc = torch.randn(4, 8, 2, 16)
    with pytest.raises(ValueError, match="block_tables must be"):
        paged_decode_attention(q, kc, kc, torch.zeros(3, 2, dtype=torch.int32), torch.ones(2, dtype=torch.int32), 0.25)
