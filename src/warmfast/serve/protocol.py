"""Request bodies of the OpenAI-compatible endpoints (pydantic), with the OpenAI / vLLM field names.

Unknown fields are refused (400 naming the field), so a misspelt knob never goes unnoticed;
top_k and min_p are vLLM's extensions. Responses are plain dicts built in serve/responses.py.
"""
from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_LOGPROBS = 20  # OpenAI's top_logprobs limit; the engine's own (SamplingParams) is the same

Prompt = Union[str, list[str], list[int], list[list[int]]]  # noqa: UP007 (pydantic reads the order)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(Body):
    include_usage: bool = False


class Sampling(Body):
    """Fields both completion endpoints share."""
    model: str
    temperature: float | None = Field(1.0, ge=0.0)
    top_p: float | None = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(0, ge=-1)  # vLLM: -1 or 0 = off
    min_p: float | None = Field(0.0, ge=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, lt=2**64)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # a label; not used
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        if v is None:
            return []
        v = [v] if isinstance(v, str) else v
        if any(not s for s in v):
            raise ValueError("stop strings must be non-empty")
        return v

    @model_validator(mode="after")
    def _penalties(self):
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) != 0.0:
                raise ValueError(f"{name} is not supported by warmfast (only 0), got {getattr(self, name)}")
        return self


class CompletionRequest(Sampling):
    prompt: Prompt
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("prompt is an empty list")
        if isinstance(v, list) and isinstance(v[0], list) and any(not p for p in v):
            raise ValueError("prompt holds an empty list of token ids")
        return v

    @model_validator(mode="after")
    def _echo(self):
        if self.max_tokens is None:  # an explicit null: OpenAI's default
            self.max_tokens = 16
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens 0 is allowed only with echo=true (the prompt's log-probs alone)")
        if self.echo and self.stream:
            raise ValueError("echo with stream is not supported; ask without stream")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompts as a list: each a text or a list of token ids."""
        v = self.prompt
        if isinstance(v, str):
            return [v]
        if isinstance(v[0], int):
            return [list(v)]
        return list(v)


class TextPart(Body):
    type: Literal["text"]
    text: str


class Message(Body):
    role: str
    content: str | list[TextPart] | None = None
    name: str | None = None

    def as_dict(self) -> dict:
        content = self.content
        if isinstance(content, list):
            content = "".join(p.text for p in content)
        return {"role": self.role, "content": content or ""}


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)

    @model_validator(mode="after")
    def _top(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=true")
        return self

    def max_new_tokens(self, default: int) -> int:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens if self.max_tokens is not None else default


class TokenizeRequest(Body):
    prompt: str | None = None
    messages: list[Message] | None = None
    add_special_tokens: bool = True
    model: str | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        return self


class DetokenizeRequest(Body):
    tokens: list[int]
    model: str | None = None


class LoadAdapterRequest(Body):
    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)


class UnloadAdapterRequest(Body):
    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = None  # vLLM sends it; not used
