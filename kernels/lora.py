"""Segmented multi-LoRA (shrink + expand) over a batch whose rows are grouped by adapter.

Layout for one projection with n_slices fused output slices (q|k|v, gate|up, or one):
    A: [n_slots, n_slices * r_max, in]   slice j uses rows j*r_max:(j+1)*r_max
    B: [n_slots, out_total, r_max]       already times the adapter's scaling; zero-padded where
                                          the adapter's rank < r_max or it skips a slice
    slice_offsets: [n_slices + 1] column offsets into out_total
    seg_starts: [S + 1] row offsets (0 ... T); seg_slots: [S] slot per segment, -1 = base (no delta)
Semantics, for each segment (s, e, slot >= 0) and slice j (o_j, o_{j+1}):
    y[s:e, o_j:o_{j+1}] += (x[s:e] @ A[slot, j*r:(j+1)*r].T) @ B[slot, o_j:o_{j+1}].T
with the [rows, r] intermediate in fp32.
"""
from __future__ import annotations

import torch


def lora_ref(
    x: torch.Tensor,
    y: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    slice_offsets: list[int],
    seg_starts: list[int],
    seg_slots: list[int],
) -> torch.Tensor:
    """Plain-torch segmented LoRA; adds the delta into y in place and returns y.

    x: [T, in]; y: [T, out_total]; A: [n_slots, n_slices * r_max, in]; B: [n_slots, out_total,
    r_max]; slice_offsets: list[int] (n_slices + 1); seg_starts: list[int] (S + 1);
    seg_slots: list[int] (S, -1 = base model). One shrink and n_slices expands per segment.
    """
    n_slices = len(slice_offsets) - 1
    r_max = B.shape[2]
    if A.shape[1] != n_slices * r_max:
        raise ValueError(f"lora_ref: A has {A.shape[1]} rows, expected n_slices * r_max = {n_slices} * {r_max}")
    if len(seg_starts) != len(seg_slots) + 1:
        raise ValueError(f"lora_ref: {len(seg_starts)} seg_starts for {len(seg_slots)} seg_slots (need S + 1)")
    for seg, slot in enumerate(seg_slots):
        s, e = seg_starts[seg], seg_starts[seg + 1]
        if slot < 0 or e <= s:
            continue
        xa = x[s:e].float() @ A[slot].float().T  # [rows, n_slices * r_max] fp32
        for j in range(n_slices):
            o0, o1 = slice_offsets[j], slice_offsets[j + 1]
            delta = xa[:, j * r_max:(j + 1) * r_max] @ B[slot, o0:o1].float().T  # [rows, o1 - o0]
            y[s:e, o0:o1] += delta.to(y.dtype)
    return y
