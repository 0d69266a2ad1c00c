"""The small helpers every Triton kernel file shares: device / shape / dtype checks and rounding."""
from __future__ import annotations

import functools
import os

import numpy as np
import torch

try:
    import triton
    import triton.language as tl

    TRITON_MISSING: str | None = None
except ImportError as _e:  # no Triton wheel for this platform (macOS, Windows): *_ref still runs
    TRITON_MISSING = str(_e)


class _NoTriton:
    """Stands in for `triton` and `triton.language` when Triton is not installed.

    Kernel files still import: decorators, `tl.constexpr` annotations (strings under
    `from __future__ import annotations`) and autotune configs evaluate to this object, so the
    plain-torch `*_ref` functions beside each kernel (the CPU path) work. Launching a kernel
    (`kernel[grid](...)`) raises with the reason."""

    def __getattr__(self, name: str) -> "_NoTriton":
        return self

    def __call__(self, *args, **kwargs) -> "_NoTriton":
        return self  # triton.jit(fn), triton.autotune(...)(fn), triton.Config(...)

    def __getitem__(self, grid):
        raise RuntimeError(f"a Triton kernel was launched but Triton is not installed ({TRITON_MISSING}); "
                           "use backend='torch' or install triton on a Linux machine with a GPU")


if TRITON_MISSING is not None:
    triton = tl = _NoTriton()


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter (tests without CUDA)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


@functools.cache
def interpreter_problem(triton_version: str, numpy_version: str) -> str | None:
    """Why Triton's CPU interpreter cannot run these kernels with these versions (None: it can).
    Triton < 3.7 converts 1-element numpy arrays to Python scalars, which numpy 2.4 made an error:
    83 of 155 CPU kernel tests fail with "only 0-dimensional arrays can be converted to Python
    scalars" and nothing says why."""
    if _version(triton_version) < (3, 7) and _version(numpy_version) >= (2, 4):
        return (f"Triton {triton_version}'s CPU interpreter (TRITON_INTERPRET=1) does not work with "
                f"numpy {numpy_version}: it fails inside kernels with 'only 0-dimensional arrays can "
                "be converted to Python scalars'. The CPU kernel path needs triton >= 3.7 "
                "(pip install 'triton>=3.7') or numpy < 2.4; on a GPU any supported Triton works.")
    return None


def check_device(name: str, t: torch.Tensor) -> None:
    """Kernels need CUDA tensors, or CPU tensors under TRITON_INTERPRET=1 (with an interpreter
    that works under the installed numpy)."""
    if t.is_cuda:
        return
    if t.device.type == "cpu" and interpreting():
        problem = interpreter_problem(triton.__version__, np.__version__)
        if problem is not None:
            raise RuntimeError(f"{name}: {problem}")
        return
    raise ValueError(f"{name} is on {t.device}; Triton kernels need a CUDA tensor (or TRITON_INTERPRET=1 on CPU)")


def check_same_device(who: str, ref: torch.Tensor, **tensors: torch.Tensor) -> None:
    """Every tensor must sit on ref's device (a CPU tensor passed to a GPU kernel is a bad pointer)."""
    for name, t in tensors.items():
        if t.device != ref.device:
            raise ValueError(f"{who}: {name} is on {t.device}, but the input is on {ref.device}")


def check_shape(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")


def check_dtype(name: str, t: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> None:
    if t.dtype not in dtypes:
        raise ValueError(f"{name} has dtype {t.dtype}, expected one of {dtypes}")


FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def dot_dtype(t: torch.Tensor):
    """Element type fed to tl.dot: the tensor's own on GPU; fp32 under the interpreter, whose
    bf16 arithmetic is wrong (a bf16 tl.dot there returns garbage), so kernels upcast after load."""
    if interpreting() or t.dtype == torch.float32:
        return tl.float32
    return {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}[t.dtype]



@triton.jit
def round_to(x, DT: tl.constexpr):
    """Round fp32 x to DT's precision (round-to-nearest-even), keeping fp32 storage.

    Marks the points where HF/torch round to the activation dtype. bf16 uses integer bit
    arithmetic because the interpreter's fp32->bf16 cast truncates; the rounded value is then
    exact in DT, so a later .to(DT) is lossless on every backend."""
    if DT == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + (((bits >> 16) & 1) + 0x7FFF)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True)
    elif DT == tl.float16:
        return x.to(tl.float16).to(tl.float32)
    else:
        return x
