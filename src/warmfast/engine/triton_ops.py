"""The `triton` backend: the same ops as TorchOps, run by the Triton launchers of `kernels/`.

Batch metadata already lives on the device (`Batch.seg_starts_t` etc.), so no op reads it back
to the host. Attention uses flash-attn's varlen kernel when it imports on CUDA, else our own.
"""
from __future__ import annotations

import torch

from warmfast.engine.batch import Batch
from warmfast.kernels import activation, attention, logprob, lora, norm, rope


class TritonOps:
    name = "triton"

    def __init__(self, device: torch.device):
        self.device = device
        self.attention_impl = "auto"

    def rmsnorm(self, x, weight, eps, residual=None):
        return norm.rmsnorm(x, weight, eps, residual)

    def silu_mul(self, gate_up):
        return activation.silu_mul(gate_up)  # one pass instead of torch's three

    def rope(self, q, k, positions, inv_freq):
        return rope.rope(q, k, positions, inv_freq)  # in place on views of the fused qkv output

    def attention(self, q, k, v, batch: Batch, scale: float):
        return attention.varlen_attention(q, k, v, batch.cu_seqlens_q, batch.cu_seqlens_k,
                                          batch.max_seqlen_q, batch.max_seqlen_k, scale,
                                          impl=self.attention_impl)

    def decode_attention(self, q, k_cache, v_cache, batch: Batch, scale: float):
        return attention.paged_decode_attention(q, k_cache, v_cache, batch.block_tables,
                                                batch.seq_lens, scale)

    def lora(self, x, y, stack, batch: Batch):
        if batch.is_decode:  # one token per row: the per-row kernel, eager and in CUDA graphs alike
            return lora.lora_decode(x, y, stack.A, stack.B, stack.slice_offsets, batch.row_slots_t)
        max_rows = max(e - s for s, e in zip(batch.seg_starts, batch.seg_starts[1:]))
        return lora.lora(x, y, stack.A, stack.B, stack.slice_offsets, batch.seg_starts_t,
                         batch.seg_slots_t, max_seg_rows=max_rows)

    def logprob(self, hidden, weight, targets):
        lp, am, _ = logprob.logprob(hidden.contiguous(), weight, targets)
        return lp, am
