"""`warmfast serve` on the command line: the flags. The server itself (serve/server.py) and its
packages (fastapi, uvicorn, prometheus_client) load only when the command runs.
"""
from __future__ import annotations

from warmfast.engine.device import DTYPE_NAMES


def register(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server: the base model and every adapter, "
                                     "batched together (model = the adapter's name)",
                       description="OpenAI-compatible HTTP server over the engine core "
                                   "(base model + adapters in shared batches)")
    p.add_argument("--model", required=True, metavar="DIR", help="model folder (or .gguf file)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                   help="a PEFT LoRA adapter served as model NAME (repeatable)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None,
                   help="clients must send 'Authorization: Bearer KEY' (default: $WARMFAST_API_KEY if set; "
                        "the environment keeps it out of the process list)")
    p.add_argument("--served-model-name", default=None, help="the base model's name (default: the folder's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto", choices=DTYPE_NAMES)
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "triton"))
    p.add_argument("--max-seq-len", type=int, default=None)
    p.add_argument("--tensor-parallel", type=int, default=1, metavar="N",
                   help="split the model over N ranks: N-1 worker processes start with the engine "
                        "(N GPUs from --device's index on CUDA)")
    p.add_argument("--max-batch-size", type=int, default=64, help="sequences per engine step")
    p.add_argument("--max-batch-tokens", type=int, default=8192, help="prefill tokens per engine step")
    p.add_argument("--kv-blocks", type=int, default=None, help="KV cache blocks (default: sized by the engine)")
    p.add_argument("--max-queued", type=int, default=256,
                   help="engine requests in flight (running + waiting) before new ones get 429")
    p.add_argument("--default-max-tokens", type=int, default=256,
                   help="chat completions without max_tokens / max_completion_tokens")
    p.add_argument("--allow-adapter-updates", action="store_true",
                   help="enable POST /v1/load_lora_adapter and /v1/unload_lora_adapter")
    p.add_argument("--max-adapters", type=int, default=None,
                   help="adapter slots, for adapters loaded later (Engine.from_pretrained max_adapters)")
    p.add_argument("--max-lora-rank", type=int, default=None,
                   help="largest LoRA rank a later load may bring (Engine.from_pretrained max_lora_rank)")
    p.set_defaults(func=run)


def run(args) -> int:
    from warmfast.serve.server import serve  # fastapi, uvicorn: only when serving

    return serve(args)
