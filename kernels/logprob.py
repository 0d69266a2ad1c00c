"""Fused lm_head log-prob: for selected hidden rows, log p(target), argmax and logsumexp.

Semantics per row n: logits = hidden[n] @ weight.T in fp32 ([V]);
    logsumexp[n] = log(sum(exp(logits))); logprob[n] = logits[targets[n]] - logsumexp[n];
    argmax[n] = first index of max(logits).
"""
from __future__ import annotations

import torch


def logprob_ref(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain-torch log-prob, fp32 logits chunk by chunk over rows (at most [chunk, V] live).

    hidden: [N, H]; weight: [V, H] (lm_head); targets: int64 [N] in [0, V); chunk: rows per step.
    Returns (logprob fp32 [N], argmax int64 [N], logsumexp fp32 [N]).
    Memory note: a non-fp32 weight is upcast once (V * H * 4 bytes) for fp32 logits.
    """
    n = hidden.shape[0]
    if chunk <= 0:
        raise ValueError(f"logprob_ref: chunk must be positive, got {chunk}")
    w32 = weight.float()  # no copy when already fp32
    logprob = torch.empty(n, dtype=torch.float32, device=hidden.device)
    lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
    amax = torch.empty(n, dtype=torch.int64, device=hidden.device)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        logits = hidden[s:e].float() @ w32.T  # [n, V] fp32
        lse[s:e] = torch.logsumexp(logits, dim=-1)
        amax[s:e] = logits.argmax(dim=-1)
        logprob[s:e] = logits.gather(1, targets[s:e, None].long())[:, 0] - lse[s:e]
    return logprob, amax, lse
