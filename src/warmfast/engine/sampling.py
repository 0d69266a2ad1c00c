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
from warmfast.kernels.sampling import sample

IMPLS = ("cpp", "triton")


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """temperature 0 = greedy; top_k 0, top_p 1 and min_p 0 switch those filters off."""
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if not (self.temperature >= 0.0 and np.isfinite(self.temperature)):
            raise ValueError(f"temperature must be finite and >= 0 (0 = greedy), got {self.temperature}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1] (0 = off), got {self.min_p}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be an int in [0, 2^64), got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


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
