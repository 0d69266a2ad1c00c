"""The engine loop: one thread owns the engine and its core; HTTP handlers talk to it by messages.

    handler (asyncio)                          engine thread
    job = loop.submit([req, ...])  ── inbox ─>  core.add_request(...) for each (validation here)
    async for i, out in job: ...   <─ call_soon_threadsafe ─  core.step() outputs, per request
    loop.abort(job)  (client gone)  ── inbox ─>  core.abort(id): its KV blocks are free again

Between two steps the thread takes every message waiting in the inbox, so requests of all clients
and all adapters join the running batch at the next step (continuous batching across clients);
with nothing to do it sleeps on the inbox. Everything that touches the engine (tokenizer calls,
adapter loads) runs on this thread, between steps, through `call`.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from warmfast.engine.requests import RequestOutput
from warmfast.errors import RequestError

log = logging.getLogger("warmfast.serve")


class QueueFull(Exception):
    """More requests in flight than the server admits (HTTP 429)."""


@dataclass(eq=False)
class Job:
    """The engine requests of one HTTP request. `events` receives ("added", None) once all are
    queued (or ("error", exception) if one was refused: then none runs), then (index in the job,
    RequestOutput) as steps make them (and ("error", exception) if the engine loop fails)."""
    aloop: asyncio.AbstractEventLoop
    requests: list
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    ids: list[int] = field(default_factory=list)  # core request ids, set on the engine thread
    open: int = 0  # requests not finished yet

    def post(self, item) -> None:  # from the engine thread
        self.aloop.call_soon_threadsafe(self.events.put_nowait, item)


@dataclass
class Stats:
    """Counters the engine thread keeps (read by /metrics; ints and floats: no lock needed)."""
    requests_finished: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    steps: int = 0
    batch_rows: int = 0  # sequences summed over steps
    last_batch_rows: int = 0
    waiting: int = 0
    running: int = 0


class EngineLoop:
    def __init__(self, load_engine, core_knobs: dict, max_queued: int):
        """load_engine() -> Engine runs on the thread (the server answers 503 meanwhile)."""
        self._load, self._knobs, self.max_queued = load_engine, core_knobs, max_queued
        self.engine = None
        self.core = None
        self.state = "loading"  # loading | ready | failed
        self.failure: str | None = None
        self.stats = Stats()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._owner: dict[int, tuple[Job, int]] = {}  # core id -> (job, index), engine thread only
        self._lock = threading.Lock()
        self._in_flight = 0  # engine requests submitted and not finished (all threads)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="warmfast-engine", daemon=True)

    # ---- the asyncio side --------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def submit(self, requests: list, aloop: asyncio.AbstractEventLoop) -> Job:
        """Queue engine requests as one job; QueueFull when the server holds max_queued already."""
        with self._lock:
            if self._in_flight + len(requests) > self.max_queued:
                raise QueueFull(f"{self._in_flight} requests in flight, at most {self.max_queued} "
                                f"(--max-queued); this one adds {len(requests)}")
            self._in_flight += len(requests)
        job = Job(aloop, requests, open=len(requests))
        self._inbox.put(("add", job))
        return job

    def abort(self, job: Job) -> None:
        """Drop a job's unfinished requests (the client went away)."""
        self._inbox.put(("abort", job))

    def call(self, fn, aloop: asyncio.AbstractEventLoop) -> asyncio.Future:
        """fn(engine) on the engine thread between steps; its result (or exception) in the future."""
        fut = aloop.create_future()
        self._inbox.put(("call", (fn, fut, aloop)))
        return fut

    def stop(self) -> None:
        self._inbox.put(("stop", None))

    # ---- the engine thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.engine = self._load()
            self.core = self.engine.core(stream=True, **self._knobs)
        except Exception as err:  # reported by the server (one line) and the process exits 2
            self.failure = f"{type(err).__name__}: {err}"
            self.state = "failed"
            self.ready.set()
            return
        self.state = "ready"
        self.ready.set()
        try:
            while True:
                if not self._take_messages(block=not self.core.has_unfinished()):
                    break
                if self.core.has_unfinished():
                    self._step()
        except Exception as err:  # a bug in the engine: every open job learns it, the server stops
            log.exception("warmfast serve: the engine loop failed")
            self.failure = f"{type(err).__name__}: {err}"
            self.state = "failed"
            for job in {j for j, _ in self._owner.values()}:
                job.post(("error", err))
        finally:
            self.core.close()

    def _take_messages(self, block: bool) -> bool:
        """Handle every waiting message (waiting for one if block); False on stop."""
        while True:
            try:
                kind, item = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if kind == "stop":
                return False
            if kind == "add":
                self._add(item)
            elif kind == "abort":
                self._abort(item)
            elif kind == "call":
                fn, fut, aloop = item
                try:
                    result, error = fn(self.engine), None
                except Exception as err:  # handed to the handler, which answers it
                    result, error = None, err
                aloop.call_soon_threadsafe(_settle, fut, result, error)

    def _add(self, job: Job) -> None:
        i = 0
        try:
            for i, req in enumerate(job.requests):
                rid = self.core.add_request(req)
                job.ids.append(rid)
                self._owner[rid] = (job, i)
            job.post(("added", None))
        except RequestError as err:  # the whole job is refused: its added requests go again
            for rid in job.ids:
                self.core.abort(rid)
                del self._owner[rid]
            self._release(len(job.requests))
            job.open = 0
            msg = str(err)  # "GenerateRequest #<core id>: ..." names the request by its place here
            msg = msg.split(": ", 1)[1] if msg.startswith(type(job.requests[i]).__name__ + " #") else msg
            job.post(("error", type(err)(f"choice {i}: {msg}" if len(job.requests) > 1 else msg)))

    def _abort(self, job: Job) -> None:
        dropped = 0
        for rid in job.ids:
            if self._owner.get(rid, (None,))[0] is job:
                self.core.abort(rid)
                del self._owner[rid]
                dropped += 1
        job.open = 0
        self._release(dropped)
        self.stats.waiting, self.stats.running = len(self.core.sched.waiting), len(self.core.sched.running)

    def _release(self, n: int) -> None:
        with self._lock:
            self._in_flight -= n

    def _step(self) -> None:
        sched = self.core.sched
        rows_before = self.core.batch_rows
        outputs: list[RequestOutput] = self.core.step()
        st = self.stats
        st.steps += 1
        st.last_batch_rows = self.core.batch_rows - rows_before
        st.batch_rows = self.core.batch_rows
        st.prompt_tokens = self.core.tokens_fed
        st.waiting, st.running = len(sched.waiting), len(sched.running)
        for out in outputs:
            st.generated_tokens += len(out.token_ids)
            owner = self._owner.get(out.request_id)
            if owner is None:
                continue
            job, i = owner
            if out.finished:
                del self._owner[out.request_id]
                job.open -= 1
                st.requests_finished += 1
                self._release(1)
            job.post((i, out))


def _settle(fut: asyncio.Future, result, error) -> None:
    if fut.cancelled():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


def wait_ready(loop: EngineLoop, timeout_s: float | None = None) -> bool:
    """Block until the engine is loaded (or failed); False on timeout."""
    t0 = time.monotonic()
    while not loop.ready.wait(0.1):
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            return False
    return True
