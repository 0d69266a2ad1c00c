"""The OpenAI-compatible HTTP app (FastAPI) over one engine loop (serve/loop.py).

Every request in flight, whatever its adapter (`model` = the base model's served name or an
adapter's name), joins the same engine batches. Bodies are parsed by pydantic here, so a bad body
is a 400 in OpenAI's error shape (never FastAPI's 422). While loading or draining the server
answers 503 with Retry-After; past --max-queued requests in flight, 429 with Retry-After.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from warmfast.engine.requests import GenerateResult
from warmfast.engine.tokens import TokenizerCache
from warmfast.errors import InputError, RequestError, UnknownAdapterError, WarmfastError
from warmfast.serve import responses as R
from warmfast.serve.errors import APIError, from_validation
from warmfast.serve.loop import EngineLoop, Job, QueueFull
from warmfast.serve.metrics import Metrics
from warmfast.serve.protocol import (ChatRequest, CompletionRequest, DetokenizeRequest, LoadAdapterRequest,
                                     TokenizeRequest, UnloadAdapterRequest)

log = logging.getLogger("warmfast.serve")
OPEN_PATHS = ("/health", "/metrics")


@dataclass
class ServeSettings:
    model_name: str  # the base model's served name
    api_key: str | None = None
    allow_adapter_updates: bool = False
    default_max_tokens: int = 256  # chat requests without max_tokens / max_completion_tokens
    adapter_paths: dict[str, str] = field(default_factory=dict)


class Server:
    """The app's state: the engine loop, the HTTP side's own tokenizer, draining."""

    def __init__(self, loop: EngineLoop, settings: ServeSettings):
        self.loop, self.settings = loop, settings
        self.draining = False
        self.tok = None  # TokenizerCache of the HTTP side (the engine thread keeps its own)
        self.fmt: R.Formatter | None = None
        self.created = int(time.time())
        self.metrics = Metrics(self)

    # ---- checks ------------------------------------------------------------------------------
    def check_ready(self) -> None:
        if self.draining:
            raise APIError(503, "the server is shutting down (draining); retry on another instance",
                           retry_after=5)
        if self.loop.state == "loading":
            raise APIError(503, "the model is still loading; retry shortly", retry_after=2)
        if self.loop.state == "failed":
            raise APIError(503, f"the engine failed: {self.loop.failure}")
        if self.tok is None:  # first request after loading: the HTTP side's tokenizer
            self.tok = TokenizerCache(self.loop.engine.tok.hf.name_or_path)
            self.fmt = R.Formatter(self.tok)

    def adapter_of(self, model: str) -> str | None:
        if model == self.settings.model_name:
            return None
        if model in self.loop.engine.adapter_names:
            return model
        raise APIError(404, f"The model `{model}` does not exist. Served: "
                            f"{[self.settings.model_name] + list(self.loop.engine.adapter_names)}",
                       param="model", code="model_not_found")

    def submit(self, requests: list) -> Job:
        try:
            return self.loop.submit(requests, asyncio.get_running_loop())
        except QueueFull as err:
            raise APIError(429, f"the server is busy: {err}; retry later", code="queue_full",
                           retry_after=1) from None

    async def started(self, job: Job) -> None:
        """Wait until the engine queued every request of the job; its refusal as an APIError."""
        try:
            kind, err = await job.events.get()
        except asyncio.CancelledError:
            self.loop.abort(job)
            raise
        if kind == "error":
            raise engine_error(err)

    async def collect(self, job: Job, request: Request) -> list[GenerateResult]:
        """Every result of the job; aborts it if the client goes away while waiting."""
        results: list = [None] * len(job.requests)
        left, checked = len(results), time.monotonic()
        try:
            while left:
                try:
                    i, out = await asyncio.wait_for(job.events.get(), timeout=0.25)
                except asyncio.TimeoutError:
                    i = out = None
                if time.monotonic() - checked > 0.25:  # outputs may come every step: look anyway
                    checked = time.monotonic()
                    if await request.is_disconnected():
                        self.loop.abort(job)
                        raise APIError(499, "the client disconnected")
                if i is None:
                    continue
                if i == "error":
                    raise engine_error(out)
                if out.finished:
                    results[i], left = out.result, left - 1
        except asyncio.CancelledError:
            self.loop.abort(job)
            raise
        return results

    # ---- tokenizing on the HTTP side ---------------------------------------------------------
    def prompt_ids(self, prompt, where: str) -> list[int]:
        if isinstance(prompt, str):
            return list(self.tok.encode_context(prompt))
        return list(prompt)  # token ids as given; the engine checks them against the vocabulary

    def chat_ids(self, body: ChatRequest) -> list[int]:
        try:
            return self.tok.chat([m.as_dict() for m in body.messages], "messages")
        except RequestError as err:
            raise APIError(400, str(err), param="messages") from None


def engine_error(err: BaseException) -> APIError:
    if isinstance(err, UnknownAdapterError):
        return APIError(404, str(err), param="model", code="model_not_found")
    if isinstance(err, RequestError) and "maximum sequence length" in str(err):
        return APIError(400, str(err), param="prompt", code="context_length_exceeded")
    if isinstance(err, (InputError, WarmfastError, ValueError)):
        return APIError(400, str(err))
    return APIError(500, f"{type(err).__name__}: {err}")


def parse(model, raw: bytes):
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as err:
        raise from_validation(err.errors()) from None


def sse(obj) -> str:
    return f"data: {json.dumps(obj, allow_nan=False)}\n\n"


def create_app(server: Server) -> FastAPI:
    app = FastAPI(title="warmfast", docs_url=None, redoc_url=None)
    app.state.server = server
    s = server

    @app.exception_handler(APIError)
    async def _api_error(request, err: APIError):
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request, err: RequestValidationError):
        return from_validation(err.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, err: StarletteHTTPException):
        return APIError(err.status_code, str(err.detail)).response()

    @app.exception_handler(Exception)
    async def _bug(request, err: Exception):  # a bug in warmfast: logged with its traceback
        log.error("warmfast serve: %s %s failed", request.method, request.url.path, exc_info=err)
        return APIError(500, f"internal error: {type(err).__name__}: {err}").response()

    app.add_middleware(_AuthAndCount, server=s)  # plain ASGI: a client's disconnect still reaches handlers

    @app.get("/health")
    async def health():
        if s.draining or s.loop.state != "ready":
            state = "draining" if s.draining else s.loop.state
            return JSONResponse({"status": state}, status_code=503, headers={"Retry-After": "2"})
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        return Response(s.metrics.render(), media_type=s.metrics.content_type)

    @app.get("/v1/models")
    async def models():
        s.check_ready()
        eng = s.loop.engine
        base = {"id": s.settings.model_name, "object": "model", "created": s.created, "owned_by": "warmfast",
                "root": s.settings.model_name, "parent": None, "max_model_len": eng.max_seq_len}
        cards = [base] + [{"id": a, "object": "model", "created": s.created, "owned_by": "warmfast",
                           "root": s.settings.adapter_paths.get(a, a), "parent": s.settings.model_name,
                           "max_model_len": eng.max_seq_len} for a in eng.adapter_names]
        return {"object": "list", "data": cards}

    @app.post("/v1/completions")
    async def completions(request: Request):
        s.check_ready()
        body = parse(CompletionRequest, await request.body())
        adapter = s.adapter_of(body.model)
        prompts = body.prompts()
        ids = [s.prompt_ids(p, f"prompt[{i}]") for i, p in enumerate(prompts)]
        try:
            reqs = R.completion_requests(body, ids, adapter)
        except InputError as err:
            raise APIError(400, str(err)) from None
        job = s.submit(reqs)
        await s.started(job)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "text_completion", "created": created, "model": body.model}
        n_prompt = sum(len(x) for x in ids)
        if body.stream:
            return StreamingResponse(_sse(_completion_chunks(s, job, body), body, head, n_prompt),
                                     media_type="text/event-stream")
        results = await s.collect(job, request)
        texts = [p if isinstance(p, str) else s.tok.hf.decode(p) for p in prompts]
        choices = [R.completion_choice(s.fmt, k, res, body, texts[k // body.n], ids[k // body.n])
                   for k, res in enumerate(results)]
        done = sum(R.completion_tokens(r, body) for r in results)
        return head | {"choices": choices, "usage": R.usage(n_prompt, done)}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        s.check_ready()
        body = parse(ChatRequest, await request.body())
        adapter = s.adapter_of(body.model)
        ids = s.chat_ids(body)
        try:
            reqs = R.chat_requests(body, ids, adapter, s.settings.default_max_tokens)
        except InputError as err:
            raise APIError(400, str(err)) from None
        job = s.submit(reqs)
        await s.started(job)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body.model}
        if body.stream:
            chunk_head = head | {"object": "chat.completion.chunk"}
            return StreamingResponse(_sse(_chat_chunks(s, job, body), body, chunk_head, len(ids)),
                                     media_type="text/event-stream")
        results = await s.collect(job, request)
        choices = [{"index": k, "message": {"role": "assistant", "content": r.text},
                    "logprobs": s.fmt.chat_logprobs(r.logprobs or []) if body.logprobs else None,
                    "finish_reason": r.finish_reason} for k, r in enumerate(results)]
        done = sum(len(r.token_ids) for r in results)
        return head | {"object": "chat.completion", "choices": choices, "usage": R.usage(len(ids), done)}

    @app.get("/tokenizer_info")
    async def tokenizer_info():
        s.check_ready()
        hf = s.tok.hf
        return {"eos_token": hf.eos_token, "bos_token": hf.bos_token, "pad_token": hf.pad_token,
                "chat_template": hf.chat_template, "model_max_length": s.loop.engine.max_seq_len,
                "tokenizer_class": type(hf).__name__}

    @app.post("/tokenize")
    async def tokenize(request: Request):
        s.check_ready()
        body = parse(TokenizeRequest, await request.body())
        if body.messages is not None:
            ids = s.tok.chat([m.as_dict() for m in body.messages], "messages")
        elif body.add_special_tokens:
            ids = list(s.tok.encode_context(body.prompt))
        else:
            ids = list(s.tok.encode_plain(body.prompt))
        return {"tokens": ids, "count": len(ids), "max_model_len": s.loop.engine.max_seq_len}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        s.check_ready()
        body = parse(DetokenizeRequest, await request.body())
        vocab = s.loop.engine.model.cfg.vocab_size
        bad = [t for t in body.tokens if not 0 <= t < vocab]
        if bad:
            raise APIError(400, f"tokens {bad[:5]} are outside the vocabulary [0, {vocab})", param="tokens")
        return {"prompt": s.tok.hf.decode(body.tokens)}

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(request: Request):
        body = parse(LoadAdapterRequest, await request.body())
        _check_updates(s)
        if body.lora_name == s.settings.model_name or body.lora_name in s.loop.engine.adapter_names:
            raise APIError(400, f"an adapter named {body.lora_name!r} is already served", param="lora_name")
        try:
            await s.loop.call(lambda eng: eng.load_adapter(body.lora_name, body.lora_path), asyncio.get_running_loop())
        except WarmfastError as err:
            raise APIError(400, str(err), param="lora_path") from None
        s.settings.adapter_paths[body.lora_name] = body.lora_path
        return {"status": "ok", "message": f"adapter {body.lora_name!r} loaded from {body.lora_path}"}

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(request: Request):
        body = parse(UnloadAdapterRequest, await request.body())
        _check_updates(s)
        if body.lora_name not in s.loop.engine.adapter_names:
            raise APIError(404, f"no adapter named {body.lora_name!r} is served", param="lora_name",
                           code="model_not_found")
        try:
            await s.loop.call(lambda eng: eng.unload_adapter(body.lora_name), asyncio.get_running_loop())
        except WarmfastError as err:
            raise APIError(400, str(err), param="lora_name") from None
        s.settings.adapter_paths.pop(body.lora_name, None)
        return {"status": "ok", "message": f"adapter {body.lora_name!r} unloaded"}

    return app


class _AuthAndCount:
    """The API key check (all paths but /health and /metrics) and the HTTP counters of /metrics.
    A plain ASGI middleware: Starlette's BaseHTTPMiddleware would hide http.disconnect from the
    handlers (Request.is_disconnected), so a gone client's request would run on."""

    def __init__(self, app, server: Server):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s, path = self.server, scope["path"]
        key = s.settings.api_key
        if key is not None and path not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, f"Bearer {key}".encode()):
                s.metrics.count(path, 401)
                response = APIError(401, "Incorrect API key provided (Authorization: Bearer ...)",
                                    code="invalid_api_key").response()
                return await response(scope, receive, send)
        status = [500]

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            s.metrics.count(path, status[0])


