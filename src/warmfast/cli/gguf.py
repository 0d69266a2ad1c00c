"""`warmfast convert-gguf FILE DIR`: a GGUF file -> a Hugging Face model folder (model/gguf.py)."""
from __future__ import annotations

from warmfast.model.gguf import DTYPES, convert_gguf


def cmd_convert(args) -> int:
    out = convert_gguf(args.gguf, args.out_dir, args.dtype)  # GGUFError / OSError: one line (cli.main)
    print(f"wrote {out} (config.json, model.safetensors, tokenizer with chat template) from {args.gguf}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("convert-gguf", help="de-quantise a GGUF file into a Hugging Face model folder")
    p.add_argument("gguf", help="the .gguf file (llama, mistral or qwen2 architecture)")
    p.add_argument("out_dir", help="the folder to write (must not exist or be empty)")
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.set_defaults(func=cmd_convert)
