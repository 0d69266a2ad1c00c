"""The CPU path's C++ primitives (warmfast._C) against the plain-torch references they replace, same
inputs, same process. Runs on any machine:

    python -m pytest bench/bench_cpu.py --benchmark-json=out.json

Shapes are those of the CPU bench model (bench/e2e_score.py preset cpu31m: 8 query heads, 4 kv
heads, head dim 64) at the generation bench's batch of 64 rows.
"""
import pytest
import torch

from warmfast import _C
from warmfast.kernels.attention import paged_decode_attention_ref

HQ, HK, D, BLOCK = 8, 4, 64, 16


@pytest.mark.cpu
@pytest.mark.parametrize("seq_len", [96, 512])
@pytest.mark.parametrize("impl", ["cpp", "ref"])
def test_bench_cpu_paged_decode(benchmark, impl, seq_len):
    b = 64
    n_blocks = b * seq_len // BLOCK
    k_cache, v_cache = (torch.randn(n_blocks, BLOCK, HK, D) for _ in range(2))
    tables = torch.randperm(n_blocks).to(torch.int32).view(b, seq_len // BLOCK)
    lens = torch.randint(seq_len // 2, seq_len + 1, (b,), dtype=torch.int32)
    q = torch.randn(b, HQ, D)
    if impl == "cpp":
        args = (q.numpy(), k_cache.numpy(), v_cache.numpy(), tables.numpy(), lens.numpy(), D ** -0.5)
        fn = lambda: _C.paged_decode_attention(*args)  # noqa: E731
    else:
        fn = lambda: paged_decode_attention_ref(q, k_cache, v_cache, tables, lens, D ** -0.5)  # noqa: E731
    benchmark.pedantic(fn, rounds=20, iterations=3, warmup_rounds=2)
    benchmark.extra_info["gb_per_s"] = 2 * lens.sum().item() * HK * D * 4 / benchmark.stats.stats.median / 1e9


@pytest.mark.cpu
@pytest.mark.parametrize("impl", ["cpp", "torch"])
def test_bench_cpu_logprob(benchmark, impl):
    logits = torch.randn(512, 32000)
    targets = torch.randint(0, 32000, (512,))
    if impl == "cpp":
        fn = lambda: _C.logprob(logits.numpy(), targets.numpy())  # noqa: E731
    else:
        def fn():
            lp = torch.log_softmax(logits, -1)
            return lp.gather(1, targets[:, None]), logits.argmax(-1)
    benchmark.pedantic(fn, rounds=20, iterations=1, warmup_rounds=2)
