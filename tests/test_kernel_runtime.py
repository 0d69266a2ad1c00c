"""Runtime guards of the kernel launchers: the interpreter/numpy version check and the one-time
flash-attn lookup."""
import builtins

import pytest
import torch
import triton

from warmfast.kernels import attention, common, norm


@pytest.mark.parametrize("tv,nv,bad", [("3.6.0", "2.4.6", True), ("3.6.0", "2.3.5", False),
                                        ("3.7.1", "2.4.6", False), ("3.10.0", "2.5.0", False),
                                        ("3.5.1", "2.4.0rc1", True)])
def test_interpreter_problem_by_version(tv, nv, bad):
    problem = common.interpreter_problem(tv, nv)
    assert (problem is not None) == bad
    if bad:
        assert f"Triton {tv}" in problem and f"numpy {nv}" in problem and "triton >= 3.7" in problem


def test_cpu_launch_under_old_interpreter_says_why(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("the interpreter check guards CPU launches only")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    monkeypatch.setattr(common.np, "__version__", "2.4.0")
    x, w = torch.randn(3, 8), torch.ones(8)
    with pytest.raises(RuntimeError, match=r"rmsnorm.*Triton 3\.6\.0's CPU interpreter.*numpy 2\.4\.0.*triton >= 3\.7"):
        norm.rmsnorm(x, w, 1e-6)


def test_flash_attn_looked_up_once(monkeypatch):
    attention._flash_attn_func.cache_clear()
    tries = []
    real_import = builtins.__import__

    def counting(name, *args, **kwargs):
        if name == "flash_attn":
            tries.append(name)
            raise ImportError("no flash_attn here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", counting)
    try:
        assert attention._flash_attn_func() is None
        assert attention._flash_attn_func() is None
    finally:
        attention._flash_attn_func.cache_clear()
    assert tries == ["flash_attn"]
