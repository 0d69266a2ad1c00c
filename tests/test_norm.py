"""kernels/norm.py: Triton fused residual-add RMSNorm against rmsnorm_ref (and HF's LlamaRMSNorm)."""

import pytest
import torch

from warmfast.kernels.norm import rmsnorm, rmsnorm_ref
from kernel_common import DEV, _default_device, _err  # noqa: F401  (autouse fixture)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows,hidden", [(r, h) for r in (1, 3, 7, 133) for h in (48, 131)] + [(3, 16400)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rmsnorm_matches_ref(dtype, rows, hidden, with_residual):
    """Narrow rows share a program; 16400 wide takes one row per program (the GPU layout)."""
    x = torch.randn(rows, hidden, dtype=dtype) * 3
    res = torch.randn(rows, hidden, dtype=dtype) if with_residual else None
    w = torch.randn(hidden, dtype=dtype)
    out, res_out = rmsnorm(x, w, 1e-6, res)
    ref_out, ref_res = rmsnorm_ref(x, w, 1e-6, res)
    assert out.dtype == ref_out.dtype and res_out.dtype == ref_res.dtype
    torch.testing.assert_close(res_out, ref_res, rtol=0, atol=0)  # the same one rounding of x + r
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    else:  # derived: kernel error <= 2x the bf16 ref's own error against the fp32 ref
        truth, _ = rmsnorm_ref(ref_res.float(), w.float(), 1e-6)
        assert _err(out, truth) <= 2 * _err(ref_out, truth) + 1e-6


def test_rmsnorm_matches_hf_llama_rmsnorm():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    m = LlamaRMSNorm(40, eps=1e-5).to(torch.bfloat16)
    m.weight.data = torch.randn(40).to(torch.bfloat16)
    x, r = torch.randn(9, 40, dtype=torch.bfloat16), torch.randn(9, 40, dtype=torch.bfloat16)
    out, res_out = rmsnorm(x, m.weight.data, 1e-5, r)
    hf = m(x + r)
    assert _err(out, hf) <= 2 * 2.0 ** -8 * hf.float().abs().max().item()  # at most ~1 bf16 ulp
    torch.testing.assert_close(res_out, x + r, rtol=0, atol=0)


def test_rmsnorm_without_residual_returns_input_as_residual():
    x = torch.randn(4, 32)
    _, res_out = rmsnorm(x, torch.ones(32), 1e-6)
    assert res_out.data_ptr() == x.data_ptr()


def test_rmsnorm_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"rmsnorm: weight has shape \(31,\), expected \(32,\)"):
        rmsnorm(torch.randn(4, 32), torch.ones(31), 1e-6)
    with pytest.raises(ValueError, match="rmsnorm: residual has shape"):
        rmsnorm(torch.randn(4, 32), torch.ones(32), 1e-6, torch.randn(3, 32))
    with pytest.raises(ValueError, match="rmsnorm: residual has dtype"):
        rmsnorm(torch.randn(4, 32), torch.ones(32), 1e-6, torch.randn(4, 32, dtype=torch.bfloat16))
