"""An LLM judge behind any OpenAI-compatible endpoint, at temperature 0, with a resumable cache.

Every request is keyed by the hash of (endpoint URL, request body); a reply is written to the
store's `llm_cache` table the moment it arrives, so a killed judging run resumes without paying for
any answer twice. Verdicts are read from the reply by `JudgePrompt.parse`.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Protocol

from tqdm.auto import tqdm

from warmfast.judge.prompts import JudgeItem, JudgePrompt, Verdict
from warmfast.keys import content_key
from warmfast.openai_client import ChatResponse, ClientConfig, OpenAIClient

log = logging.getLogger(__name__)


class ReplyCache(Protocol):
    """Where replies are kept across runs (the run store's llm_cache table: run/store.py)."""

    def cached_response(self, key: str) -> dict | None: ...

    def cache_response(self, key: str, request: Mapping[str, object], response: Mapping[str, object]) -> None: ...


@dataclass(frozen=True, slots=True)
class OpenAIJudgeConfig:
    model: str
    client: ClientConfig
    prompt: JudgePrompt
    temperature: float = 0.0
    max_tokens: int = 16
    seed: int | None = 0
    concurrency: int = 4

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"openai judge: model must be a non-empty string, got {self.model!r}")
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ValueError(f"openai judge: temperature must be >= 0, got {self.temperature!r}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"openai judge: max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError(f"openai judge: concurrency must be a positive integer, got {self.concurrency!r}")


class OpenAIJudge:
    """Grades answers with a chat model behind an OpenAI-compatible endpoint."""

    kind = "openai"

    def __init__(self, config: OpenAIJudgeConfig, store: ReplyCache | None = None):
        self.config = config
        self.client = OpenAIClient(config.client)
        self.store = store

    def spec(self) -> dict:
        """Everything that decides a verdict (never the API key): part of each judgement's key."""
        c = self.config
        return {"kind": self.kind, "url": self.client.url, "model": c.model, "prompt": c.prompt.spec(),
                "temperature": c.temperature, "max_tokens": c.max_tokens, "seed": c.seed}

    def _call(self, item: JudgeItem) -> dict:
        call = {"messages": self.config.prompt.messages(item), "model": self.config.model,
                "temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
        if self.config.seed is not None:
            call["seed"] = self.config.seed
        return call

    def judge(self, items: Sequence[JudgeItem], progress: bool = False) -> list[Verdict]:
        """Verdicts in item order; cached replies are reused, new ones cached as they arrive."""
        calls = [self._call(it) for it in items]
        keys = [content_key({"url": self.client.url, "request": c}) for c in calls]
        replies: dict[int, ChatResponse] = {}
        todo, first_of = [], {}  # identical requests (same question, answer, reference) go out once
        for i, key in enumerate(keys):
            cached = None if self.store is None else self.store.cached_response(key)
            if cached is not None:
                replies[i] = ChatResponse.from_dict(cached)
            elif key not in first_of:
                first_of[key] = i
                todo.append(i)
        bar = tqdm(total=len(todo), desc=f"judge {self.config.model}", unit="req", disable=not progress)
        # The first endpoint error ends the run, after queued requests are cancelled and the replies
        # of requests already in flight are cached (the store is written only from this thread).
        error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            futures = {pool.submit(self.client.chat, **calls[i]): i for i in todo}
            for fut in as_completed(futures):
                if fut.cancelled():
                    continue
                if fut.exception() is not None:
                    if error is None:
                        error = fut.exception()
                        for other in futures:
                            other.cancel()
                    continue
                i = futures[fut]
                replies[i] = fut.result()
                if self.store is not None:
                    self.store.cache_response(keys[i], calls[i], replies[i].to_dict())
                bar.update(1)
        bar.close()
        if error is not None:
            raise error
        for i, key in enumerate(keys):
            if i not in replies:
                replies[i] = replies[first_of[key]]
        verdicts = []
        for i in range(len(items)):
            v = self.config.prompt.parse(replies[i].text)
            if v.verdict is None:
                log.warning("openai judge: reply names neither %s: %r", self.config.prompt.verdicts,
                            replies[i].text[:120])
            verdicts.append(v)
        return verdicts
