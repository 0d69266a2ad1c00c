"""Concurrent generate calls gathered into shared Engine.generate batches, on one worker thread.

inspect_ai calls a provider's generate() once per sample, concurrently (up to max_connections);
warmfast is fast when many requests of any adapters share each step. The batcher queues every
call made on one engine (whichever arm it is for), waits `window_s` for more to arrive, and runs
them as one Engine.generate call; token log-probs, where asked, come from one extra forward per
request in the same thread. The engine is only ever driven from that thread.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import torch

from warmfast.engine.batch import build_prefill


@dataclass
class Job:
    request: object  # warmfast.GenerateRequest
    prompt_ids: list[int]
    top_logprobs: int | None  # None: no log-probs; 0: the chosen tokens'; k: also the k most likely
    future: Future


@dataclass
class Done:
    result: object  # warmfast.GenerateResult
    logprobs: list[tuple[float, list[tuple[int, float]]]] | None  # per output token: lp, top-k


@torch.inference_mode()
def output_logprobs(engine, prompt_ids: list[int], output_ids: list[int], adapter, top: int):
    """Log-prob of each output token given the prompt and the output before it, and the `top` most
    likely tokens at that position: one forward over prompt + output[:-1] under `adapter`."""
    if not output_ids:
        return []
    if engine.tp is not None:
        raise ValueError("log-probs through the inspect provider are not available with tensor parallelism")
    tokens = prompt_ids + output_ids[:-1]
    batch = build_prefill([tokens], [engine.slot(adapter, "logprobs")], engine.device)
    hidden = engine.model.forward(engine.ops, batch)[len(prompt_ids) - 1:]  # [n_out, H]
    lp = torch.log_softmax((hidden @ engine.model.weights.lm_head.T).float(), dim=-1)  # [n_out, V]
    chosen = lp.gather(1, torch.tensor(output_ids, device=lp.device)[:, None])[:, 0].tolist()
    if top:
        vals, ids = lp.topk(top, dim=-1)
        tops = [list(zip(i, v)) for i, v in zip(ids.tolist(), vals.tolist())]
    else:
        tops = [[] for _ in output_ids]
    return list(zip(chosen, tops))


class Batcher:
    def __init__(self, engine, max_batch_size: int = 64, window_s: float = 0.05):
        self.engine, self.max_batch_size, self.window_s = engine, max_batch_size, window_s
        self.queue: queue.Queue[Job] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="warmfast-batcher", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Future:
        self.queue.put(job)
        return job.future

    def _gather(self) -> list[Job]:
        jobs = [self.queue.get()]  # wait for the first, then for as long as more keep arriving
        while len(jobs) < self.max_batch_size:
            try:
                jobs.append(self.queue.get(timeout=self.window_s))
            except queue.Empty:
                break
        return jobs

    def _loop(self) -> None:
        while True:
            jobs = self._gather()
            try:
                results = self.engine.generate([j.request for j in jobs], max_batch_size=self.max_batch_size)
                done = []
                for j, r in zip(jobs, results):
                    lps = None
                    if j.top_logprobs is not None:
                        lps = output_logprobs(self.engine, j.prompt_ids, r.token_ids, j.request.adapter,
                                              j.top_logprobs)
                    done.append(Done(r, lps))
            except Exception as err:  # noqa: BLE001  (handed to every waiting caller, not swallowed)
                for j in jobs:
                    j.future.set_exception(err)
                continue
            for j, d in zip(jobs, done):
                j.future.set_result(d)


_BATCHERS: dict[int, Batcher] = {}
_LOCK = threading.Lock()


def batcher_for(engine, max_batch_size: int = 64, window_s: float = 0.05) -> Batcher:
    """The batcher of this engine (one per engine and process, shared by every arm's provider)."""
    with _LOCK:
        if id(engine) not in _BATCHERS:
            _BATCHERS[id(engine)] = Batcher(engine, max_batch_size, window_s)
        return _BATCHERS[id(engine)]
