"""warmfast._C: Philox4x32-10 known answers (Random123 kat_vectors) and the bindings' checks."""
import numpy as np
import pytest
import torch
import triton
import triton.language as tl

from warmfast import _C
from warmfast.kernels.sampling import philox4x32_10_ref, philox_words_ref

# (counter, key, expected) for philox4x32_10 from Random123's kat_vectors
KAT = [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_cpp_philox_known_answer(counter, key, expected):
    got = _C.philox4x32_10(np.array(counter, np.uint32), np.array(key, np.uint32)).tolist()
    assert got == expected, [hex(x) for x in got]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_torch_ref_philox_known_answer(counter, key, expected):
    got = philox4x32_10_ref([torch.tensor([c]) for c in counter], key[0], key[1])
    assert [int(x) for x in got] == expected


@triton.jit
def _philox_kat_kernel(c_ptr, k_ptr, out_ptr):
    seed = tl.load(k_ptr).to(tl.uint64) | (tl.load(k_ptr + 1).to(tl.uint64) << 32)
    zero = tl.full([1], 0, tl.uint32)
    r0, r1, r2, r3 = tl.philox(seed, zero + tl.load(c_ptr).to(tl.uint32), zero + tl.load(c_ptr + 1).to(tl.uint32),
                               zero + tl.load(c_ptr + 2).to(tl.uint32), zero + tl.load(c_ptr + 3).to(tl.uint32))
    o = tl.arange(0, 1)
    tl.store(out_ptr + o, r0.to(tl.int64))
    tl.store(out_ptr + 1 + o, r1.to(tl.int64))
    tl.store(out_ptr + 2 + o, r2.to(tl.int64))
    tl.store(out_ptr + 3 + o, r3.to(tl.int64))


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_triton_philox_known_answer(counter, key, expected):
    # the Triton sampler draws its words with tl.philox(seed, c0..c3): check that layout
    out = torch.zeros(4, dtype=torch.int64)
    _philox_kat_kernel[(1,)](torch.tensor(counter, dtype=torch.int64), torch.tensor(key, dtype=torch.int64), out)
    assert out.tolist() == expected


def test_philox_words_layout_matches_reference():
    for seed, req, step in [(0, 0, 0), (2**64 - 1, 2**63 + 5, 2**32 - 1), (12345, 987654321012, 77)]:
        got = _C.philox_words(seed, req, step, 37).tolist()
        assert got == philox_words_ref(seed, req, step, 37).tolist()
    # word i of (seed, request, step) is lane i % 4 of counter (i // 4, step, req_lo, req_hi)
    seed, req, step = 0xA4093822 | (0x299F31D0 << 32), 0x13198A2E | (0x03707344 << 32), 0x85A308D3
    words = _C.philox_words(seed, req, step, 23).tolist()
    for i in (0, 1, 2, 3, 4, 13, 22):
        block = _C.philox4x32_10(np.array([i // 4, step, req & 0xFFFFFFFF, req >> 32], np.uint32),
                                 np.array([seed & 0xFFFFFFFF, seed >> 32], np.uint32))
        assert words[i] == block[i % 4]


def test_logprob_binding_unchanged():
    logits = torch.randn(5, 33)
    targets = torch.randint(0, 33, (5,))
    lp, am, lse = _C.logprob(logits.numpy(), targets.numpy())
    ref = torch.log_softmax(logits.double(), -1)
    assert np.allclose(lp, ref[torch.arange(5), targets].numpy(), atol=1e-5)
    assert am.tolist() == logits.argmax(-1).tolist()
    assert np.allclose(lse, torch.logsumexp(logits.double(), -1).numpy(), atol=1e-5)


def test_sample_binding_errors_name_the_row_and_value():
    p = np.ones((3, 4), np.float32)
    keys = (np.zeros(3, np.uint64), np.zeros(3, np.uint64), np.zeros(3, np.uint32))
    with pytest.raises(ValueError, match=r"top_p\[1\] = 0 must be in \(0, 1\]"):
        _C.sample(p, *keys, top_p=np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"temperature\[2\] = -1"):
        _C.sample(p, *keys, temperature=np.array([1.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match=r"top_k must have shape \[3\]"):
        _C.sample(p, *keys, top_k=np.array([1, 2]))
    p[1] = [0.0, np.nan, -1.0, np.inf]
    with pytest.raises(ValueError, match="probs row 1 has no positive finite entry"):
        _C.sample(p, *keys)


@pytest.mark.parametrize("vocab,scale", [(7, 1.0), (1000, 30.0), (128_256, 4.0), (32_000, 200.0)])
def test_logprob_accuracy_against_float64(vocab, scale):
    # the vectorised exponential (one float ulp) summed in float blocks stays within 2e-6 of float64
    g = torch.Generator().manual_seed(vocab)
    logits = torch.randn(6, vocab, generator=g) * scale
    logits[1, vocab // 2] = 1e4  # one dominant entry
    logits[2] = 0.5  # a flat row: the argmax is the first entry
    logits[3, ::3] = -1e30  # entries far below the underflow clamp
    targets = torch.randint(0, vocab, (6,), generator=g)
    lp, am, lse = _C.logprob(logits.numpy(), targets.numpy())
    ref_lse = torch.logsumexp(logits.double(), -1)
    ref_lp = logits.double()[torch.arange(6), targets] - ref_lse
    assert np.allclose(lse, ref_lse.numpy(), rtol=2e-6, atol=2e-6)
    assert np.allclose(lp, ref_lp.numpy(), rtol=2e-6, atol=2e-6)
    assert am.tolist() == logits.argmax(-1).tolist()
