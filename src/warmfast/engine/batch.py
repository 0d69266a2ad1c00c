"""The packed batch of one forward step, built once and passed down explicitly.

Rows (sequences) are packed end to end without padding and grouped by adapter slot, so every
LoRA delta is one contiguous segment: `seg_starts`/`seg_slots` describe them over tokens. The
`Batch` type is the forward's input and lives with it (model/batch.py); the engine builds it here.
"""
from __future__ import annotations

import torch

from warmfast.model.batch import Batch


def segments(row_lens: list[int], row_slots: list[int]) -> tuple[list[int], list[int]]:
    """Token offsets and slots of runs of equal adapter slot. Rows must already be grouped."""
    starts, slots, offset = [0], [], 0
    for n, slot in zip(row_lens, row_slots):
        if slots and slots[-1] == slot:
            starts[-1] = offset + n
        else:
            if slot in slots:
                raise ValueError(f"rows are not grouped by adapter: slot {slot} appears in two runs "
                                 f"(row slots {row_slots})")
            slots.append(slot)
            starts.append(offset + n)
        offset += n
    return starts, slots


def build_prefill(rows: list[list[int]], row_slots: list[int], device: torch.device,
                  block_tables: torch.Tensor | None = None) -> Batch:
    """Pack token rows (already grouped by slot) into one varlen batch of fresh sequences."""
    lens = [len(r) for r in rows]
    ids = torch.tensor([t for r in rows for t in r], dtype=torch.int64)
    pos = torch.cat([torch.arange(n, dtype=torch.int64) for n in lens])
    cu = torch.zeros(len(rows) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lens, dtype=torch.int32), 0)
    seg_starts, seg_slots = segments(lens, row_slots)
    cu = cu.to(device)
    return Batch(input_ids=ids.to(device), positions=pos.to(device), cu_seqlens_q=cu, cu_seqlens_k=cu,
                 max_seqlen_q=max(lens), max_seqlen_k=max(lens), seg_starts=seg_starts,
                 seg_slots=seg_slots,
                 seg_starts_t=torch.tensor(seg_starts, dtype=torch.int32, device=device),
                 seg_slots_t=torch.tensor(seg_slots, dtype=torch.int32, device=device),
                 row_slots=list(row_slots), block_tables=block_tables,
                 seq_lens=None if block_tables is None else torch.tensor(lens, dtype=torch.int32, device=device))


def build_decode(tokens: list[int], positions: list[int], row_slots: list[int],
                 block_tables: torch.Tensor, device: torch.device) -> Batch:
    """One new token per row; row b attends to its positions[b] + 1 cached keys."""
    n = len(tokens)
    ones = [1] * n
    seg_starts, seg_slots = segments(ones, row_slots)
    cu = torch.arange(n + 1, dtype=torch.int32, device=device)
    seq_lens = torch.tensor([p + 1 for p in positions], dtype=torch.int32, device=device)
    return Batch(input_ids=torch.tensor(tokens, dtype=torch.int64, device=device),
                 positions=torch.tensor(positions, dtype=torch.int64, device=device),
                 cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=1, max_seqlen_k=max(positions) + 1,
                 seg_starts=seg_starts, seg_slots=seg_slots,
                 seg_starts_t=torch.tensor(seg_starts, dtype=torch.int32, device=device),
                 seg_slots_t=torch.tensor(seg_slots, dtype=torch.int32, device=device),
                 row_slots=list(row_slots), block_tables=block_tables, seq_lens=seq_lens,
                 decode=True, row_slots_t=torch.tensor(row_slots, dtype=torch.int32, device=device))


def build_mixed(dec: Batch, pre: Batch) -> Batch:
    """One forward for a decode batch and a prefill batch: tokens, positions and adapter segments
    concatenated (an adapter may then own one segment in each part), attention metadata kept per
    part in `parts`. Row order: dec's rows, then pre's."""
    if not dec.is_decode or pre.is_decode or pre.block_tables is None:
        raise ValueError("build_mixed: want a decode batch and a prefill batch with block tables")
    nd = dec.num_tokens
    seg_starts = dec.seg_starts + [nd + s for s in pre.seg_starts[1:]]
    seg_slots = dec.seg_slots + pre.seg_slots
    dev = dec.input_ids.device
    cu = torch.cat([dec.cu_seqlens_q[:-1], pre.cu_seqlens_q + nd])
    return Batch(input_ids=torch.cat([dec.input_ids, pre.input_ids]),
                 positions=torch.cat([dec.positions, pre.positions]), cu_seqlens_q=cu, cu_seqlens_k=cu,
                 max_seqlen_q=pre.max_seqlen_q, max_seqlen_k=max(dec.max_seqlen_k, pre.max_seqlen_k),
                 seg_starts=seg_starts, seg_slots=seg_slots,
                 seg_starts_t=torch.tensor(seg_starts, dtype=torch.int32, device=dev),
                 seg_slots_t=torch.tensor(seg_slots, dtype=torch.int32, device=dev),
                 row_slots=dec.row_slots + pre.row_slots, parts=(dec, pre))
