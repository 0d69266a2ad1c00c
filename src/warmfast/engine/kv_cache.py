"""Paged KV cache: a pool of fixed-size blocks, a free list, and one block table per sequence.

Token t of a sequence lives in block table[t // block_size] at offset t % block_size. Blocks are
handed out from a free list and returned whole when a sequence finishes or is preempted, so a
long and a short sequence share the pool without reserving max_seq_len each.
"""
from __future__ import annotations

from collections import deque

import torch

from warmfast.engine.batch import Batch


def blocks_for(num_tokens: int, block_size: int) -> int:
    """Blocks needed to hold num_tokens positions."""
    return -(-num_tokens // block_size)


class BlockManager:
    """Free list + per-sequence block tables over `num_blocks` blocks of `block_size` tokens."""

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"BlockManager needs num_blocks >= 1 and block_size >= 1, got "
                             f"num_blocks={num_blocks}, block_size={block_size}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.free: deque[int] = deque(range(num_blocks))
        self.tables: dict[int, list[int]] = {}

    @property
    def num_free(self) -> int:
        return len(self.free)

    def table(self, seq_id: int) -> list[int]:
        return self.tables[seq_id]

    def shortfall(self, seq_id: int, num_tokens: int) -> int:
        """How many more blocks seq_id needs to hold num_tokens positions (0 if none)."""
        have = len(self.tables.get(seq_id, ()))
        return max(0, blocks_for(num_tokens, self.block_size) - have)

    def can_hold(self, seq_id: int, num_tokens: int) -> bool:
        return self.shortfall(seq_id, num_tokens) <= self.num_free

    def reserve(self, seq_id: int, num_tokens: int) -> list[int]:
        """Grow seq_id's table to hold num_tokens positions; returns the table."""
        need = self.shortfall(seq_id, num_tokens)
        if need > self.num_free:
            raise RuntimeError(f"KV cache: sequence {seq_id} needs {need} more blocks for "
                               f"{num_tokens} tokens but only {self.num_free} are free")
        table = self.tables.setdefault(seq_id, [])
        table.extend(self.free.popleft() for _ in range(need))
        return table

    def release(self, seq_id: int) -> None:
        """Return all of seq_id's blocks to the free list (no-op if it holds none)."""
        self.free.extend(self.tables.pop(seq_id, ()))

    def check(self) -> None:
        """Every block is either free or owned by exactly one sequence (tests call this)."""
        owned = [b for t in self.tables.values() for b in t]
        every = sorted(owned + list(self.free))
        if every != list(range(self.num_blocks)):
            raise AssertionError(f"KV block accounting broken: {len(owned)} owned + {len(self.free)} "
                                 f"free != {self.num_blocks}, or a block is held twice")


class PagedKVCache:
    """k/v per layer: [num_blocks, block_size, Hk, D] tensors addressed through block tables."""

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, kv_heads: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device):
        shape = (num_blocks, block_size, kv_heads, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.block_size = block_size

    @staticmethod
    def bytes_per_block(num_layers: int, block_size: int, kv_heads: int, head_dim: int,
                        dtype: torch.dtype) -> int:
        return 2 * num_layers * block_size * kv_heads * head_dim * torch.tensor([], dtype=dtype).element_size()

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, batch: Batch) -> None:
        """k, v: [T, Hk, D] -> each token's block at its position (batch.block_tables)."""
        if batch.is_decode:  # one token per row: no host sync, so this is CUDA-graph safe
            row = torch.arange(k.shape[0], device=k.device)
        else:
            lens = (batch.cu_seqlens_q[1:] - batch.cu_seqlens_q[:-1]).long()
            row = torch.repeat_interleave(torch.arange(batch.num_rows, device=k.device), lens)
        block = batch.block_tables[row, batch.positions // self.block_size].long()
        offset = batch.positions % self.block_size
        self.k[layer][block, offset] = k
        self.v[layer][block, offset] = v

    def layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[layer], self.v[layer]
