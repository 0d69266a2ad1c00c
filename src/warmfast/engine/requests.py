"""What goes into the engine and what comes out: requests, sampling settings, results, and the
per-step outputs of the core (no torch here: the run layer's config imports SamplingParams) (a contract, see DESIGN.md; `warmfast.ScoreRequest` etc. are these classes)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from warmfast.errors import InputError

MAX_LOGPROBS = 20  # top alternatives per generated token, at most (as OpenAI's top_logprobs)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """The one sampling-settings type: how a generation draws its tokens and when it stops.

    temperature 0 = greedy; top_k 0, top_p 1 and min_p 0 switch those filters off; the random
    stream is keyed by (seed, request id, step). max_new_tokens and stop strings end it (EOS ids
    too, from the model folder). logprobs=k: report each token's log-prob and the k most likely
    alternatives (None = off); prompt_logprobs: report the prompt's. GenerateRequest carries these
    as its own fields (the user-facing contract) and hands them over by GenerateRequest.sampling();
    the run layer's SamplingSpec extends this type with samples_per_prompt."""
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int = 0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    prompt_logprobs: bool = False

    def __post_init__(self):
        if not (isinstance(self.temperature, (int, float)) and self.temperature >= 0.0
                and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be finite and >= 0 (0 = greedy), got {self.temperature!r}")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        if not (isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p!r}")
        if not (isinstance(self.min_p, (int, float)) and 0.0 <= self.min_p <= 1.0):
            raise ValueError(f"min_p must be in [0, 1] (0 = off), got {self.min_p!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be an int in [0, 2^64), got {self.seed!r}")
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be a list of non-empty strings, got {self.stop!r}")
        if self.logprobs is not None and (not _is_int(self.logprobs) or not 0 <= self.logprobs <= MAX_LOGPROBS):
            raise ValueError(f"logprobs must be None (off) or an int in [0, {MAX_LOGPROBS}] (the top "
                             f"alternatives per token), got {self.logprobs!r}")
        if not isinstance(self.prompt_logprobs, bool):
            raise ValueError(f"prompt_logprobs must be True or False, got {self.prompt_logprobs!r}")
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)




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

    logprobs=k: each generated token comes with its log-prob under the model (log_softmax of the
    raw logits, before temperature and filters) and, for k > 0, the k most likely tokens at that
    step. prompt_logprobs=True: the log-prob of every prompt token after the first, given the ones
    before it (GenerateResult.prompt_logprobs).
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
    logprobs: int | None = None
    prompt_logprobs: bool = False

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

    def sampling(self) -> SamplingParams:
        """The request's sampling settings as the engine's one type (full validation there:
        ValueError naming the field and value)."""
        return SamplingParams(temperature=float(self.temperature), top_k=self.top_k, top_p=float(self.top_p),
                              min_p=float(self.min_p), seed=self.seed, max_new_tokens=self.max_new_tokens,
                              stop=tuple(self.stop), logprobs=self.logprobs,
                              prompt_logprobs=self.prompt_logprobs)


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A generated token, its log-prob, and the `logprobs=k` most likely tokens at its step
    ([(token id, log-prob)], most likely first; empty for k = 0)."""
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass
class GenerateResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" or "length"
    logprobs: list[TokenLogprob] | None = None  # one per token id (GenerateRequest.logprobs)
    prompt_logprobs: list[float] | None = None  # prompt tokens 1.. (GenerateRequest.prompt_logprobs)
    # prompt_logprobs and logprobs=k both asked: prompt tokens 1.. as TokenLogprobs with their top-k,
    # chosen and top from one log_softmax (so a greedy token's log-prob equals its top entry exactly)
    prompt_top: list[TokenLogprob] | None = None
    stop_token: TokenLogprob | None = None  # the EOS that ended it (logprobs asked); not in token_ids


@dataclass
class RequestOutput:
    """What one core step produced for one request: the new tokens (token ids, the text they made
    stable, which never ends inside a character, and their log-probs when asked) and, once the
    request is done, its result. A score row's only output is its finished result."""
    request_id: int  # the id add_request returned
    token_ids: list[int]
    text: str
    logprobs: list[TokenLogprob] | None
    finished: bool = False
    result: GenerateResult | ScoreResult | None = None
