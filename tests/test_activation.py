"""kernels/activation.py: Triton fused SiLU x mul against silu_mul_ref (torch's silu then mul)."""

import pytest
import torch

from warmfast.kernels.activation import silu_mul, silu_mul_ref
from kernel_common import DEV, _default_device, _err  # noqa: F401  (autouse fixture)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows,inter", [(1, 40), (7, 131), (3, 2100)])
def test_silu_mul_matches_ref(dtype, rows, inter):
    gu = torch.randn(rows, 2 * inter, dtype=dtype) * 4  # large |gate| too: exp(-g) overflows to inf
    gu[0, 0], gu[0, 1] = -100.0, 100.0
    out = silu_mul(gu)
    ref = silu_mul_ref(gu)
    assert out.shape == (rows, inter) and out.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    else:  # the same two roundings as torch: at most one bf16 ulp where fp32 silu differs in the last bit
        truth = silu_mul_ref(gu.float())
        assert _err(out, truth) <= 2 * _err(ref, truth) + 1e-6
        assert (out != ref).float().mean().item() < 0.01


def test_silu_mul_on_a_view_and_bad_shapes():
    big = torch.randn(5, 2 * 24 + 8)
    gu = big[:, :48]  # row stride 56, unit last stride
    torch.testing.assert_close(silu_mul(gu), silu_mul_ref(gu), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"gate_up must be \[T, 2I\].*\(5, 7\)"):
        silu_mul(torch.randn(5, 7))
    with pytest.raises(ValueError, match="unit last stride"):
        silu_mul(torch.randn(48, 5).T)
