"""`warmfast serve`: uvicorn over the app (serve/app.py) and its engine loop (serve/loop.py).

The port is bound at once and the model loads on the engine thread meanwhile (503 until ready).
SIGTERM or Ctrl-C drains: new requests get 503, requests in flight finish and their answers go
out, then the process exits 0 (uvicorn's own handler would re-raise the signal: exit -15). A
second signal stops at once (exit 143 / 130). An engine that fails to load exits 2 with one line.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
from pathlib import Path

import uvicorn

from warmfast.cli_common import adapter_flags
from warmfast.engine.api import Engine
from warmfast.errors import InputError, Stopped, WarmfastError
from warmfast.serve.app import ServeSettings, Server, create_app
from warmfast.serve.loop import EngineLoop

log = logging.getLogger("warmfast.serve")
KEY_ENV = "WARMFAST_API_KEY"


def serve(args) -> int:
    """Run `warmfast serve` with the parsed flags (serve/cli.py) until drained; the exit status."""
    for name in ("max_batch_size", "max_batch_tokens", "max_queued", "default_max_tokens"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.port < 65536:
        raise InputError(f"--port must be in [0, 65535], got {args.port}")
    adapters = adapter_flags(args.adapter)
    if not Path(args.model).exists():
        raise InputError(f"--model {args.model}: no such file or folder")
    name = args.served_model_name or Path(args.model).name.removesuffix(".gguf")
    if name in adapters:
        raise InputError(f"--adapter {name}= has the base model's served name; rename it or pass --served-model-name")
    api_key = args.api_key if args.api_key is not None else os.environ.get(KEY_ENV) or None

    capacity = {k: v for k, v in (("max_adapters", args.max_adapters), ("max_lora_rank", args.max_lora_rank))
                if v is not None}
    for k in capacity:
        if k not in inspect.signature(Engine.from_pretrained).parameters:
            raise InputError(f"--{k.replace('_', '-')}: this warmfast engine has no live adapter loading")

    def load():
        return Engine.from_pretrained(args.model, adapters=adapters, device=args.device, dtype=args.dtype,
                                      backend=args.backend, max_batch_tokens=args.max_batch_tokens,
                                      max_seq_len=args.max_seq_len, tensor_parallel=args.tensor_parallel,
                                      **capacity)

    knobs = {"max_batch_size": args.max_batch_size, "max_batch_tokens": args.max_batch_tokens,
             "kv_blocks": args.kv_blocks}
    loop = EngineLoop(load, knobs, args.max_queued)
    server = Server(loop, ServeSettings(name, api_key, args.allow_adapter_updates, args.default_max_tokens,
                                        {k: str(v) for k, v in adapters.items()}))
    config = uvicorn.Config(create_app(server), host=args.host, port=args.port, log_config=None,
                            log_level="warning", access_log=False, timeout_graceful_shutdown=None)
    http = _Uvicorn(config, server)
    loop.start()
    log.info("warmfast serve: http://%s:%d/v1 (model %r, adapters %s)%s", args.host, args.port, name,
             list(adapters), "" if api_key is None else ", API key required")
    try:
        asyncio.run(http.serve())
    finally:
        loop.stop()
        loop.thread.join(timeout=30)
    if loop.state == "failed":
        raise WarmfastError(f"the engine failed: {loop.failure}")
    if http.stop_signal is not None:  # a second signal: stopped before the drain finished
        raise Stopped(f"stopped by a second signal before draining ended ({loop.in_flight} requests in flight)",
                      128 + http.stop_signal)
    if http.drained:
        log.info("warmfast serve: drained (no requests in flight); exiting")
    return 0


class _Uvicorn(uvicorn.Server):
    """uvicorn's server with warmfast's signal handling: the first SIGTERM/SIGINT drains, a second
    one stops at once; it also stops if the engine fails to load."""

    def __init__(self, config, app_server: Server):
        super().__init__(config)
        self.app_server, self.drained, self.stop_signal = app_server, False, None
        self.aloop: asyncio.AbstractEventLoop | None = None

    @contextlib.contextmanager
    def capture_signals(self):  # uvicorn's own would re-raise the signal after shutting down
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:
        s = self.app_server
        if s.draining:  # the second one: stop now
            self.stop_signal = signum
            self.should_exit = self.force_exit = True
            return
        log.info("warmfast serve: %s: draining %d requests in flight; new ones get 503",
                 signal.Signals(signum).name, s.loop.in_flight)
        s.draining = True
        if self.aloop is not None:
            self.aloop.call_soon_threadsafe(lambda: self.aloop.create_task(self._drain()))

    async def _drain(self) -> None:
        loop = self.app_server.loop
        while loop.in_flight > 0 and loop.state != "failed":
            await asyncio.sleep(0.05)
        self.drained = True
        self.should_exit = True

    async def _watch_loading(self) -> None:
        loop = self.app_server.loop
        while loop.state == "loading":
            await asyncio.sleep(0.1)
        if loop.state == "failed":
            self.should_exit = True

    async def serve(self, sockets=None) -> None:
        self.aloop = asyncio.get_running_loop()
        watcher = self.aloop.create_task(self._watch_loading())
        try:
            await super().serve(sockets)
        finally:
            watcher.cancel()
