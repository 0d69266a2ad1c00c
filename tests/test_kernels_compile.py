"""Every kernel lowered to sm_90 cubin by the triton wheel's ptxas: what the CPU interpreter never checks."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the kernel tests compile for the real card")
@pytest.mark.parametrize("op", ["attention", "logprob", "norm", "rope", "lora"])
def test_kernels_compile_for_h100(op):
    script = Path(__file__).resolve().parents[1] / "bench" / "bench_compile.py"
    run = subprocess.run([sys.executable, str(script), "--ops", op, "--arch", "90", "--quick"], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "TRITON_INTERPRET": "0"})
    assert run.returncode == 0, run.stdout + run.stderr
