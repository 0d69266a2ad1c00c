"""`warmfast serve`: the OpenAI-compatible server (uvicorn over serve/app.py).

The port is bound at once and the model loads on the engine thread meanwhile (503 until ready).
SIGTERM or Ctrl-C drains: new requests get 503, requests in flight finish and their answers go
out, then the process exits 0 (uvicorn's own handler would re-raise the signal: exit -15). A
second signal stops at once (exit 143 / 130). An engine that fails to load exits 2 with one line.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from warmfast.engine.device import DTYPE_NAMES
from warmfast.errors import InputError, Stopped, WarmfastError

log = logging.getLogger("warmfast.serve")
KEY_ENV = "WARMFAST_API_KEY"


def register(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server: the base model and every adapter, "
                                     "batched together (model = the adapter's name)",
                       description="OpenAI-compatible HTTP server over the engine core (base model + adapters in shared batches)")
    p.add_argument("--model", required=True, metavar="DIR", help="model folder (or .gguf file)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                   help="a PEFT LoRA adapter served as model NAME (repeatable)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None,
                   help=f"clients must send 'Authorization: Bearer KEY' (default: ${KEY_ENV} if set; "
                        "the environment keeps it out of the process list)")
    p.add_argument("--served-model-name", default=None, help="the base model's name (default: the folder's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto", choices=DTYPE_NAMES)
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "triton"))
    p.add_argument("--max-seq-len", type=int, default=None)
    p.add_argument("--max-batch-size", type=int, default=64, help="sequences per engine step")
    p.add_argument("--max-batch-tokens", type=int, default=8192, help="prefill tokens per engine step")
    p.add_argument("--kv-blocks", type=int, default=None, help="KV cache blocks (default: sized by the engine)")
    p.add_argument("--max-queued", type=int, default=256,
                   help="engine requests in flight (running + waiting) before new ones get 429")
    p.add_argument("--default-max-tokens", type=int, default=256,
                   help="chat completions without max_tokens / max_completion_tokens")
    p.add_argument("--allow-adapter-updates", action="store_true",
                   help="enable POST /v1/load_lora_adapter and /v1/unload_lora_adapter")
    p.add_argument("--max-adapters", type=int, default=None,
                   help="adapter slots, for adapters loaded later (Engine.from_pretrained max_adapters)")
    p.add_argument("--max-lora-rank", type=int, default=None,
                   help="largest LoRA rank a later load may bring (Engine.from_pretrained max_lora_rank)")
    p.set_defaults(func=run)


def run(args) -> int:
    import uvicorn

    from warmfast.engine.cli import _adapters
    from warmfast.serve.app import ServeSettings, Server, create_app
    from warmfast.serve.loop import EngineLoop

    for name in ("max_batch_size", "max_batch_tokens", "max_queued", "default_max_tokens"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.port < 65536:
        raise InputError(f"--port must be in [0, 65535], got {args.port}")
    adapters = _adapters(args.adapter)
    if not Path(args.model).exists():
        raise InputError(f"--model {args.model}: no such file or folder")
    name = args.served_model_name or Path(args.model).name.removesuffix(".gguf")
    if name in adapters:
        raise InputError(f"--adapter {name}= has the base model's served name; rename it or pass --served-model-name")
    api_key = args.api_key if args.api_key is not None else os.environ.get(KEY_ENV) or None

    import inspect

    import warmfast as wf

    capacity = {k: v for k, v in (("max_adapters", args.max_adapters), ("max_lora_rank", args.max_lora_rank))
                if v is not None}
    for k in capacity:
        if k not in inspect.signature(wf.Engine.from_pretrained).parameters:
            raise InputError(f"--{k.replace('_', '-')}: this warmfast engine has no live adapter loading")

    def load():
        return wf.Engine.from_pretrained(args.model, adapters=adapters, device=args.device, dtype=args.dtype,
                                         backend=args.backend, max_batch_tokens=args.max_batch_tokens,
                                         max_seq_len=args.max_seq_len, **capacity)

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


class _Uvicorn:
    """uvicorn.Server with warmfast's signal handling: the first SIGTERM/SIGINT drains, a second
    one stops at once; the server also stops if the engine fails to load."""

    def __init__(self, config, server):
        import uvicorn

        outer = self
        self.server, self.drained, self.stop_signal = server, False, None

        class Inner(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                previous = {sig: signal.signal(sig, outer._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)

        self.inner = Inner(config)
        self.aloop: asyncio.AbstractEventLoop | None = None

    def _on_signal(self, signum, frame) -> None:
        if self.server.draining:  # the second one: stop now
            self.stop_signal = signum
            self.inner.should_exit = self.inner.force_exit = True
            return
        log.info("warmfast serve: %s: draining %d requests in flight; new ones get 503",
                 signal.Signals(signum).name, self.server.loop.in_flight)
        self.server.draining = True
        if self.aloop is not None:
            self.aloop.call_soon_threadsafe(lambda: self.aloop.create_task(self._drain()))

    async def _drain(self) -> None:
        while self.server.loop.in_flight > 0 and self.server.loop.state != "failed":
            await asyncio.sleep(0.05)
        self.drained = True
        self.inner.should_exit = True

    async def _watch_loading(self) -> None:
        while self.server.loop.state == "loading":
            await asyncio.sleep(0.1)
        if self.server.loop.state == "failed":
            self.inner.should_exit = True

    async def serve(self) -> None:
        self.aloop = asyncio.get_running_loop()
        watcher = self.aloop.create_task(self._watch_loading())
        try:
            await self.inner.serve()
        finally:
            watcher.cancel()
