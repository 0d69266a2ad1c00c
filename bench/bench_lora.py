"""Segmented multi-LoRA vs lora_ref: fused q|k|v of Llama-8B (4096 -> 4096|1024|1024), rank 16,
8 adapters + base in one batch; plus the per-row decode variant."""
import pytest
import torch

from warmfast.kernels.lora import lora, lora_decode, lora_ref

IN, SLICES, R, SLOTS = 4096, [0, 4096, 5120, 6144], 16, 8


def _weights():
    A = (torch.randn(SLOTS, 3 * R, IN, device="cuda") / IN ** 0.5).to(torch.bfloat16)
    B = (torch.randn(SLOTS, SLICES[-1], R, device="cuda") * 0.02).to(torch.bfloat16)
    return A, B


def _counts(rows_lora: int, rows: int) -> tuple[float, float]:
    flops = 2.0 * rows_lora * (IN * 3 * R + SLICES[-1] * R)
    nbytes = rows_lora * IN * 2 + 2 * rows_lora * SLICES[-1] * 2 + SLOTS * (3 * R * IN + SLICES[-1] * R) * 2
    return flops, nbytes


@pytest.mark.parametrize("impl", ["triton", "ref"])
def test_bench_lora_segmented(measure, impl):
    t = 8192
    per = t // (SLOTS + 1)  # base + 8 adapters, equal shares
    starts = [i * per for i in range(SLOTS + 1)] + [t]
    slots = [-1] + list(range(SLOTS))
    A, B = _weights()
    x = torch.randn(t, IN, dtype=torch.bfloat16, device="cuda")
    y = torch.randn(t, SLICES[-1], dtype=torch.bfloat16, device="cuda")
    if impl == "triton":
        st = torch.tensor(starts, dtype=torch.int32, device="cuda")
        sl = torch.tensor(slots, dtype=torch.int32, device="cuda")
        fn = lambda: lora(x, y, A, B, SLICES, st, sl, max_seg_rows=t - per)  # noqa: E731
    else:
        fn = lambda: lora_ref(x, y, A, B, SLICES, starts, slots)  # noqa: E731
    flops, nbytes = _counts(t - per, t)
    measure(fn, flops=flops, nbytes=nbytes)


@pytest.mark.parametrize("impl", ["triton", "ref"])
def test_bench_lora_decode(measure, impl):
    t = 256
    row_slots = [i % (SLOTS + 1) - 1 for i in range(t)]  # interleaved, base rows included
    A, B = _weights()
    x = torch.randn(t, IN, dtype=torch.bfloat16, device="cuda")
    y = torch.randn(t, SLICES[-1], dtype=torch.bfloat16, device="cuda")
    if impl == "triton":
        rs = torch.tensor(row_slots, dtype=torch.int32, device="cuda")
        fn = lambda: lora_decode(x, y, A, B, SLICES, rs)  # noqa: E731
    else:
        fn = lambda: lora_ref(x, y, A, B, SLICES, list(range(t + 1)), row_slots)  # noqa: E731
    rows_lora = sum(s >= 0 for s in row_slots)
    flops, nbytes = _counts(rows_lora, t)
    measure(fn, flops=flops, nbytes=nbytes)
