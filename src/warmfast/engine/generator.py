"""Generation on the paged KV cache: continuous batching, mixed adapters, Philox-keyed sampling.

    requests -> validated (prompt ids, lengths, sampling settings, KV capacity) before any compute
    loop: scheduler picks a step: a decode of every running sequence, plus in the same forward
          a prefill of the sequences it admits (new, or preempted: prompt + output so far) ->
          rows grouped by adapter slot within each part -> forward on the paged cache -> lm_head at each row's last position -> sample_logits
          keyed by (seed, request id, step = tokens generated so far) -> detokenise, stop checks
    -> results in request order.

A preempted sequence is recomputed by a prefill over its prompt and its output so far; its next
token is drawn at the same step index as it would have been, so preemption changes nothing but
float rounding in the logits. On CUDA, decode steps can replay CUDA graphs captured per batch-size
bucket (`cuda_graphs=True`); each captured graph is checked once against the eager step.
"""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from warmfast.engine.batch import Batch, build_decode, build_mixed, build_prefill
from warmfast.engine.cuda_graphs import DecodeGraphs, check_graphs_supported
from warmfast.engine.detok import IncrementalDetokenizer, OutputState, StopCriteria
from warmfast.engine.kv_cache import PagedKVCache, blocks_for
from warmfast.engine.requests import GenerateResult
from warmfast.engine.sampling import SamplingParams, default_impl, sample_logits
from warmfast.engine.scheduler import Scheduler, SchedulerConfig, Sequence
from warmfast.errors import RequestError
from warmfast.model import parallel


@dataclass(slots=True)
class GeneratorConfig:
    max_batch_size: int = 64  # sequences per step
    max_batch_tokens: int = 8192  # prefill tokens per step
    block_size: int = 16  # tokens per KV block (a power of two: the Triton decode kernel needs it)
    kv_blocks: int | None = None  # None: enough for max_batch_size of the longest requests and their
    #                               growth headroom (CPU),
    #                               or kv_memory_fraction of the free GPU memory (CUDA)
    kv_memory_fraction: float = 0.85
    cuda_graphs: bool = False  # decode steps replay per-bucket CUDA graphs (CUDA only)
    sampler: str | None = None  # "cpp" | "triton"; None: C++ on CPU, Triton on CUDA

    def __post_init__(self):
        for name in ("max_batch_size", "max_batch_tokens", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"generate: {name} must be >= 1, got {getattr(self, name)}")
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"generate: block_size must be a power of two, got {self.block_size}")
        if self.kv_blocks is not None and self.kv_blocks < 1:
            raise ValueError(f"generate: kv_blocks must be >= 1, got {self.kv_blocks}")
        if not 0.0 < self.kv_memory_fraction <= 1.0:
            raise ValueError(f"generate: kv_memory_fraction must be in (0, 1], got {self.kv_memory_fraction}")


@dataclass(slots=True)
class _Request:
    seq: Sequence
    params: SamplingParams
    request_id: int
    out: OutputState


@dataclass(frozen=True, slots=True)
class GenerateStats:
    """How the last Engine.generate call went (Engine.generate_stats): forward steps by kind
    (prefill / decode / mixed), preemptions (raise kv_blocks or lower max_batch_size if many),
    the KV pool size in blocks and the CUDA-graph batch buckets captured."""

    requests: int
    tokens: int
    seconds: float
    steps: dict[str, int]
    preemptions: int
    kv_blocks: int
    cuda_graph_buckets: list[int]
    batch_rows: int = 0  # sequences summed over all steps (each step's decode + prefill rows)
    max_batch_size: int = 1

    @property
    def occupancy(self) -> float:
        """Mean sequences per step over the configured max_batch_size: 1.0 = every step full."""
        n = sum(self.steps.values())
        return self.batch_rows / (n * self.max_batch_size) if n else 0.0

    def summary(self) -> str:
        steps = ", ".join(f"{n} {k}" for k, n in sorted(self.steps.items()))
        return (f"{self.tokens} tokens for {self.requests} requests in {self.seconds:.2f}s "
                f"({self.tokens / max(self.seconds, 1e-9):.0f} tokens/s); steps: {steps}; "
                f"batch occupancy {self.occupancy:.0%} of {self.max_batch_size}; "
                f"{self.preemptions} preemptions; KV pool {self.kv_blocks} blocks")


