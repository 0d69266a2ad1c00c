"""The sampler at a decode step's shape: 64 and 256 rows of the Llama-3 vocabulary (128,256),
greedy, temperature only, top-k, top-p, min-p and all filters at once.

GPU (CUDA only): the Triton sampler against torch's own sampling of the same rows (softmax,
sort + cumsum for top-p, topk, multinomial) as the yardstick; torch's does not follow warmfast's
contract, so the ratio says what batch invariance costs. A generation step of an 8B model at batch
64 takes about 10 ms on an H100/H200, so this says whether sampling is a visible share of it.
Bytes counted: one float32 read of the probabilities (n * V * 4); the radix passes read them
again (see kernels/sampling.py: 2 reads for temperature, 6 for top-k, 5 for top-p, 9 for both).

CPU (marked cpu, runs anywhere): the C++ sampler (`_C.sample`, the CPU path) at batch 64.

    python -m pytest bench/bench_sampling.py --benchmark-json=out.json
"""
import numpy as np
import pytest
import torch

from warmfast import _C
from warmfast.kernels.sampling import sample

V = 128256
MODES = {  # name -> (temperature, top_k, top_p, min_p)
    "greedy": (0.0, 0, 1.0, 0.0),
    "temperature": (0.7, 0, 1.0, 0.0),
    "top_k": (0.7, 50, 1.0, 0.0),
    "top_p": (0.7, 0, 0.95, 0.0),
    "min_p": (0.7, 0, 1.0, 0.05),
    "top_k_top_p_min_p": (0.7, 50, 0.95, 0.05),
}


def logits_rows(n: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n, V, generator=g) * 4).to(device)  # a peaked-enough distribution


def torch_sampler(logits: torch.Tensor, temp: float, top_k: int, top_p: float, min_p: float):
    """The usual torch sampling of the same settings (temperature, top-k, min-p, then top-p by sort)."""
    if temp == 0.0:
        return logits.argmax(-1)
    p = torch.softmax(logits / temp, -1)
    if top_k:
        kth = p.topk(top_k, -1).values[:, -1:]
        p = torch.where(p >= kth, p, 0.0)
    if min_p:
        p = torch.where(p >= min_p * p.max(-1, keepdim=True).values, p, 0.0)
    if top_p < 1.0:
        sp, si = p.sort(-1, descending=True)
        sp[(sp.cumsum(-1) - sp) > top_p * sp.sum(-1, keepdim=True)] = 0.0
        return si.gather(1, torch.multinomial(sp, 1))
    return torch.multinomial(p, 1)


@pytest.mark.parametrize("n", [64, 256])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_bench_sampling(measure, impl, mode, n):
    temp, top_k, top_p, min_p = MODES[mode]
    logits = logits_rows(n, "cuda")
    probs = torch.exp(logits - logits.max(-1, keepdim=True).values)
    if impl == "triton":
        keys = [torch.arange(n, device="cuda", dtype=torch.int64) for _ in range(3)]
        settings = (torch.full((n,), temp, dtype=torch.float64, device="cuda"),
                    torch.full((n,), top_k, dtype=torch.int64, device="cuda"),
                    torch.full((n,), top_p, dtype=torch.float64, device="cuda"),
                    torch.full((n,), min_p, dtype=torch.float64, device="cuda"))

        def fn():
            return sample(probs, *keys, *settings)
    else:
        def fn():
            return torch_sampler(logits, temp, top_k, top_p, min_p)
    measure(fn, nbytes=n * V * 4, inner=3, rounds=10)


@pytest.mark.cpu
@pytest.mark.parametrize("mode", list(MODES))
def test_bench_cpu_sampling(benchmark, mode):
    n = 64
    temp, top_k, top_p, min_p = MODES[mode]
    logits = logits_rows(n, "cpu")
    probs = torch.exp(logits - logits.max(-1, keepdim=True).values).numpy()
    keys = (np.arange(n, dtype=np.uint64), np.arange(n, dtype=np.uint64), np.zeros(n, np.uint32))
    kw = {"temperature": np.full(n, temp), "top_k": np.full(n, top_k, np.int64), "top_p": np.full(n, top_p),
          "min_p": np.full(n, min_p)}
    benchmark.pedantic(lambda: _C.sample(probs, *keys, **kw), rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["ms_per_row"] = benchmark.stats.stats.median / n * 1e3