def _check_updates(s: Server) -> None:
    if not s.settings.allow_adapter_updates:
        raise APIError(404, "adapter loading is off; start `warmfast serve` with --allow-adapter-updates")
    s.check_ready()
    if not hasattr(s.loop.engine, "load_adapter"):
        raise APIError(501, "this warmfast engine has no live adapter loading (Engine.load_adapter)")


async def _events(s: Server, job: Job):
    """(index, RequestOutput) as they come; aborts the job if the client goes away (the
    streaming response cancels this generator)."""
    left = len(job.requests)
    try:
        while left:
            i, out = await job.events.get()
            if i == "error":
                raise engine_error(out)
            left -= out.finished
            yield i, out
    finally:
        if left:
            s.loop.abort(job)


async def _sse(chunks, body, head: dict, n_prompt: int):
    """Server-sent events of `chunks` ((choices, tokens finished in them) pairs), then the usage
    when stream_options asks for it and [DONE]; an engine error mid-stream is an error event."""
    done = 0
    try:
        async for choices, tokens in chunks:
            done += tokens
            yield sse(head | {"choices": choices})
    except APIError as err:
        yield sse(err.body())
        return
    if body.stream_options is not None and body.stream_options.include_usage:
        yield sse(head | {"choices": [], "usage": R.usage(n_prompt, done)})
    yield "data: [DONE]\n\n"


