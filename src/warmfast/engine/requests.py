"""The public request and result types of the engine (a contract, see DESIGN.md and engine/api.py).

They sit below the scorer and generator, which return them, and below engine/api.py, which
re-exports them with the Engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from warmfast.errors import InputError


@dataclass
class ScoreRequest:
    """Log-probability of `continuation` after `context` under `adapter` (None/"base": no adapter).

    Strings: the context is tokenized with the tokenizer's special tokens (BOS), the continuation
    without, and the two id lists are concatenated. Token-id lists are used as given. A tokenizer
    without BOS (GPT-2) gives the context's text tokens alone, so an empty string context is an
    error there; pass token ids (e.g. GPT-2's <|endoftext|>) to condition on a start token.

    messages=[{"role": ..., "content": ...}] instead of context: the chat template rendered with
    the generation prompt is the context (its own BOS, never a second one), so the continuation is
    scored as the assistant's reply.
    """
    context: str | list[int] | None = None
    continuation: str | list[int] | None = None
    adapter: str | None = None
    messages: list[dict] | None = None

    def __post_init__(self):
        if (self.context is None) == (self.messages is None):
            raise InputError("ScoreRequest needs exactly one of context= or messages=")
        if self.continuation is None:
            raise InputError("ScoreRequest needs continuation= (the text or token ids to score)")


@dataclass
class ScoreResult:
    logprob: float  # sum over continuation tokens
    token_logprobs: list[float]
    is_greedy: bool  # every continuation token is the argmax
    num_tokens: int


@dataclass
class GenerateRequest:
    """Sample a continuation of `prompt` (string or token ids) or of chat `messages`.

    The random stream is keyed by (seed, request_id, step); request_id defaults to a hash of the
    prompt's token ids, so a request samples the same tokens whatever else shares its batch and
    whichever adapter it runs under (common random numbers across arms).
    """
    prompt: str | list[int] | None = None
    messages: list[dict] | None = None
    adapter: str | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    request_id: int | None = None

    def __post_init__(self):
        if (self.prompt is None) == (self.messages is None):
            raise InputError("GenerateRequest needs exactly one of prompt= or messages=")
        if self.max_new_tokens < 1:
            raise InputError(f"GenerateRequest.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise InputError(f"GenerateRequest.temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise InputError(f"GenerateRequest.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or not 0.0 <= self.min_p < 1.0:
            raise InputError(f"GenerateRequest: top_k must be >= 0 and min_p in [0, 1); got "
                             f"top_k={self.top_k}, min_p={self.min_p}")


@dataclass
class GenerateResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" or "length"
