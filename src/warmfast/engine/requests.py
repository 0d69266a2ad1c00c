"""What goes into the engine and what comes out: requests, results, and the per-step outputs of
the core (a contract, see DESIGN.md; `warmfast.ScoreRequest` etc. are these classes)."""
from __future__ import annotations

from dataclasses import dataclass, field

from warmfast.engine.sampling import SamplingParams
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
    finish_reason: str  # "stop" or "length" ("abort" only in a core's output after abort())
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
