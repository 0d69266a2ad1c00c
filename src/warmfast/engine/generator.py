"""Engine.generate and Engine.stream: loops over the engine core (engine/core.py).

    requests -> each validated and queued (prompt ids, lengths, sampling settings, KV capacity)
    before any compute -> core.step() until every request is done -> results in request order
    (generate) or each request's new tokens as they come (stream).

The core does the rest: continuous batching on the paged KV cache, mixed adapters, preemption by
recomputation (a preempted sequence's next token is drawn at the same step index, so preemption
changes nothing but float rounding in the logits), CUDA-graph decode steps (`cuda_graphs=True`).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from tqdm.auto import tqdm

from warmfast.engine.core import CoreConfig, EngineCore
from warmfast.engine.prepare import default_request_id, prompt_ids  # noqa: F401 (used by integrations)
from warmfast.engine.requests import GenerateRequest, RequestOutput
from warmfast.errors import RequestError


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


def stats_of(core: EngineCore, requests: int, tokens: int, seconds: float) -> GenerateStats:
    return GenerateStats(
        requests=requests, tokens=tokens, seconds=seconds, steps=dict(core.steps),
        preemptions=core.sched.num_preemptions, kv_blocks=core.num_blocks,
        cuda_graph_buckets=sorted(core.graphs.graphs) if core.graphs is not None else [],
        batch_rows=core.batch_rows, max_batch_size=core.cfg.max_batch_size)


def open_core(engine, requests: list, max_batch_size: int, stream: bool = False, **knobs) -> EngineCore:
    """A core holding every request (validated first, all of them, before any compute): request i
    has id i. knobs: max_batch_tokens, block_size, kv_blocks, kv_memory_fraction, cuda_graphs,
    sampler (fields of CoreConfig). A CPU pool is sized for these requests."""
    cfg = CoreConfig(max_batch_size=max_batch_size, stream=stream, **knobs)
    lens = []
    for i, req in enumerate(requests):
        if isinstance(req, GenerateRequest):
            ids = _ids_or_error(engine, req, i)
            lens.append(len(ids) + req.max_new_tokens - 1)
    core = EngineCore(engine, cfg, max_lens=lens)
    try:
        for i, req in enumerate(requests):
            core.add_request(req, request_id=i)
    except BaseException:
        core.close()
        raise
    return core


def _ids_or_error(engine, req, i: int) -> list[int]:
    try:
        return prompt_ids(engine, req, f"GenerateRequest #{i}")
    except RequestError as err:
        err.index = i
        raise


def generate(engine, requests, max_batch_size: int = 64, progress: bool = False, **knobs) -> list:
    """Generate for every request (see GenerateRequest); results in request order."""
    engine.generate_stats = None
    if not requests:
        return []
    core = open_core(engine, requests, max_batch_size, **knobs)
    results: list = [None] * len(requests)
    t0 = time.perf_counter()
    try:
        with tqdm(total=sum(r.max_new_tokens for r in requests), unit="tok", desc="generate",
                  disable=not progress) as bar:
            while core.has_unfinished():
                outs = core.step()
                bar.update(len(outs))
                for out in outs:
                    if out.finished:
                        results[out.request_id] = out.result
    finally:
        core.close()
    engine.generate_stats = stats_of(core, len(requests), sum(len(r.token_ids) for r in results),
                                     time.perf_counter() - t0)
    return results


def stream(engine, requests, max_batch_size: int = 64, **knobs) -> Iterator[RequestOutput]:
    """Each request's new tokens as each step makes them (RequestOutput.request_id = its index in
    `requests`; the last output of a request has finished=True and its result). The requests are
    validated now, before this returns; the steps run as the iterator is read."""
    engine.generate_stats = None
    if not requests:
        return iter(())
    return _drain(engine, open_core(engine, requests, max_batch_size, stream=True, **knobs), len(requests))


def _drain(engine, core: EngineCore, n: int) -> Iterator[RequestOutput]:
    t0, tokens = time.perf_counter(), 0
    try:
        while core.has_unfinished():
            for out in core.step():
                tokens += len(out.token_ids)
                yield out
    finally:  # also when the caller stops reading: the pool is handed back
        core.close()
    engine.generate_stats = stats_of(core, n, tokens, time.perf_counter() - t0)
