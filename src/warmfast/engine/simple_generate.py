"""Simple batched generation: one contiguous KV region per row (a paged cache with one block per
row), varlen prefill, then batched decode steps with mixed adapters and Philox-keyed sampling.

The paged cache with continuous batching and preemption is `generator.py`; this path keeps the
same batch, cache-write and attention interfaces so both run the same forward.
"""
from __future__ import annotations

import hashlib

import torch
from tqdm.auto import tqdm

from warmfast.engine.batch import Batch, build_decode, build_prefill
from warmfast.model import parallel


class ContiguousKVCache:
    """k/v per layer: [rows, max_len, Hk, D]; row r is block r of size max_len."""

    def __init__(self, num_layers: int, rows: int, max_len: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        max_len = 1 << (max_len - 1).bit_length()  # a power of two, as the paged kernel needs
        shape = (rows, max_len, kv_heads, head_dim)
        self.k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.block_size = max_len

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, batch: Batch) -> None:
        # k, v: [T, Hk, D] -> their rows' blocks at their positions
        lens = (batch.cu_seqlens_q[1:] - batch.cu_seqlens_q[:-1]).long()
        row = torch.repeat_interleave(torch.arange(batch.num_rows, device=k.device), lens)
        block = batch.block_tables[row, batch.positions // self.block_size].long()
        offset = batch.positions % self.block_size
        self.k[layer][block, offset] = k
        self.v[layer][block, offset] = v

    def layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[layer], self.v[layer]


def default_request_id(prompt_ids: list[int]) -> int:
    """64-bit key of the prompt tokens: the same prompt draws the same random stream."""
    digest = hashlib.blake2b(bytes(str(prompt_ids), "ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _prompt_ids(engine, req, where: str) -> list[int]:
    if req.messages is not None:
        return engine.tok.chat(req.messages, where)
    if isinstance(req.prompt, str):
        return list(engine.tok.encode_context(req.prompt))
    vocab = engine.model.cfg.vocab_size
    if not req.prompt or any(not isinstance(t, int) or not 0 <= t < vocab for t in req.prompt):
        raise ValueError(f"{where}: prompt token ids must be a non-empty list of ints in [0, {vocab})")
    return list(req.prompt)


def generate(engine, requests, max_batch_size: int, progress: bool = False):
    from warmfast.engine.api import GenerateResult

    prompts, slots = [], []
    for i, req in enumerate(requests):  # validate everything before computing anything
        where = f"GenerateRequest #{i}"
        slots.append(engine.slot(req.adapter, where))
        ids = _prompt_ids(engine, req, where)
        if len(ids) + req.max_new_tokens > engine.max_seq_len:
            raise ValueError(f"{where}: prompt ({len(ids)} tokens) + max_new_tokens "
                             f"({req.max_new_tokens}) = {len(ids) + req.max_new_tokens} exceeds the "
                             f"maximum sequence length {engine.max_seq_len}")
        if req.top_k or req.top_p < 1.0 or req.min_p > 0.0:
            raise ValueError(f"{where}: top_k/top_p/min_p need the paged generation engine; the "
                             "simple generator supports greedy (temperature=0) and temperature")
        prompts.append(ids)

    order = sorted(range(len(requests)), key=lambda i: slots[i])
    results = [None] * len(requests)
    bar = tqdm(total=sum(r.max_new_tokens for r in requests), unit="tok", desc="generate",
               disable=not progress)
    for c in range(0, len(order), max_batch_size):
        chunk = order[c:c + max_batch_size]
        for i, out in zip(chunk, _generate_chunk(engine, [requests[i] for i in chunk],
                                                 [prompts[i] for i in chunk],
                                                 [slots[i] for i in chunk], bar)):
            results[i] = GenerateResult(*out)
    bar.close()
    return results


def _generate_chunk(engine, reqs, prompts, slots, bar):
    model, ops, dev, cfg = engine.model, engine.ops, engine.device, engine.model.cfg
    n = len(reqs)
    max_len = max(len(p) + r.max_new_tokens for p, r in zip(prompts, reqs))
    cache = ContiguousKVCache(cfg.num_layers, n, max_len, cfg.num_kv_heads, cfg.head_dim,
                              engine.dtype, dev)
    tables = torch.arange(n, dtype=torch.int32, device=dev)[:, None]  # row r -> block r
    req_ids = [r.request_id if r.request_id is not None else default_request_id(p)
               for r, p in zip(reqs, prompts)]
    out_ids: list[list[int]] = [[] for _ in range(n)]
    finish = [None] * n
    active = list(range(n))  # rows still generating; stays grouped by slot
    batch = build_prefill(prompts, slots, dev, block_tables=tables)
    hidden = model.forward(ops, batch, cache)
    last = hidden[batch.cu_seqlens_q[1:].long() - 1]  # [n, H]
    step = 0
    while active:
        logits = (last @ model.weights.lm_head.T).float()  # [rows, V] (tensor parallel: [rows, V_r])
        if engine.tp is None:
            tokens = _sample(engine, logits, [reqs[r] for r in active], [req_ids[r] for r in active], step)
        else:  # full logits on every rank; rank 0 samples once and broadcasts
            logits = parallel.gather_logits(logits, engine.tp, cfg.vocab_size)
            tokens = parallel.decide_once(
                engine.tp, lambda: _sample(engine, logits, [reqs[r] for r in active],
                                           [req_ids[r] for r in active], step), len(active), dev)
        still = []
        for r, t in zip(active, tokens):
            out_ids[r].append(t)
            req = reqs[r]
            if t in engine.tok.eos_ids:
                out_ids[r].pop()
                finish[r] = "stop"
            elif req.stop and any(s in engine.tok.decode(out_ids[r]) for s in req.stop):
                finish[r] = "stop"
            elif len(out_ids[r]) >= req.max_new_tokens:
                finish[r] = "length"
            else:
                still.append(r)
        bar.update(len(active))
        active, step = still, step + 1
        if not active:
            break
        positions = [len(prompts[r]) + len(out_ids[r]) - 1 for r in active]
        batch = build_decode([out_ids[r][-1] for r in active], positions, [slots[r] for r in active],
                             tables[active], dev)
        last = model.forward(ops, batch, cache)
    return [_finish_text(engine, reqs[r], out_ids[r], finish[r]) for r in range(n)]


def _sample(engine, logits: torch.Tensor, reqs, req_ids, step: int) -> list[int]:
    temps = [r.temperature for r in reqs]
    greedy = logits.argmax(-1).tolist()
    if all(t == 0 for t in temps):
        return greedy
    t = torch.tensor([max(x, 1e-6) for x in temps], device=logits.device)[:, None]
    probs = torch.softmax(logits / t, dim=-1)
    sampled = engine.ops.sample(probs, [r.seed for r in reqs], req_ids, [step] * len(reqs))
    return [g if temp == 0 else s for g, s, temp in zip(greedy, sampled, temps)]


def _finish_text(engine, req, ids: list[int], reason: str) -> tuple[str, list[int], str]:
    text = engine.tok.decode(ids)
    for s in req.stop:  # cut at the earliest stop string; the stop string itself is not returned
        k = text.find(s)
        if k >= 0:
            text = text[:k]
    return text, ids, reason
