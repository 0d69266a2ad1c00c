"""kernels/logprob.py: the fused lm_head log-prob kernel against logprob_ref.

bf16 tolerance derived from the ref's low-precision twin: logits computed as a bf16 matmul
(what HF's lm_head in bf16 gives) and then reduced in fp32.
"""

import pytest
import torch

from warmfast.kernels.logprob import logprob, logprob_ref
from kernel_common import DEV, _default_device, _err  # noqa: F401  (autouse fixture)


def _lowp(hidden, weight, targets):
    logits = (hidden @ weight.T).float()  # [N, V] bf16 matmul, upcast afterwards
    lse = torch.logsumexp(logits, -1)
    return logits.gather(1, targets[:, None])[:, 0] - lse, logits.argmax(-1), lse


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,h,v,split_v", [
    (1, 16, 50, None),
    (3, 40, 300, None),
    (7, 40, 1000, 3),  # vocab split over 3 programs, last tile ragged
    (133, 24, 260, 1),
    (20, 64, 513, 5),
])
def test_logprob_matches_ref(n, h, v, split_v, dtype):
    hidden = torch.randn(n, h, dtype=dtype)
    weight = (torch.randn(v, h) / h ** 0.25).to(dtype)
    targets = torch.randint(0, v, (n,))
    targets[0] = v - 1  # the last (ragged) vocab tile
    got = logprob(hidden, weight, targets, split_v=split_v)
    ref = logprob_ref(hidden, weight, targets, chunk=4)
    truth = logprob_ref(hidden.float(), weight.float(), targets)
    assert [t.dtype for t in got] == [torch.float32, torch.int64, torch.float32]
    logits = hidden.float() @ weight.float().T
    picked = logits.gather(1, got[1][:, None])[:, 0]  # a differing argmax must be a near-tie
    torch.testing.assert_close(picked, logits.max(-1).values, rtol=0, atol=1e-5 * logits.abs().max().item())
    assert (got[1] == truth[1]).float().mean() > 0.9
    lowp = _lowp(hidden, weight, targets)
    for i in (0, 2):  # log-prob, logsumexp
        if dtype == torch.float32:
            torch.testing.assert_close(got[i], ref[i], rtol=1e-5, atol=1e-5 * max(1.0, ref[i].abs().max().item()))
        else:
            assert _err(got[i], truth[i]) <= 2 * _err(lowp[i], truth[i]) + 1e-6

def test_argmax_takes_first_maximum_across_tiles_and_splits():
    hidden = torch.ones(3, 16)
    weight = torch.zeros(300, 16)
    weight[[131, 5, 299]] = 1.0  # equal maxima in tiles 0, 1 and 2
    targets = torch.tensor([0, 5, 299])
    for split_v in (1, 2, 3):
        lp, am, lse = logprob(hidden, weight, targets, split_v=split_v)
        assert am.tolist() == [5, 5, 5]
        torch.testing.assert_close(lp, logprob_ref(hidden, weight, targets)[0])


def test_ref_chunks_agree_and_match_log_softmax():
    hidden, weight = torch.randn(10, 16), torch.randn(50, 16)
    targets = torch.randint(0, 50, (10,))
    full = torch.log_softmax(hidden @ weight.T, -1)
    for chunk in (1, 3, 1024):
        lp, am, _ = logprob_ref(hidden, weight, targets, chunk=chunk)
        torch.testing.assert_close(lp, full.gather(1, targets[:, None])[:, 0])
        assert am.tolist() == full.argmax(-1).tolist()


def test_logprob_rejects_bad_inputs():
    hidden, weight = torch.randn(4, 16), torch.randn(50, 16)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 50\), got range \[0, 50\]"):
        logprob(hidden, weight, torch.tensor([0, 1, 2, 50]))
    with pytest.raises(ValueError, match="weight has shape"):
        logprob(hidden, torch.randn(50, 15), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="targets has dtype"):
        logprob(hidden, weight, torch.tensor([0, 1, 2, 3], dtype=torch.int32))
