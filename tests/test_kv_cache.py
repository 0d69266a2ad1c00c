"""Paged KV cache: block accounting and token addressing through block tables."""
import pytest
import torch

from warmfast.engine.batch import build_decode, build_prefill
from warmfast.engine.kv_cache import BlockManager, PagedKVCache, blocks_for
from warmfast.kernels.attention import paged_decode_attention_ref


def test_blocks_for():
    assert [blocks_for(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_block_manager_reserve_grow_release():
    bm = BlockManager(num_blocks=5, block_size=4)
    assert bm.reserve(0, 5) == [0, 1] and bm.num_free == 3
    assert bm.reserve(0, 8) == [0, 1]  # still fits in two blocks
    assert bm.reserve(1, 1) == [2]
    assert bm.can_hold(0, 9) and not bm.can_hold(0, 17)
    assert bm.reserve(0, 9) == [0, 1, 3]
    with pytest.raises(RuntimeError, match="sequence 1 needs 2 more blocks for 12 tokens but only 1"):
        bm.reserve(1, 12)
    bm.check()
    bm.release(0)
    assert bm.num_free == 4 and bm.reserve(1, 12) == [2, 4, 0]
    bm.check()
    bm.release(7)  # unknown: nothing to free
    bm.check()
    with pytest.raises(ValueError, match="num_blocks=0"):
        BlockManager(0, 4)


def test_paged_cache_writes_where_the_block_table_points():
    # rows of 5 and 3 tokens over shuffled blocks of size 2; read back through paged attention
    layers, blocks, bs, hk, d = 2, 8, 2, 2, 4
    cache = PagedKVCache(layers, blocks, bs, hk, d, torch.float32, torch.device("cpu"))
    tables = torch.tensor([[6, 1, 3], [0, 5, 0]], dtype=torch.int32)
    batch = build_prefill([[1, 2, 3, 4, 5], [6, 7, 8]], [-1, -1], torch.device("cpu"), tables)
    k = torch.randn(8, hk, d)
    v = torch.randn(8, hk, d)
    cache.write(1, k, v, batch)
    assert torch.equal(cache.k[1][6, 0], k[0]) and torch.equal(cache.k[1][3, 0], k[4])
    assert torch.equal(cache.v[1][5, 0], v[7]) and torch.equal(cache.v[1][0, 1], v[6])
    assert cache.k[0].abs().sum() == 0  # other layers untouched
    # a decode token at position 5 (row 0) and 3 (row 1)
    dec = build_decode([9, 10], [5, 3], [-1, -1], tables, torch.device("cpu"))
    k2, v2 = torch.randn(2, hk, d), torch.randn(2, hk, d)
    cache.write(1, k2, v2, dec)
    assert torch.equal(cache.k[1][3, 1], k2[0]) and torch.equal(cache.k[1][5, 1], k2[1])
    q = torch.randn(2, 4, d)
    out = paged_decode_attention_ref(q, *cache.layer(1), tables, dec.seq_lens, 0.5)
    keys = [torch.cat([k[:5], k2[:1]]), torch.cat([k[5:8], k2[1:]])]
    vals = [torch.cat([v[:5], v2[:1]]), torch.cat([v[5:8], v2[1:]])]
    for r in range(2):
        kk = keys[r].repeat_interleave(2, dim=1)  # GQA: 4 q heads over 2 kv heads
        vv = vals[r].repeat_interleave(2, dim=1)
        att = torch.softmax(torch.einsum("hd,lhd->hl", q[r], kk) * 0.5, -1)
        assert torch.allclose(out[r], torch.einsum("hl,lhd->hd", att, vv), atol=1e-5)
