"""Kernel benches (pytest-benchmark): CUDA only; each reports physical units against H100 ceilings.

    python -m pytest bench/bench_lora.py --benchmark-json=out.json      # on a GPU machine

Each bench times the Triton kernel and its plain-torch *_ref on the same inputs in the same
process (the ratio is the claim, never an absolute time in a test) and stores, in the record's
extra_info: seconds per launch, TFLOP/s and/or GB/s, and the fraction of the H100 ceiling.
"""
from __future__ import annotations

import pytest
import torch

H100_MATMUL_TFLOPS = 786.0  # dense bf16 tensor-core ceiling used for fractions
H100_COPY_GBS = 3000.0  # HBM3 copy ceiling (GB/s)


def pytest_configure(config):
    config.addinivalue_line("markers", "cpu: a CPU bench (the C++ primitives of the CPU path); runs anywhere")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="kernel benches need a CUDA GPU: on CPU the Triton kernels run only "
                                   "through the interpreter, whose timings mean nothing")
    for item in items:
        if item.get_closest_marker("cpu") is None:
            item.add_marker(skip)


@pytest.fixture
def measure(benchmark):
    """measure(fn, flops=..., nbytes=...) times `inner` back-to-back launches per round (one sync
    per round, so launch latency overlaps as it does in a model) and records physical units."""

    def _measure(fn, *, flops: float = 0.0, nbytes: float = 0.0, inner: int = 10, rounds: int = 20) -> float:
        def call():
            for _ in range(inner):
                fn()
            torch.cuda.synchronize()

        benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=3)
        sec = benchmark.stats.stats.median / inner
        info = {"seconds_per_launch": sec, "card": torch.cuda.get_device_name()}
        if flops:
            info["tflops"] = flops / sec / 1e12
            info["fraction_of_matmul_ceiling"] = info["tflops"] / H100_MATMUL_TFLOPS
        if nbytes:
            info["gb_per_s"] = nbytes / sec / 1e9
            info["fraction_of_copy_ceiling"] = info["gb_per_s"] / H100_COPY_GBS
        benchmark.extra_info.update(info)
        print(f"\n{benchmark.name}: {sec * 1e6:.1f} us" +
              (f", {info['tflops']:.1f} TFLOP/s ({info['fraction_of_matmul_ceiling']:.0%})" if flops else "") +
              (f", {info['gb_per_s']:.0f} GB/s ({info['fraction_of_copy_ceiling']:.0%})" if nbytes else ""))
        return sec

    return _measure