def default_request_id(prompt_ids: list[int]) -> int:
    """64-bit key of the prompt tokens: the same prompt draws the same random stream under every
    adapter (common random numbers across arms) and in every batch."""
    digest = hashlib.blake2b(bytes(str(prompt_ids), "ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def prompt_ids(engine, req, where: str) -> list[int]:
    """Token ids of a request: chat template for messages=, BOS + text for a string prompt,
    token ids as given (validated against the vocabulary)."""
    if req.messages is not None:
        return engine.tok.chat(req.messages, where)
    if isinstance(req.prompt, str):
        return list(engine.tok.encode_context(req.prompt))
    vocab = engine.model.cfg.vocab_size
    if not req.prompt or any(not isinstance(t, int) or not 0 <= t < vocab for t in req.prompt):
        raise RequestError(f"{where}: prompt token ids must be a non-empty list of ints in [0, {vocab})")
    return list(req.prompt)


def _prepare(engine, requests, cfg: GeneratorConfig) -> list[_Request]:
    """Validate every request before any compute; errors name the request and the values."""
    prepared = []
    for i, req in enumerate(requests):
        try:
            where = f"GenerateRequest #{i}"
            slot = engine.slot(req.adapter, where)
            ids = prompt_ids(engine, req, where)
            if not ids:
                raise RequestError(f"{where}: the prompt is empty (no tokens to condition on)")
            total = len(ids) + req.max_new_tokens
            if total > engine.max_seq_len:
                raise RequestError(f"{where}: prompt ({len(ids)} tokens) + max_new_tokens "
                                   f"({req.max_new_tokens}) = {total} exceeds the maximum sequence length "
                                   f"{engine.max_seq_len}")
            try:
                params = SamplingParams(float(req.temperature), int(req.top_k), float(req.top_p),
                                        float(req.min_p), int(req.seed))
                criteria = StopCriteria(req.max_new_tokens, engine.tok.eos_ids, tuple(req.stop))
            except ValueError as err:
                raise RequestError(f"{where}: {err}") from err
            rid = req.request_id if req.request_id is not None else default_request_id(ids)
            if not 0 <= rid < 2**64:
                raise RequestError(f"{where}: request_id must be in [0, 2^64), got {rid}")
            seq = Sequence(i, ids, req.max_new_tokens, slot)
            prepared.append(_Request(seq, params, rid, OutputState(criteria, IncrementalDetokenizer(engine.tok.hf))))
        except RequestError as err:  # the caller learns which request: a CLI names its input line
            err.index = i
            raise
    return prepared


def _num_blocks(engine, reqs: list[_Request], cfg: GeneratorConfig) -> int:
    if cfg.kv_blocks is not None:
        return cfg.kv_blocks
    c = engine.model.cfg  # under tensor parallelism: this rank's kv heads
    if engine.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(engine.device)
        per_block = PagedKVCache.bytes_per_block(c.num_layers, cfg.block_size, c.num_kv_heads,
                                                 c.head_dim, engine.dtype)
        n = max(1, int(free * cfg.kv_memory_fraction) // per_block)
        tp = getattr(engine, "tp", None)
        if tp is not None:  # every rank must schedule alike: the smallest pool of all ranks
            t = torch.tensor([n], dtype=torch.int64, device=engine.device)
            n = int(tp.all_reduce(t, op=torch.distributed.ReduceOp.MIN).item())
        return n
    need = sorted((blocks_for(r.seq.max_len, cfg.block_size) for r in reqs), reverse=True)
    # plus one block of growth per row: the scheduler's admission headroom, so a request can be
    # admitted beside a full batch of the longest ones
    return max(1, sum(need[:cfg.max_batch_size]) + min(cfg.max_batch_size, len(reqs)))


def _tables(tables: list[list[int]], width: int, device: torch.device) -> torch.Tensor:
    """Block tables padded with block 0 to [B, width] int32 (entries past a row's length unread)."""
    return torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32).to(device)


class Generator:
    """One generate() call: the cache, the scheduler and the step loop."""

    def __init__(self, engine, cfg: GeneratorConfig, reqs: list[_Request]):
        self.engine, self.cfg, self.reqs = engine, cfg, reqs
        c = engine.model.cfg
        # The engine keeps the KV pool of its CUDA graphs (graphs hold the pool's addresses): a
        # call with the same block size (and the same kv_blocks, or none asked) reuses the pool,
        # and with cuda_graphs every bucket captured so far; an eager call reuses the idle pool
        # too, instead of sizing a second one from the memory the first still holds. A pool in
        # use by another call is never shared: this call then gets its own.
        if cfg.cuda_graphs:
            check_graphs_supported(engine)
        held = engine.decode_graphs
        self.pool = held if held is not None and not held.busy and held.fits(cfg.block_size, cfg.kv_blocks) else None
        self.graphs: DecodeGraphs | None = self.pool if cfg.cuda_graphs else None
        if self.pool is not None:
            num_blocks, self.cache = self.pool.num_blocks, self.pool.cache
        else:
            num_blocks = _num_blocks(engine, reqs, cfg)
            # one extra block past the managed pool: the scratch target of CUDA-graph padding rows
            self.cache = PagedKVCache(c.num_layers, num_blocks + 1, cfg.block_size, c.num_kv_heads,
                                      c.head_dim, engine.dtype, engine.device)
            if cfg.cuda_graphs:
                self.graphs = DecodeGraphs(engine, self.cache, num_blocks, cfg.block_size,
                                           blocks_for(engine.max_seq_len, cfg.block_size))
                if held is None or not held.busy:  # the new pool and graphs replace the idle old ones
                    self.pool = engine.decode_graphs = self.graphs
        self.sched = Scheduler(SchedulerConfig(num_blocks, cfg.block_size, cfg.max_batch_size,
                                               cfg.max_batch_tokens))
        for r in reqs:
            self.sched.add(r.seq, f"GenerateRequest #{r.seq.seq_id}")
        self.sampler = cfg.sampler or default_impl(engine.device)
        self.steps: Counter[str] = Counter()  # forward steps by kind: prefill, decode, mixed
        self.batch_rows = 0  # sequences summed over steps (batch occupancy)

    def run(self, bar) -> None:
        by_id = {r.seq.seq_id: r for r in self.reqs}
        while self.sched.has_work():
            work = self.sched.schedule()
            dec = sorted(work.decode, key=lambda s: s.slot)  # adapters as contiguous segments
            pre = sorted(work.prefill, key=lambda s: s.slot)
            self.steps[work.kind] += 1
            if dec and pre:
                last = self._mixed(dec, pre)
            elif pre:
                last = self._prefill(pre)
            else:
                last = self._decode(dec)
            seqs = dec + pre  # the rows of `last`, in order
            self.batch_rows += len(seqs)
            reqs = [by_id[s.seq_id] for s in seqs]
            tokens = self._next_tokens(reqs, last)
            for r, tok in zip(reqs, tokens):
                r.seq.output.append(tok)
                if r.out.append(tok):
                    self.sched.finish(r.seq)
            bar.update(len(seqs))

    def _next_tokens(self, reqs: list[_Request], last: torch.Tensor) -> list[int]:
        """Each row's next token from its last hidden state [B, H], drawn at step = the number of
        tokens it has generated so far (the same step after a preemption)."""
        logits = last @ self.engine.model.weights.lm_head.T  # [B, V] (tensor parallel: [B, V_r])
        keys = ([r.params for r in reqs], [r.request_id for r in reqs],
                [len(r.seq.output) for r in reqs], self.sampler)
        tp = getattr(self.engine, "tp", None)
        if tp is None:
            return sample_logits(logits, *keys)
        # full logits on every rank; rank 0 samples once and broadcasts the tokens
        logits = parallel.gather_logits(logits, tp, self.engine.model.cfg.vocab_size)
        return parallel.decide_once(tp, lambda: sample_logits(logits, *keys), len(reqs), self.engine.device)

    def _prefill_batch(self, seqs: list[Sequence]) -> Batch:
        dev = self.engine.device
        tables = [self.sched.table(s) for s in seqs]
        return build_prefill([s.tokens for s in seqs], [s.slot for s in seqs], dev,
                             _tables(tables, max(len(t) for t in tables), dev))

    def _decode_batch(self, seqs: list[Sequence]) -> Batch:
        dev = self.engine.device
        tables = [self.sched.table(s) for s in seqs]
        return build_decode([s.output[-1] for s in seqs], [s.num_tokens - 1 for s in seqs],
                            [s.slot for s in seqs], _tables(tables, max(len(t) for t in tables), dev), dev)

    def _prefill(self, seqs: list[Sequence]) -> torch.Tensor:
        batch = self._prefill_batch(seqs)
        hidden = self.engine.model.forward(self.engine.ops, batch, self.cache)  # [T, H]
        return hidden[batch.cu_seqlens_q[1:].long() - 1]  # [B, H]

    def _decode(self, seqs: list[Sequence]) -> torch.Tensor:
        if self.graphs is not None and len(seqs) <= self.cfg.max_batch_size:
            return self.graphs.run(seqs, [self.sched.table(s) for s in seqs], self.cfg.max_batch_size)
        return self.engine.model.forward(self.engine.ops, self._decode_batch(seqs), self.cache)  # [B, H]

    def _mixed(self, dec: list[Sequence], pre: list[Sequence]) -> torch.Tensor:
        """One forward: the decode rows and the new rows' prompts (eager, never a CUDA graph)."""
        d, p = self._decode_batch(dec), self._prefill_batch(pre)
        hidden = self.engine.model.forward(self.engine.ops, build_mixed(d, p), self.cache)  # [T, H]
        return torch.cat([hidden[:d.num_tokens], hidden[d.num_tokens + p.cu_seqlens_q[1:].long() - 1]])


@torch.inference_mode()  # as Engine.generate and HF generate: no autograd bookkeeping
def generate(engine, requests, max_batch_size: int = 64, progress: bool = False,
             **knobs) -> list:
    """Generate for every request (see GenerateRequest); results in request order.

    knobs: max_batch_tokens, block_size, kv_blocks, kv_memory_fraction, cuda_graphs, sampler
    (fields of GeneratorConfig)."""
    engine.generate_stats = None
    cfg = GeneratorConfig(max_batch_size=max_batch_size, **knobs)
    reqs = _prepare(engine, requests, cfg)
    if not reqs:
        return []
    gen = Generator(engine, cfg, reqs)
    t0 = time.perf_counter()
    if gen.pool is not None:
        gen.pool.busy = True
    try:
        with tqdm(total=sum(r.seq.max_new_tokens for r in reqs), unit="tok", desc="generate",
                  disable=not progress) as bar:
            gen.run(bar)
    finally:
        if gen.pool is not None:
            gen.pool.busy = False
    engine.generate_stats = GenerateStats(
        requests=len(reqs), tokens=sum(len(r.out.token_ids) for r in reqs),
        seconds=time.perf_counter() - t0, steps=dict(gen.steps),
        preemptions=gen.sched.num_preemptions, kv_blocks=gen.sched.cfg.num_blocks,
        cuda_graph_buckets=sorted(gen.graphs.graphs) if gen.graphs is not None else [],
        batch_rows=gen.batch_rows, max_batch_size=cfg.max_batch_size)
    return [GenerateResult(text=r.out.text, token_ids=list(r.out.token_ids),
                           finish_reason=r.out.finish_reason) for r in reqs]
