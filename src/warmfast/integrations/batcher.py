"""Concurrent generate calls gathered into shared Engine.generate batches, on one worker thread.

inspect_ai calls a provider's generate() once per sample, concurrently (up to max_connections);
warmfast is fast when many requests of any adapters share each step. The batcher queues every
call made on one engine (whichever arm it is for), waits `window_s` for more to arrive, and runs
them as one Engine.generate call. Token log-probs come from that same generation pass: a request
with `logprobs=k` gets GenerateResult.logprobs (each generated token's log-prob and the k most
likely tokens at its step) from the engine core, with no second forward. The engine is only ever
driven from the batcher's thread.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from warmfast.engine.requests import GenerateRequest, GenerateResult


@dataclass
class Job:
    request: GenerateRequest  # request.logprobs: None = no log-probs, k = the chosen tokens' and the top k
    future: Future  # resolves to the request's GenerateResult, or to the error of its batch


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
                results: list[GenerateResult] = self.engine.generate([j.request for j in jobs],
                                                                     max_batch_size=self.max_batch_size)
            except Exception as err:  # noqa: BLE001  (handed to every waiting caller, not swallowed)
                for j in jobs:
                    j.future.set_exception(err)
                continue
            for j, r in zip(jobs, results):
                j.future.set_result(r)


_BATCHERS: dict[int, Batcher] = {}
_LOCK = threading.Lock()


def batcher_for(engine, max_batch_size: int = 64, window_s: float = 0.05) -> Batcher:
    """The batcher of this engine (one per engine and process, shared by every arm's provider)."""
    with _LOCK:
        if id(engine) not in _BATCHERS:
            _BATCHERS[id(engine)] = Batcher(engine, max_batch_size, window_s)
        return _BATCHERS[id(engine)]
