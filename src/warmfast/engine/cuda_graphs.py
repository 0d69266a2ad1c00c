"""CUDA graphs of the decode forward: one per batch-size bucket, captured once per engine.

A graph holds the addresses of everything it touches: the weights, the adapter stacks, its
static input buffers and the paged KV pool. The engine keeps one DecodeGraphs (the pool and the
graphs captured so far) across generate() calls, so a bucket is captured once and every later
decode step of that size only copies its rows into the buffers and replays: a timed generate()
call includes no capture unless it meets a bucket for the first time.

Static inputs live in fixed buffers; a step copies its rows into the first n entries and pads
the rest with rows that attend to one position of a scratch block (base model, token 0).
"""
from __future__ import annotations

import torch

from warmfast.model.batch import Batch
from warmfast.errors import InputError

GRAPH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def check_graphs_supported(engine) -> None:
    if engine.device.type != "cuda" or engine.backend != "triton":
        raise InputError(f"generate: cuda_graphs=True needs device cuda and backend triton, "
                         f"got device {engine.device.type} and backend {engine.backend}")
    if engine.tp is not None:
        raise InputError(f"generate: cuda_graphs=True is not supported with tensor parallelism yet "
                         f"(tensor_parallel={engine.tp.size}); decode steps run eagerly there")


def buckets_for(cap: int) -> list[int]:
    """Batch sizes a graph is captured for when a step holds at most `cap` rows."""
    return sorted({b for b in GRAPH_BUCKETS if b < cap} | {cap})


class DecodeGraphs:
    """The engine's decode graphs over one paged KV pool (`num_blocks` managed blocks of
    `block_size` tokens, plus a scratch block at index num_blocks for padding rows)."""

    def __init__(self, engine, cache, num_blocks: int, block_size: int, max_blocks: int):
        self.engine, self.cache = engine, cache
        self.num_blocks, self.block_size, self.max_blocks = num_blocks, block_size, max_blocks
        self.scratch_block = num_blocks
        self.graphs: dict[int, tuple[object, dict, torch.Tensor]] = {}  # bucket -> (graph, buffers, output)
        self.captures = 0  # graphs captured so far (a bench checks its timed calls add none)
        self.busy = False  # a generate() call is using the pool (engine/generator.py)
        self.pool = None

    def fits(self, block_size: int, kv_blocks: int | None) -> bool:
        """Whether a generate() call with these settings can reuse this pool and its graphs."""
        return block_size == self.block_size and kv_blocks in (None, self.num_blocks)

    def _buffers(self, n: int) -> dict:
        dev = self.engine.device
        return dict(ids=torch.zeros(n, dtype=torch.int64, device=dev),
                    pos=torch.zeros(n, dtype=torch.int64, device=dev),
                    tables=torch.full((n, self.max_blocks), self.scratch_block, dtype=torch.int32, device=dev),
                    lens=torch.ones(n, dtype=torch.int32, device=dev),
                    slots=torch.full((n,), -1, dtype=torch.int32, device=dev))

    def _batch(self, buf: dict) -> Batch:
        n, dev = buf["ids"].shape[0], buf["ids"].device
        cu = torch.arange(n + 1, dtype=torch.int32, device=dev)
        # seg_slots [0]: tells the forward that LoRA may apply; the per-row slots decide
        return Batch(input_ids=buf["ids"], positions=buf["pos"], cu_seqlens_q=cu, cu_seqlens_k=cu,
                     max_seqlen_q=1, max_seqlen_k=self.engine.max_seq_len, seg_starts=[0, n],
                     seg_slots=[0], seg_starts_t=torch.tensor([0, n], dtype=torch.int32, device=dev),
                     seg_slots_t=torch.zeros(1, dtype=torch.int32, device=dev), row_slots=[0] * n,
                     block_tables=buf["tables"], seq_lens=buf["lens"], decode=True, row_slots_t=buf["slots"])

    def _capture(self, buf: dict, batch: Batch, ops):
        """(graph, output buffer) of one decode forward over the static buffers."""
        eng = self.engine
        stream = torch.cuda.Stream(eng.device)
        stream.wait_stream(torch.cuda.current_stream(eng.device))
        with torch.cuda.stream(stream):  # warm-up: Triton compiles outside the capture
            eng.model.forward(ops, batch, self.cache)
        torch.cuda.current_stream(eng.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = eng.model.forward(ops, batch, self.cache)
        self.pool = graph.pool()
        return graph, out

    def _fill(self, buf: dict, seqs, tables: list[list[int]]) -> None:
        n, dev = len(seqs), buf["ids"].device
        width = max(len(t) for t in tables)
        buf["ids"].fill_(0)
        buf["pos"].fill_(0)
        buf["tables"].fill_(self.scratch_block)
        buf["lens"].fill_(1)
        buf["slots"].fill_(-1)
        buf["ids"][:n] = torch.tensor([s.output[-1] for s in seqs], device=dev)
        buf["pos"][:n] = torch.tensor([s.num_tokens - 1 for s in seqs], device=dev)
        buf["lens"][:n] = torch.tensor([s.num_tokens for s in seqs], dtype=torch.int32, device=dev)
        buf["slots"][:n] = torch.tensor([s.slot for s in seqs], dtype=torch.int32, device=dev)
        buf["tables"][:n, :width] = torch.tensor([t + [0] * (width - len(t)) for t in tables],
                                                 dtype=torch.int32).to(dev)

    def run(self, seqs, tables: list[list[int]], cap: int) -> torch.Tensor:
        """Hidden states [n, H] of one decode step of `seqs` (block tables `tables`), replayed
        from the graph of the smallest bucket >= n among buckets_for(cap)."""
        n = len(seqs)
        bucket = min(b for b in buckets_for(cap) if b >= n)
        if bucket not in self.graphs:
            buf = self._buffers(bucket)
            batch, ops = self._batch(buf), self.engine.ops  # LoRA per row from buf["slots"]
            graph, out = self._capture(buf, batch, ops)
            self.captures += 1
            # once per bucket: the replay must equal the eager step on the same inputs
            self._fill(buf, seqs, tables)
            eager = self.engine.model.forward(ops, batch, self.cache)[:n].clone()
            graph.replay()
            if not torch.allclose(out[:n].float(), eager.float(), rtol=1e-2, atol=1e-2):
                raise RuntimeError(f"CUDA graph for decode bucket {bucket} disagrees with the eager "
                                   f"step (max abs diff {(out[:n].float() - eager.float()).abs().max():.3g}); "
                                   "run with cuda_graphs=False and report this")
            self.graphs[bucket] = (graph, buf, out)
            return out[:n]
        graph, buf, out = self.graphs[bucket]
        self._fill(buf, seqs, tables)
        graph.replay()
        return out[:n]
