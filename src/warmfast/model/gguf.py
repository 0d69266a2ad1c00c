"""GGUF as a way in: a `.gguf` file -> a plain Hugging Face folder warmfast (and transformers) load.

    warmfast convert-gguf SmolLM2-135M-Instruct.Q4_1.gguf smollm2/ --dtype float32

transformers' GGUF loader reads the file (through the `gguf` package) and de-quantises every
tensor; the weights are then copied into a fresh model built from the same config without its
`quantization_config` (transformers' save_pretrained refuses a model loaded from GGUF) and saved
as safetensors, beside the tokenizer (with its chat template) and the generation config.
`Engine.from_pretrained("x.gguf")` converts once into a cache folder (`cached_conversion`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from warmfast.errors import InputError

# GGUF general.architecture values warmfast runs (model/config.py: Llama, Mistral, Qwen2)
ARCHITECTURES = ("llama", "mistral", "qwen2")
DTYPES = ("float32", "bfloat16", "float16")


class GGUFError(InputError):
    """A GGUF file warmfast cannot convert (architecture, quantisation type, unreadable file)."""


def inspect_gguf(path: str | Path) -> dict:
    """Architecture and tensor quantisation types of a GGUF file, checked against what converts.

    Returns {"architecture": str, "quant_types": sorted list of type names, "n_tensors": int}.
    """
    import gguf
    from gguf.quants import _type_traits  # the types whose de-quantisation the gguf package implements

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {str(path)!r} does not exist")
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as err:
        raise GGUFError(f"{path}: not a readable GGUF file ({err})") from err
    field = reader.get_field("general.architecture")
    if field is None:
        raise GGUFError(f"{path}: no general.architecture key in the GGUF metadata")
    arch = bytes(field.parts[field.data[0]]).decode()
    if arch not in ARCHITECTURES:
        raise GGUFError(f"{path}: architecture {arch!r} is not supported; warmfast converts "
                        f"{', '.join(ARCHITECTURES)}")
    plain = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16}
    types = {t.tensor_type for t in reader.tensors}
    bad = sorted(t.name for t in types if t not in plain and t not in _type_traits)
    if bad:
        ok = sorted(t.name for t in plain | set(_type_traits))
        raise GGUFError(f"{path}: quantisation type(s) {bad} cannot be de-quantised by the installed "
                        f"gguf package; supported: {ok}")
    return {"architecture": arch, "quant_types": sorted(t.name for t in types),
            "n_tensors": len(reader.tensors)}


def convert_gguf(path: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """De-quantise `path` into a Hugging Face folder at out_dir (written whole, then renamed)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise GGUFError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}")
    path, out_dir = Path(path), Path(out_dir)
    info = inspect_gguf(path)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"output folder {out_dir} exists and is not empty; choose another or remove it")
    folder, name = str(path.parent), path.name
    torch_dtype = getattr(torch, dtype)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch_dtype
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise GGUFError(f"{path}: de-quantised tensors do not match a {info['architecture']} model of "
                        f"this config; missing {missing[:5]}, unexpected {unexpected[:5]}")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the folder is an ordinary model folder
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "gguf_source.json").write_text(json.dumps(
            {"file": str(path.resolve()), "dtype": dtype, **info}, indent=1) + "\n")
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def cache_root() -> Path:
    """$WARMFAST_CACHE, else $XDG_CACHE_HOME/warmfast, else ~/.cache/warmfast."""
    if os.environ.get("WARMFAST_CACHE"):
        return Path(os.environ["WARMFAST_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "warmfast"


def cached_conversion(path: str | Path, dtype: str = "float32") -> Path:
    """The converted folder of `path`, made once under cache_root()/gguf/ and keyed by the file's
    name, size, modification time and dtype (a changed file converts again)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {str(path)!r} does not exist")
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{dtype}".encode()).hexdigest()[:16]
    out = cache_root() / "gguf" / f"{path.stem}-{dtype}-{key}"
    if not (out / "config.json").is_file():
        convert_gguf(path, out, dtype)
    return out
