"""The dispatch to the C++ (CPU) or Triton (GPU) sampler.

The next token of a request is a pure function of (its logits row, its settings, seed, request id,
step): the contract is written at the top of csrc/sampling.cpp and implemented three times
(`_C.sample`, `kernels.sampling.sample`, `kernels.sampling.sample_ref`) with equal results.
Here the logits row becomes the sampler's probabilities as q = exp(logits - max(logits)): an
element-wise map plus an exact max, so not even a softmax sum can make a row depend on its batch
(the sampler only reads ratios). Greedy rows (temperature 0) take the first argmax of the logits
themselves, which is what HF `generate(do_sample=False)` does.
"""
from __future__ import annotations

import numpy as np
import torch

from warmfast import native
from warmfast.engine.requests import SamplingParams
from warmfast.kernels.sampling import sample

IMPLS = ("cpp", "triton")


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

    # two host-to-device copies (integers, floats) instead of seven; the rows are contiguous views
    ints = torch.from_numpy(np.stack([_as_i64(seeds), _as_i64(request_ids),
                                      np.asarray(steps, dtype=np.int64), top_k])).to(probs.device)
    floats = torch.from_numpy(np.stack([temp, top_p, min_p])).to(probs.device)
    out = sample(probs.float().contiguous(), ints[0], ints[1], ints[2], floats[0], ints[3], floats[1],
                 floats[2])
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
