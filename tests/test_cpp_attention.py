"""warmfast._C.paged_decode_attention (the CPU engine's decode attention) equals the torch
reference on random paged caches: GQA and MHA, ragged lengths, shuffled block tables, garbage
past each row's end; bad shapes and out-of-pool blocks are refused with the values named."""
import pytest
import torch

from warmfast import _C
from warmfast.kernels.attention import paged_decode_attention_ref


def _case(rows, hq, hk, d, block_size, lens, seed=0):
    g = torch.Generator().manual_seed(seed)
    max_blocks = max(-(-n // block_size) for n in lens) + 1
    num_blocks = rows * max_blocks + 3
    k = torch.randn(num_blocks, block_size, hk, d, generator=g)
    v = torch.randn(num_blocks, block_size, hk, d, generator=g)
    k[-1] = float("nan")  # never referenced by a live position
    perm = torch.randperm(num_blocks - 1, generator=g)
    tables = perm[:rows * max_blocks].reshape(rows, max_blocks).to(torch.int32)
    q = torch.randn(rows, hq, d, generator=g)
    return q, k, v, tables, torch.tensor(lens, dtype=torch.int32)


@pytest.mark.parametrize("hq,hk,d,block_size,lens", [
    (8, 2, 16, 4, [1, 5, 17, 32]),      # GQA 4:1, partial last blocks
    (4, 4, 8, 16, [3, 16, 1]),          # MHA
    (6, 3, 64, 8, [40, 7, 63, 2, 9]),   # head_dim 64
])
def test_equals_reference(hq, hk, d, block_size, lens):
    q, k, v, tables, seq_lens = _case(len(lens), hq, hk, d, block_size, lens)
    scale = d ** -0.5
    got = torch.from_numpy(_C.paged_decode_attention(q.numpy(), k.numpy(), v.numpy(), tables.numpy(),
                                                     seq_lens.numpy(), scale))
    want = paged_decode_attention_ref(q, k, v, tables, seq_lens, scale)
    assert got.shape == want.shape
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_named():
    q, k, v, tables, seq_lens = _case(2, 4, 2, 8, 4, [3, 6])
    args = (q.numpy(), k.numpy(), v.numpy())
    with pytest.raises(ValueError, match=r"block_tables\[1, 0\] = 999 is outside the cache's"):
        bad = tables.clone()
        bad[1, 0] = 999
        _C.paged_decode_attention(*args, bad.numpy(), seq_lens.numpy(), 0.3)
    with pytest.raises(ValueError, match=r"seq_lens\[0\] = 0 must be in \[1, "):
        _C.paged_decode_attention(*args, tables.numpy(), torch.tensor([0, 6], dtype=torch.int32).numpy(), 0.3)
    with pytest.raises(ValueError, match="query heads 3 are not a multiple of kv heads 2"):
        _C.paged_decode_attention(q[:, :3].contiguous().numpy(), k.numpy(), v.numpy(), tables.numpy(),
                                  seq_lens.numpy(), 0.3)
    with pytest.raises(TypeError):  # a float64 cache is not converted behind the caller's back
        _C.paged_decode_attention(q.numpy(), k.double().numpy(), v.numpy(), tables.numpy(), seq_lens.numpy(), 0.3)
