"""Which device and dtype an engine runs on: checked before anything loads, "auto" resolved.

dtype "auto": bfloat16 on a GPU that supports it; on a GPU without bfloat16 the checkpoint's own
dtype if it is float16 or float32 (else float16); float32 on the CPU (the CPU path computes in
float32; a bf16 checkpoint is widened once at load).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from warmfast.errors import InputError

DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


def check_device(device: str | torch.device) -> torch.device:
    """torch.device(device), refusing names torch does not know and devices this machine lacks."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r} is not a torch device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r}: torch {torch.__version__} sees no CUDA GPU "
                             f"(built with CUDA {torch.version.cuda}); use device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {str(device)!r}: MPS is not available on this machine; use device cpu")
    return dev


def checkpoint_dtype(model_dir: str | Path) -> str | None:
    """The dtype config.json names (torch_dtype, or dtype in newer files), or None."""
    path = Path(model_dir) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # the model loader reports the folder's problem with its own message
    value = raw.get("torch_dtype") or raw.get("dtype") if isinstance(raw, dict) else None
    return value if value in DTYPE_NAMES[1:] else None


def resolve_dtype(dtype: str, device: torch.device, model_dir: str | Path) -> str:
    """The dtype to load in: `dtype` as given, or "auto" resolved (see the module docstring)."""
    if dtype not in DTYPE_NAMES:
        raise InputError(f"dtype must be one of {list(DTYPE_NAMES)}, got {dtype!r}")
    if dtype != "auto":
        return dtype
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bfloat16"
        own = checkpoint_dtype(model_dir)
        return own if own in ("float16", "float32") else "float16"
    return "float32"
