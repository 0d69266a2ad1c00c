"""kernels/lora.py: segmented and decode Triton LoRA against lora_ref, over STYLE.md's grid.

Grid: adapter popularity (all rows one adapter, all distinct, base mixed in, skewed) x batch
sizes 1, 3, 7, 133 x ranks 8, 16, 64 x fp32/bf16, three fused output slices of uneven widths,
adapters with ranks below r_max and one that skips a slice. B is never all zero.
"""
import random

import pytest
import torch

from warmfast.kernels.lora import lora, lora_decode, lora_ref
from kernel_common import DEV, _default_device, _err  # noqa: F401  (autouse fixture)


IN, SLICES = 40, [0, 32, 48, 64]  # q|k|v-like widths 32, 16, 16 (in: odd multiple of 8)
N_SLOTS = 5


def _weights(r_max: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked slots: slot s has rank r_max >> (s % 3) (zero-padded), slot 1 skips slice 2."""
    n = len(SLICES) - 1
    A = torch.zeros(N_SLOTS, n * r_max, IN)
    B = torch.zeros(N_SLOTS, SLICES[-1], r_max)
    for s in range(N_SLOTS):
        r = max(1, r_max >> (s % 3))
        for j in range(n):
            if s == 1 and j == 2:
                continue
            A[s, j * r_max:j * r_max + r] = torch.randn(r, IN) / IN ** 0.5
            B[s, SLICES[j]:SLICES[j + 1], :r] = torch.randn(SLICES[j + 1] - SLICES[j], r) * (2.0 / r)
    assert all(B[s].abs().sum() > 0 for s in range(N_SLOTS))
    return A.to(dtype), B.to(dtype)


def _segments(pattern: str, rows: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """(seg_starts, seg_slots) for a popularity pattern; consecutive segments differ in slot."""
    if pattern == "one":
        lens, slots = [rows], [2]
    elif pattern == "distinct":
        lens, slots = [1] * rows, [i % N_SLOTS for i in range(rows)]
    elif pattern == "base_mixed":
        lens, slots, left, i = [], [], rows, 0
        while left:
            n = min(left, rng.randint(1, 9))
            lens.append(n)
            slots.append(-1 if i % 2 == 0 else rng.randrange(N_SLOTS))
            left, i = left - n, i + 1
    elif pattern == "skewed":  # one adapter takes ~80% of the rows, the rest share what is left
        big = max(1, (rows * 4) // 5)
        lens, slots, left = [big], [3], rows - big
        for s in (0, -1, 4, 1):
            if left:
                n = max(1, left // 2) if s != 1 else left
                lens.append(n)
                slots.append(s)
                left -= n
        if left:
            lens[-1] += left
    else:
        raise AssertionError(pattern)
    starts = [0]
    for n in lens:
        starts.append(starts[-1] + n)
    assert starts[-1] == rows
    return starts, slots


def _lowp_lora(x, y, A, B, starts, slots):
    """The ref's computation done wholly in the low-precision dtype (for the derived tolerance)."""
    r = B.shape[2]
    for seg, slot in enumerate(slots):
        s, e = starts[seg], starts[seg + 1]
        if slot < 0 or e == s:
            continue
        xa = x[s:e] @ A[slot].T
        for j in range(len(SLICES) - 1):
            o0, o1 = SLICES[j], SLICES[j + 1]
            y[s:e, o0:o1] += xa[:, j * r:(j + 1) * r] @ B[slot, o0:o1].T
    return y


def _check(got, x, y0, A, B, starts, slots, dtype):
    want = lora_ref(x, y0.clone(), A, B, SLICES, starts, slots)
    base_rows = [i for seg, slot in enumerate(slots) if slot < 0 for i in range(starts[seg], starts[seg + 1])]
    if base_rows:  # base rows are bit-identical: no delta, no rounding
        torch.testing.assert_close(got[base_rows], y0[base_rows], rtol=0, atol=0)
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    else:
        truth = lora_ref(x.float(), y0.float(), A.float(), B.float(), SLICES, starts, slots)
        lowp = _lowp_lora(x, y0.clone(), A, B, starts, slots)
        assert _err(got, truth) <= 2 * _err(lowp, truth) + 1e-6
    assert _err(want, y0) > 0.1 or not [s for s in slots if s >= 0]  # the delta is really there


PATTERNS = ["one", "distinct", "base_mixed", "skewed"]
# the full popularity x batch grid at rank 16; ranks 8 and 64 on the mixed patterns (the
# interpreter runs one Python step per program, so 133 one-row segments are its slowest case)
GRID = [(p, n, 16) for p in PATTERNS for n in (1, 3, 7, 133)] + \
    [(p, n, r) for p in ("base_mixed", "skewed") for n in (7, 133) for r in (8, 64)] + [("distinct", 7, 64)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pattern,rows,rank", GRID)
def test_segmented_lora_matches_ref(pattern, rows, rank, dtype):
    rng = random.Random(rows * 1000 + rank)
    starts, slots = _segments(pattern, rows, rng)
    A, B = _weights(rank, dtype)
    x = torch.randn(rows, IN, dtype=dtype)
    y0 = torch.randn(rows, SLICES[-1], dtype=dtype)
    got = lora(x, y0.clone(), A, B, SLICES, starts, slots)
    _check(got, x, y0, A, B, starts, slots, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 7, 133])
def test_decode_lora_matches_ref(rows, dtype):
    rng = random.Random(rows)
    slots = [rng.randrange(-1, N_SLOTS) for _ in range(rows)]  # per-row slots, not grouped
    A, B = _weights(16, dtype)
    x = torch.randn(rows, IN, dtype=dtype)
    y0 = torch.randn(rows, SLICES[-1], dtype=dtype)
    got = lora_decode(x, y0.clone(), A, B, SLICES, slots)
    _check(got, x, y0, A, B, list(range(rows + 1)), slots, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_segmented_lora_split_over_in_features_matches_ref(dtype):
    # in = 200 with k_chunk 1 (rounded up to the K tile): several chunks, the last one short
    k_in, r = 200, 16
    g = torch.Generator(device="cpu").manual_seed(11)
    A = (torch.randn(N_SLOTS, 3 * r, k_in, generator=g, device="cpu") / k_in ** 0.5).to(DEV, dtype)
    B = (torch.randn(N_SLOTS, SLICES[-1], r, generator=g, device="cpu") * 0.2).to(DEV, dtype)
    starts, slots = [0, 5, 6, 19, 40], [2, -1, 0, 4]
    x = torch.randn(40, k_in, generator=g, device="cpu").to(DEV, dtype)
    y0 = torch.randn(40, SLICES[-1], generator=g, device="cpu").to(DEV, dtype)
    got = lora(x, y0.clone(), A, B, SLICES, starts, slots, k_chunk=1)
    want = lora_ref(x, y0.clone(), A, B, SLICES, starts, slots)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert _err(got, want) < tol * max(1.0, want.abs().max().item())
    assert torch.equal(got[5], y0[5])  # the base segment is left as it was
    assert torch.equal(got, lora(x, y0.clone(), A, B, SLICES, starts, slots, k_chunk=1))  # deterministic


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_lora_split_over_in_features_matches_ref_and_is_batch_invariant(dtype):
    # in = 1100 with k_chunk 1 (rounded up to the 512-wide K tile): three chunks, the last short
    k_in, rows, r = 1100, 6, 16
    g = torch.Generator(device="cpu").manual_seed(7)
    A = (torch.randn(N_SLOTS, 3 * r, k_in, generator=g, device="cpu") / k_in ** 0.5).to(DEV, dtype)
    B = (torch.randn(N_SLOTS, SLICES[-1], r, generator=g, device="cpu") * 0.2).to(DEV, dtype)
    x = torch.randn(rows, k_in, generator=g, device="cpu").to(DEV, dtype)
    y0 = torch.randn(rows, SLICES[-1], generator=g, device="cpu").to(DEV, dtype)
    slots = [3, -1, 0, 3, 4, 1]
    got = lora_decode(x, y0.clone(), A, B, SLICES, slots, k_chunk=1)
    want = lora_ref(x, y0.clone(), A, B, SLICES, list(range(rows + 1)), slots)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert _err(got, want) < tol * max(1.0, want.abs().max().item())
    assert torch.equal(got[1], y0[1])  # a base row is left as it was
    for i in range(rows):  # a row alone gives the bits it gets in the batch
        alone = lora_decode(x[i:i + 1], y0[i:i + 1].clone(), A, B, SLICES, slots[i:i + 1], k_chunk=1)
        assert torch.equal(alone[0], got[i])


def test_device_tensor_metadata_equals_lists():
    starts, slots = _segments("base_mixed", 40, random.Random(3))
    A, B = _weights(16, torch.float32)
    x, y0 = torch.randn(40, IN), torch.randn(40, SLICES[-1])
    a = lora(x, y0.clone(), A, B, SLICES, starts, slots)
    st, sl = torch.tensor(starts, dtype=torch.int32), torch.tensor(slots, dtype=torch.int32)
    longest = max(e - s for s, e in zip(starts, starts[1:]))
    b = lora(x, y0.clone(), A, B, SLICES, st, sl, max_seg_rows=longest)  # same tiling: same bits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = lora(x, y0.clone(), A, B, SLICES, st, sl)  # default bound T: other tiles, same values
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


def test_single_slice_projection_and_y_view():
    """One slice (o_proj-like), y a strided column view of a wider buffer."""
    A = torch.randn(2, 16, IN)
    B = torch.randn(2, 24, 16)
    x = torch.randn(9, IN)
    buf = torch.randn(9, 40)
    y = buf[:, 8:32]
    before = buf.clone()
    lora(x, y, A, B, [0, 24], [0, 4, 9], [1, 0])
    want = lora_ref(x, before[:, 8:32].clone(), A, B, [0, 24], [0, 4, 9], [1, 0])
    torch.testing.assert_close(buf[:, 8:32], want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(buf[:, :8], before[:, :8], rtol=0, atol=0)
    torch.testing.assert_close(buf[:, 32:], before[:, 32:], rtol=0, atol=0)


def test_lora_rejects_bad_metadata():
    A, B = _weights(8, torch.float32)
    x, y = torch.randn(5, IN), torch.randn(5, SLICES[-1])
    with pytest.raises(ValueError, match="seg_starts .* must rise from 0 to T=5"):
        lora(x, y, A, B, SLICES, [0, 3, 4], [0, 1])
    with pytest.raises(ValueError, match=r"seg_slots \[7\] outside \[-1, 5\)"):
        lora(x, y, A, B, SLICES, [0, 5], [7])
    with pytest.raises(ValueError, match="A has shape"):
        lora(x, y, A[:, :8], B, SLICES, [0, 5], [0])
    with pytest.raises(ValueError, match="y has dtype"):
        lora(x, y.to(torch.bfloat16), A, B, SLICES, [0, 5], [0])
    with pytest.raises(ValueError, match="row_slots"):
        lora_decode(x, y, A, B, SLICES, [0, 1])


def _slices_weights(slices: list[int], r_max: int, n_slots: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Random A [n_slots, n * r_max, IN] and non-zero B [n_slots, out_total, r_max], fp32."""
    n = len(slices) - 1
    A = torch.randn(n_slots, n * r_max, IN) / IN ** 0.5
    B = torch.randn(n_slots, slices[-1], r_max) / r_max
    return A, B


@pytest.mark.parametrize("pattern", ["one", "distinct", "base_mixed", "skewed"])
@pytest.mark.parametrize("rows", [1, 7, 133])
def test_ref_block_diagonal_and_per_slice_paths_agree(pattern, rows):
    """lora_ref's two fp32 paths (one expand per segment with a block-diagonal B, or one per slice
    written into y's column blocks) both equal an fp64 loop, within fp32 rounding of its size."""
    from warmfast.kernels.lora import block_diagonal_B

    torch.manual_seed(rows)
    A, B = _weights(16, torch.float32)
    x, y0 = torch.randn(rows, IN), torch.randn(rows, SLICES[-1])
    starts, slots = _segments(pattern, rows, random.Random(rows))
    truth = _lowp_lora(x.double(), y0.double(), A.double(), B.double(), starts, slots)
    tol = 64 * torch.finfo(torch.float32).eps * truth.abs().max().item()  # K <= 40 terms of fp32 products
    per_slice = lora_ref(x, y0.clone(), A, B, SLICES, starts, slots)
    fused = lora_ref(x, y0.clone(), A, B, SLICES, starts, slots, B_blockdiag=block_diagonal_B(B, SLICES))
    for got in (per_slice, fused):
        assert (got.double() - truth).abs().max().item() <= tol


@pytest.mark.parametrize("width", [16, 512])  # one slot's B: 3 * width * 16 elements, either side of the limit
def test_torch_ops_lora_equals_ref_on_both_paths(width):
    """TorchOps.lora (block-diagonal B only while a slot's B is small) adds what lora_ref adds."""
    from types import SimpleNamespace

    from warmfast.engine.backend import BLOCKDIAG_MAX_B, TorchOps
    from warmfast.model.adapters import LoraGroupStack

    slices = [0, 2 * width, 3 * width, 4 * width]
    A, B = _slices_weights(slices, 16)
    assert (B.shape[1] * B.shape[2] < BLOCKDIAG_MAX_B) == (width == 16)
    rows, starts, slots = 9, [0, 2, 5, 9], [1, -1, 0]
    x, y0 = torch.randn(rows, IN, device="cpu"), torch.randn(rows, slices[-1], device="cpu")
    ops = TorchOps(torch.device("cpu"))
    got = ops.lora(x, y0.clone(), LoraGroupStack(A.cpu(), B.cpu(), slices), SimpleNamespace(seg_starts=starts, seg_slots=slots))
    want = lora_ref(x.double(), y0.double(), A.cpu().double(), B.cpu().double(), slices, starts, slots)
    assert (got.double() - want).abs().max().item() <= 64 * torch.finfo(torch.float32).eps * want.abs().max().item()
