"""The Triton sampler at a decode step's shape: 64 and 256 rows of the Llama-3 vocabulary (128256),
greedy, temperature only, and temperature + top-p (the bisection passes), against torch's own
multinomial sampling of the same rows as the yardstick (it does not follow warmfast's contract: the
ratio says what batch invariance costs). A generation step of an 8B model at batch 256 takes about
10 ms on an H100, so this bench says whether sampling is a visible share of it."""
import pytest
import torch

from warmfast.kernels.sampling import sample

V = 128256
MODES = {"greedy": (0.0, 1.0), "temperature": (0.7, 1.0), "temperature_top_p": (0.7, 0.95)}


@pytest.mark.parametrize("n", [64, 256])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("impl", ["triton", "torch_multinomial"])
def test_bench_sampling(measure, impl, mode, n):
    temp, top_p = MODES[mode]
    logits = torch.randn(n, V, device="cuda") * 4  # a peaked-enough distribution
    probs = torch.exp(logits - logits.max(-1, keepdim=True).values)
    if impl == "triton":
        keys = [torch.arange(n, device="cuda", dtype=torch.int64) for _ in range(3)]
        settings = (torch.full((n,), temp, dtype=torch.float64, device="cuda"),
                    torch.zeros(n, dtype=torch.int64, device="cuda"),
                    torch.full((n,), top_p, dtype=torch.float64, device="cuda"),
                    torch.zeros(n, dtype=torch.float64, device="cuda"))

        def fn():
            return sample(probs, *keys, *settings)
    else:
        def fn():
            if temp == 0.0:
                return logits.argmax(-1)
            p = torch.softmax(logits / temp, -1)
            if top_p < 1.0:  # the usual sort + cumsum top-p
                sp, si = p.sort(-1, descending=True)
                sp[(sp.cumsum(-1) - sp) > top_p] = 0.0
                return si.gather(1, torch.multinomial(sp, 1))
            return torch.multinomial(p, 1)
    measure(fn, nbytes=n * V * 4, inner=3, rounds=10)
