"""The input of one forward step: packed rows, adapter segments, KV cache addressing.

The model reads it (model/llama.py, model/gpt2.py); the engine builds it once per step
(engine/batch.py: build_prefill, build_decode, build_mixed) and passes it down explicitly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(slots=True)
class Batch:
    input_ids: torch.Tensor  # [T] int64, all rows packed
    positions: torch.Tensor  # [T] int64, position of each token in its row
    cu_seqlens_q: torch.Tensor  # [B+1] int32, row offsets of the new tokens
    cu_seqlens_k: torch.Tensor  # [B+1] int32, row offsets of keys (== q for a fresh prefill)
    max_seqlen_q: int
    max_seqlen_k: int
    seg_starts: list[int]  # [S+1] token offsets of adapter segments
    seg_slots: list[int]  # [S] adapter slot of each segment, -1 = base model
    seg_starts_t: torch.Tensor  # the same two lists as int32 tensors on the device, for kernels
    seg_slots_t: torch.Tensor
    row_slots: list[int]  # [B] adapter slot of each row
    # KV cache addressing (None when nothing is cached, e.g. scoring): row b's position p lives
    # in block block_tables[b, p // block_size] at offset p % block_size
    block_tables: torch.Tensor | None = None  # [B, max_blocks] int32
    seq_lens: torch.Tensor | None = None  # [B] int32, keys per row after this step
    decode: bool = False  # one query per row, attending to the cache instead of fresh keys
    # a mixed step (build_mixed): (decode part, prefill part), the decode rows' tokens first; the
    # model writes the cache and attends part by part, everything else runs on the whole batch
    parts: tuple[Batch, Batch] | None = None
    # decode batches: row_slots as an int32 device tensor [B], for the per-row LoRA kernel (rows
    # of a decode step need not be grouped, and a CUDA graph's buffer serves any mix of adapters)
    row_slots_t: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_rows(self) -> int:
        return len(self.row_slots)

    @property
    def is_decode(self) -> bool:
        return self.decode
