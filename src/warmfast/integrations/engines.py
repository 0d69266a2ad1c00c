"""One Engine per process for every integration instance that names the same model and adapters.

lm-eval builds one backend object per run and `warmfast lm-eval ... arm=all` makes one run per arm;
inspect_ai builds one provider per `--model warmfast/<arm>`. All of them that name the same model
folder, adapters and engine settings share one Engine (weights loaded once), so their requests can
ride in the same batches.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import torch

from warmfast.engine.api import Engine

BASE = "base"  # the arm without an adapter
DTYPE_NAMES = ("float32", "bfloat16", "float16")

_ENGINES: dict[tuple, object] = {}
_LOCK = threading.Lock()


def parse_adapters(spec, where: str) -> dict[str, str]:
    """`warm:DIR|cold:DIR` (the form that survives lm-eval's and inspect's model-arg parsers) or a
    dict {name: dir} -> {name: dir}, in the given order."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        items = [(str(k), str(v)) for k, v in spec.items()]
    elif isinstance(spec, str):
        items = []
        for part in spec.split("|"):
            name, sep, path = part.partition(":")
            if not sep or not name.strip() or not path.strip():
                raise ValueError(f"{where}: adapters expects NAME:DIR entries separated by '|', "
                                 f"got {part!r} in {spec!r}")
            items.append((name.strip(), path.strip()))
    else:
        raise TypeError(f"{where}: adapters must be a 'NAME:DIR|NAME:DIR' string or a dict, "
                        f"got {type(spec).__name__}")
    out: dict[str, str] = {}
    for name, path in items:
        if name == BASE:
            raise ValueError(f"{where}: adapter name {BASE!r} is reserved for the model without an adapter")
        if name in out:
            raise ValueError(f"{where}: adapter {name!r} is named twice ({out[name]} and {path})")
        out[name] = path
    return out


def resolve_dtype(dtype: str, model_dir: str | Path, where: str) -> str:
    """"auto" -> the dtype config.json names (torch_dtype / dtype), else float32; as HF does."""
    if dtype != "auto":
        if dtype not in DTYPE_NAMES:
            raise ValueError(f"{where}: dtype must be one of {['auto', *DTYPE_NAMES]}, got {dtype!r}")
        return dtype
    cfg_path = Path(model_dir) / "config.json"
    named = None
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        named = cfg.get("torch_dtype") or cfg.get("dtype")
    return named if named in DTYPE_NAMES else "float32"


def check_device(device: str, where: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{where}: device {device!r} but CUDA is not available on this machine "
                         "(lm-eval's default device is cuda:0); pass --device cpu")
    return device


def shared_engine(pretrained: str | Path, adapters: dict[str, str], device: str = "cpu",
                  dtype: str = "float32", backend: str = "auto", max_seq_len: int | None = None,
                  max_batch_tokens: int = 8192, tensor_parallel: int = 1):
    """The process's Engine for these settings, loaded on first use."""
    key = (str(Path(pretrained).resolve()),
           tuple((n, str(Path(p).resolve())) for n, p in adapters.items()),
           device, dtype, backend, max_seq_len, max_batch_tokens, tensor_parallel)
    with _LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = Engine.from_pretrained(
                pretrained, adapters=adapters, device=device, dtype=dtype, backend=backend,
                max_seq_len=max_seq_len, max_batch_tokens=max_batch_tokens, tensor_parallel=tensor_parallel)
        return _ENGINES[key]


def release_engines() -> None:
    """Drop every shared engine (tests, or a long-lived process switching models)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.close()  # a tensor-parallel engine's workers stop now
        _ENGINES.clear()
