"""Sampling settings and the dispatch to the C++ (CPU) or Triton (GPU) sampler.

The next token of a request is a pure function of (its logits row, its settings, seed, request id,
step): the contract is written at the top of csrc/sampling.cpp and implemented three times
(`_C.sample`, `kernels.sampling.sample`, `kernels.sampling.sample_ref`) with equal results.
Here the logits row becomes the sampler's probabilities as q = exp(logits - max(logits)): an
element-wise map plus an exact max, so not even a softmax sum can make a row depend on its batch
(the sampler only reads ratios). Greedy rows (temperature 0) take the first argmax of the logits
themselves, which is what HF `generate(do_sample=False)` does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from warmfast import native

IMPLS = ("cpp", "triton")
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
                and np.isfinite(self.temperature)):
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


def default_impl(device: torch.device) -> str:
    """The C++ sampler on CPU, the Triton kernel on CUDA."""
    return "triton" if device.type == "cuda" else "cpp"


def _as_i64(values: list[int]) -> np.ndarray:
    """Unsigned 64-bit keys -> int64 bit patterns (what the Triton launcher takes)."""
    return np.asarray(values, dtype=np.uint64).view(np.int64)


def sample_probs(probs: torch.Tensor, params: list[SamplingParams], request_ids: list[int],
                 steps: list[int], impl: str) -> list[int]:
    """Tokens for probability rows probs [N, V] (float32, any positive scale)."""
    n = probs.shape[0]
    if not len(params) == len(request_ids) == len(steps) == n:
        raise ValueError(f"sample_probs: {n} probability rows but {len(params)} params, "
                         f"{len(request_ids)} request ids and {len(steps)} steps")
    if impl not in IMPLS:
        raise ValueError(f"sampler impl must be one of {IMPLS}, got {impl!r}")
    seeds = [p.seed for p in params]
    temp = np.asarray([p.temperature for p in params], dtype=np.float64)
    top_k = np.asarray([p.top_k for p in params], dtype=np.int64)
    top_p = np.asarray([p.top_p for p in params], dtype=np.float64)
    min_p = np.asarray([p.min_p for p in params], dtype=np.float64)
    if impl == "cpp":
        tokens = native.C().sample(probs.detach().float().cpu().contiguous().numpy(),
                           np.asarray(seeds, dtype=np.uint64), np.asarray(request_ids, dtype=np.uint64),
                           np.asarray(steps, dtype=np.uint32), temperature=temp, top_k=top_k,
                           top_p=top_p, min_p=min_p)
        return tokens.tolist()
    from warmfast.kernels.sampling import sample

    dev = probs.device

    def t(a):
        return torch.from_numpy(a).to(dev)

    out = sample(probs.float().contiguous(), t(_as_i64(seeds)), t(_as_i64(request_ids)),
                 t(np.asarray(steps, dtype=np.int64)), t(temp), t(top_k), t(top_p), t(min_p))
    return out.tolist()


def sample_logits(logits: torch.Tensor, params: list[SamplingParams], request_ids: list[int],
                  steps: list[int], impl: str) -> list[int]:
    """Next tokens for logits rows [N, V]: greedy rows by first argmax, the rest by the sampler."""
    tokens = logits.argmax(-1).tolist()
    rows = [i for i, p in enumerate(params) if not p.greedy]
    if not rows:
        return tokens
    sel = logits[rows].float() if len(rows) < len(params) else logits.float()
    probs = torch.exp(sel - sel.max(-1, keepdim=True).values)  # [n, V]; max entry is exactly 1
    sampled = sample_probs(probs, [params[i] for i in rows], [request_ids[i] for i in rows],
                           [steps[i] for i in rows], impl)
    for i, tok in zip(rows, sampled):
        tokens[i] = tok
    return tokens
