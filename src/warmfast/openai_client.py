"""A small client for OpenAI-compatible chat-completions endpoints (OpenAI, vLLM, `warmfast serve`, ...).

Used by the LLM judge and by the training layer's rewriter. The HTTP is the official `openai` SDK
(one `chat.completions.create` per request, read raw so that a malformed reply is caught here);
the retry policy is ours, so it follows ClientConfig (the SDK's own retries are off).

- The API key is read from an environment variable whose *name* is configured; the key itself
  lives only inside the SDK client (sent in the Authorization header) and never appears in a repr,
  a log line, an error message or a stored result.
- Rate limits, server errors (429, 5xx, timeouts, refused connections) and malformed 200 replies
  (not JSON, no choices[0].message.content) are retried with exponential backoff
  (`backoff_s * 2**attempt`, capped, stretched by a random jitter, a server's Retry-After
  honoured); other HTTP errors (400, 401, 404, ...) fail at once with the status and message.
- An endpoint that cannot be reached after all retries raises `EndpointUnreachable` naming the URL.
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import openai

from warmfast.errors import InputError, WarmfastError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class EndpointError(WarmfastError, RuntimeError):
    """The endpoint answered, but not with a usable completion (bad request, auth, bad JSON, ...)."""


class EndpointUnreachable(EndpointError):
    """No answer from the endpoint after every retry (connection refused, DNS failure, timeouts)."""


@dataclass(frozen=True, slots=True)
class ChatResponse:
    text: str
    finish_reason: str | None
    model: str | None
    usage: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"text": self.text, "finish_reason": self.finish_reason, "model": self.model, "usage": self.usage}

    @classmethod
    def from_dict(cls, d: dict) -> "ChatResponse":
        return cls(d["text"], d.get("finish_reason"), d.get("model"), d.get("usage") or {})


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Where the endpoint is and how patiently to talk to it.

    base_url: the API root, e.g. "https://api.openai.com/v1" or "http://127.0.0.1:8000/v1".
    api_key_env: the environment variable holding the key; None for local servers without auth.
    """

    base_url: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    max_retries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    jitter: float = 0.1  # each wait is stretched by a random factor in [1, 1 + jitter]

    def __post_init__(self):
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise InputError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if self.api_key_env is not None and (not isinstance(self.api_key_env, str) or not self.api_key_env):
            raise InputError(f"api_key_env must be an environment variable name or null, got {self.api_key_env!r}")
        for name in ("timeout_s", "backoff_s", "max_backoff_s"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 0):
                raise InputError(f"{name} must be a positive number, got {getattr(self, name)!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise InputError(f"max_retries must be a non-negative integer, got {self.max_retries!r}")
        if not (isinstance(self.jitter, (int, float)) and self.jitter >= 0):
            raise InputError(f"jitter must be >= 0, got {self.jitter!r}")


class _Malformed(Exception):
    """A 200 reply that is not a chat completion (retried like a server error)."""


def _chat_response(data) -> ChatResponse:
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _Malformed(f"JSON without choices[0].message.content: {json.dumps(data)[:300]}") from None
    if not isinstance(text, str):
        raise _Malformed(f"a non-text message content: {text!r}")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return ChatResponse(text, choice.get("finish_reason"), data.get("model"), usage)


class OpenAIClient:
    """Chat completions against one OpenAI-compatible endpoint, with retries and backoff."""

    def __init__(self, config: ClientConfig):
        self.config = config
        key = None
        if config.api_key_env is not None:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise EndpointError(f"the API key variable {config.api_key_env} is not set (or empty); export "
                                    f"it, or set api_key_env: null for an endpoint without authentication")
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        # the SDK insists on a key; without one, no Authorization header is sent at all
        self._sdk = openai.OpenAI(base_url=config.base_url.rstrip("/"), api_key=key or "unused",
                                  timeout=config.timeout_s, max_retries=0)
        self._headers = {"Authorization": openai.Omit()} if key is None else None

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIClient(url={self.url!r}, api_key_env={self.config.api_key_env!r})"

    def _wait_s(self, attempt: int, retry_after: str | None) -> float:
        wait = self.config.backoff_s * (2 ** attempt)
        if retry_after is not None:
            try:
                wait = max(wait, float(retry_after))
            except ValueError:
                pass  # an HTTP-date Retry-After: keep our own backoff
        wait = min(wait, self.config.max_backoff_s)
        return wait * (1.0 + random.uniform(0.0, self.config.jitter))

    def _post(self, body: dict, parse=None):
        """One chat completion with `body`; returns parse(reply JSON) (the JSON itself without
        parse). A reply that is not JSON, or that parse refuses (raises _Malformed), is retried
        like a server error."""
        body = dict(body)
        kwargs = {"model": body.pop("model"), "messages": body.pop("messages")}
        last_problem = ""
        for attempt in range(self.config.max_retries + 1):
            retry_after = None
            try:
                raw = self._sdk.chat.completions.with_raw_response.create(**kwargs, extra_body=body,
                                                                     extra_headers=self._headers)
                payload = raw.http_response.content
                try:
                    data = json.loads(payload)
                    return data if parse is None else parse(data)
                except json.JSONDecodeError:
                    last_problem = f"malformed reply: a body that is not JSON: {payload[:200]!r}"
                except _Malformed as err:
                    last_problem = f"malformed reply: {err}"
            except openai.APIStatusError as err:
                message = err.response.text[:500]
                if err.status_code not in RETRY_STATUSES:
                    raise EndpointError(f"{self.url} answered HTTP {err.status_code}: {message}") from None
                retry_after = err.response.headers.get("Retry-After")
                last_problem = f"HTTP {err.status_code}: {message}"
            except openai.APIConnectionError as err:  # refused, DNS, timeouts (APITimeoutError)
                cause = err.__cause__ or err
                last_problem = f"{type(cause).__name__}: {cause}"
            if attempt == self.config.max_retries:
                break
            wait = self._wait_s(attempt, retry_after)
            log.info("%s: %s; retry %d/%d in %.2fs", self.url, last_problem, attempt + 1,
                     self.config.max_retries, wait)
            time.sleep(wait)
        if last_problem.startswith(("HTTP", "malformed")):
            raise EndpointError(f"{self.url} still failing after {self.config.max_retries + 1} tries; "
                                f"last answer {last_problem}")
        raise EndpointUnreachable(f"cannot reach {self.url} after {self.config.max_retries + 1} tries "
                                  f"({last_problem}); is the server running and base_url right?")

    def chat(self, messages: Sequence[dict], model: str, temperature: float = 0.0,
             max_tokens: int | None = None, seed: int | None = None, **extra) -> ChatResponse:
        """One chat completion. `extra` goes into the request body as given (top_p, stop, ...)."""
        for i, m in enumerate(messages):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise ValueError(f"messages[{i}] must be {{'role': str, 'content': str}}, got {m!r}")
        body: dict = {"model": model, "messages": list(messages), "temperature": temperature, **extra}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if seed is not None:
            body["seed"] = seed
        return self._post(body, _chat_response)

    def chat_many(self, calls: Sequence[dict], max_workers: int = 4) -> list[ChatResponse]:
        """Run `chat(**call)` for each call on a small thread pool; results in call order."""
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        if max_workers == 1 or len(calls) <= 1:
            return [self.chat(**c) for c in calls]
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            return list(pool.map(lambda c: self.chat(**c), calls))