async def _completion_chunks(s: Server, job: Job, body: CompletionRequest):
    offsets = {}
    async for i, out in _events(s, job):
        choice = {"index": i, "text": out.text, "logprobs": None, "finish_reason": None}
        if body.logprobs is not None:
            lps = list(out.logprobs or [])
            if out.finished and out.result.stop_token is not None:
                lps.append(out.result.stop_token)
            choice["logprobs"] = s.fmt.completion_logprobs(lps, None, None, offsets.get(i, 0))
            offsets[i] = offsets.get(i, 0) + sum(len(t) for t in choice["logprobs"]["tokens"])
        if out.finished:
            choice["finish_reason"] = out.result.finish_reason
        yield [choice], len(out.result.token_ids) if out.finished else 0


async def _chat_chunks(s: Server, job: Job, body: ChatRequest):
    for i in range(body.n):
        yield [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                "finish_reason": None}], 0
    async for i, out in _events(s, job):
        choice = {"index": i, "delta": {"content": out.text} if out.text else {},
                  "logprobs": s.fmt.chat_logprobs(out.logprobs or []) if body.logprobs else None,
                  "finish_reason": out.result.finish_reason if out.finished else None}
        if out.text or out.finished or (body.logprobs and out.logprobs):
            yield [choice], len(out.result.token_ids) if out.finished else 0
