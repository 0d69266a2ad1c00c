"""Llama / Mistral / Qwen2 decoder forward over a packed multi-adapter batch, top to bottom.

The three families differ only in data (Qwen2's q/k/v bias, tied embeddings, head_dim, rope
scaling), so one forward serves all. Every op comes from `ops` (the backend: plain torch or
Triton); every piece of batch metadata comes from `batch`; nothing is global.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from warmfast.model import parallel
from warmfast.model.adapters import LoraGroupStack
from warmfast.model.batch import Batch
from warmfast.model.config import ModelConfig
from warmfast.model.parallel import ROW_PARALLEL, TPGroup
from warmfast.model.weights import LayerWeights, ModelWeights


@dataclass
class Model:
    cfg: ModelConfig
    weights: ModelWeights
    lora: list[dict[str, LoraGroupStack]]  # per layer: fused group -> adapter slots
    inv_freq: torch.Tensor  # [head_dim / 2] fp32, llama3 scaling applied
    # tensor parallel (model/parallel.py): cfg is then this rank's view (its heads, kv heads and
    # intermediate rows; vocab_size stays global), weights and lora hold its slices; None = one
    # process, no collectives
    tp: TPGroup | None = None

    def linear(self, ops, x, weight, layer: int, group: str, batch: Batch, bias=None):
        # x: [T, in] -> [T, out]; base GEMM on every row, then the LoRA delta per adapter segment
        y = F.linear(x, weight, bias)
        stack = self.lora[layer].get(group)
        if stack is not None and any(s >= 0 for s in batch.seg_slots):
            ops.lora(x, y, stack, batch)
        if self.tp is not None and group in ROW_PARALLEL:  # partial sums (base + LoRA) over ranks
            self.tp.all_reduce(y)
        return y

    def attention_block(self, ops, layer: int, w: LayerWeights, x: torch.Tensor, batch: Batch,
                        kv_cache) -> torch.Tensor:
        cfg = self.cfg
        T = x.shape[0]
        qkv = self.linear(ops, x, w.qkv, layer, "qkv", batch, w.qkv_bias)  # [T, q + 2kv]
        q, k, v = qkv.split([cfg.q_size, cfg.kv_size, cfg.kv_size], dim=-1)
        q = q.reshape(T, cfg.num_heads, cfg.head_dim)
        k = k.reshape(T, cfg.num_kv_heads, cfg.head_dim)
        v = v.reshape(T, cfg.num_kv_heads, cfg.head_dim)
        q, k = ops.rope(q, k, batch.positions, self.inv_freq)
        scale = 1.0 / math.sqrt(cfg.head_dim)
        if batch.parts is not None:  # mixed step: decode rows first, then fresh prefill rows
            dec, pre = batch.parts
            nd = dec.num_tokens
            kv_cache.write(layer, k[:nd], v[:nd], dec)
            kv_cache.write(layer, k[nd:], v[nd:], pre)
            o = torch.cat([ops.decode_attention(q[:nd], *kv_cache.layer(layer), dec, scale),
                           ops.attention(q[nd:], k[nd:], v[nd:], pre, scale)])
        else:
            if kv_cache is not None:
                kv_cache.write(layer, k, v, batch)
            if batch.is_decode:  # one query per row against its cached keys
                o = ops.decode_attention(q, *kv_cache.layer(layer), batch, scale)
            else:  # fresh rows: causal attention within each packed row
                o = ops.attention(q, k, v, batch, scale)
        return self.linear(ops, o.reshape(T, cfg.q_size), w.o, layer, "o", batch)

    def mlp_block(self, ops, layer: int, w: LayerWeights, x: torch.Tensor, batch: Batch) -> torch.Tensor:
        gate_up = self.linear(ops, x, w.gate_up, layer, "gate_up", batch)  # [T, 2I]
        return self.linear(ops, ops.silu_mul(gate_up), w.down, layer, "down", batch)  # silu(gate) * up

    def forward(self, ops, batch: Batch, kv_cache=None) -> torch.Tensor:
        """Final-normed hidden states [T, H] of every packed token."""
        cfg, W = self.cfg, self.weights
        if cfg.sliding_window is not None and batch.max_seqlen_k > cfg.sliding_window:
            raise ValueError(f"{cfg.source}: a row of {batch.max_seqlen_k} tokens exceeds the "
                             f"model's sliding_window={cfg.sliding_window}; sliding-window "
                             "attention is not supported yet")
        if self.tp is None:
            h = W.embed[batch.input_ids]  # [T, H]
        else:
            h = parallel.embed(W.embed, batch.input_ids, self.tp, self.cfg.vocab_size)
        residual = None
        for i, w in enumerate(W.layers):
            x, residual = ops.rmsnorm(h, w.input_norm, cfg.rms_norm_eps, residual)
            h = self.attention_block(ops, i, w, x, batch, kv_cache)
            x, residual = ops.rmsnorm(h, w.post_norm, cfg.rms_norm_eps, residual)
            h = self.mlp_block(ops, i, w, x, batch)
        out, _ = ops.rmsnorm(h, W.norm, cfg.rms_norm_eps, residual)
        return out
