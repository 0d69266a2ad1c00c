"""Every Triton launch the engine makes, compiled for GPU targets by the triton wheel's LLVM and
ptxas: what the CPU interpreter never checks (lowering, registers, spills, shared memory).

The launches are recorded from the real launchers at the shapes the engine uses
(bench/compile_launches.py) and compiled with the signature, constants and alignment hints
Triton's runtime computes for them (bench/bench_compile.py), every autotune config its pruning
keeps, the sampling kernel included. A variant that fails, spills or overflows shared memory
fails the test.

CI compiles for sm_90 under the installed triton (3.7 there). The device image runs triton 3.6
and A100s are sm_80: that matrix runs when a triton 3.6 install exists in WF_TRITON36_DIR
(default ~/.cache/warmfast/triton-3.6.0; make it with
`pip install --no-deps --target ~/.cache/warmfast/triton-3.6.0 triton==3.6.0`), and is skipped
otherwise, as the skip says: 228 compiles (several minutes on 2 cores). bench/results/aot_compile_*.json
holds the full matrix (every workload of bench/compile_launches.py).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_compile.py"
TRITON36 = Path(os.environ.get("WF_TRITON36_DIR", Path.home() / ".cache" / "warmfast" / "triton-3.6.0"))
gpu_skip = pytest.mark.skipif(torch.cuda.is_available(),
                              reason="on a GPU machine the kernel tests compile for the real card")


def compile_report(tmp_path, *args, env=None) -> dict:
    out = tmp_path / "aot.json"
    run = subprocess.run([sys.executable, str(SCRIPT), *args, "--json", str(out)], capture_output=True, text=True,
                         timeout=1800, env={**os.environ, "TRITON_INTERPRET": "0", **(env or {})})
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    failures = [f for r in report["runs"] for f in r["failures"]]
    assert run.returncode == 0 and not failures, "\n".join(failures) + run.stderr[-2000:]
    return report


@gpu_skip
def test_every_engine_launch_compiles_for_sm90(tmp_path):
    report = compile_report(tmp_path, "--arch", "90", "--workloads", "llama8b-bf16-r16", "tiny-fp32-r8")
    (run,) = report["runs"]
    rows = run["variants"]
    kernels = {r["kernel"] for r in rows}
    assert {"_rmsnorm_kernel", "_rope_kernel", "_prefill_kernel", "_paged_decode_kernel", "_shrink_kernel",
            "_expand_kernel", "_decode_shrink_kernel", "_decode_expand_kernel", "_logprob_kernel",
            "_sample_kernel", "_silu_mul_kernel"} <= kernels
    # every autotune config of the bf16 log-prob head, one of its own for fp32
    bf16 = {r["config"] for r in rows if r["kernel"] == "_logprob_kernel" and r["workload"] == "llama8b-bf16-r16"}
    fp32 = {r["config"] for r in rows if r["kernel"] == "_logprob_kernel" and r["workload"] == "tiny-fp32-r8"}
    assert len(bf16) == 3 and len(fp32) == 1 and not bf16 & fp32
    # the runtime's alignment hints reach the compiler: 16-byte aligned pointers are marked
    sample = next(r for r in rows if r["kernel"] == "_sample_kernel")
    assert "probs_ptr" in sample["aligned_args"] and "out_ptr" in sample["aligned_args"]
    for r in rows:
        assert r["registers"] > 0 and r["spill_stores"] == 0 and r["spill_loads"] == 0, r


@gpu_skip
@pytest.mark.skipif(not (TRITON36 / "triton" / "__init__.py").is_file(),
                    reason=f"no triton 3.6 install in {TRITON36} (set WF_TRITON36_DIR, see the module docstring)")
def test_every_launch_compiles_for_sm90_and_sm80_under_triton_36_and_installed(tmp_path):
    report = compile_report(tmp_path, "--arch", "90", "80", "--workloads", "llama8b-bf16-r16", "tiny-fp32-r8",
                            "--triton-path", str(TRITON36))
    versions = [r["triton"] for r in report["runs"]]
    assert len(versions) == 2 and versions[1].startswith("3.6"), versions
    for run in report["runs"]:
        assert {r["arch"] for r in run["variants"]} == {90, 80}
