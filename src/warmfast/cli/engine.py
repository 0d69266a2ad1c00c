"""`warmfast score | generate | tiny`: the engine from the command line."""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

from warmfast.cli.logprob_rows import LogprobRows
from warmfast.cli_common import adapter_flags, check_output_file, output_dir_arg, write_atomically
from warmfast.engine.api import Engine, GenerateRequest, ScoreRequest
from warmfast.engine.device import DTYPE_NAMES
from warmfast.engine.rows import GENERATE_ROW, SCORE_ROW, parse_rows, read_jsonl
from warmfast.errors import InputError, RequestError
from warmfast.model.tiny import build_tiny
from warmfast.tasks.files import read_records

log = logging.getLogger("warmfast")


def _engine(args, adapters: dict[str, str]) -> Engine:
    return Engine.from_pretrained(args.model, adapters=adapters, device=args.device, dtype=args.dtype,
                                  backend=args.backend, tensor_parallel=args.tensor_parallel)


def _progress(args) -> bool:
    return not getattr(args, "quiet", False)


def _rows(args, schema, adapters: dict[str, str]) -> list[tuple[str, dict, dict]]:
    """The validated rows of --input, checked against the --adapter names: all before any model
    loads, so a bad row costs nothing. (.jsonl: errors name the line; .json/.csv/.parquet: the record.)"""
    path = Path(args.input)
    if path.suffix.lower() == ".jsonl":
        records = read_jsonl(path)
    else:
        records = [(f"{path} record {i}", r) for i, r in enumerate(read_records(path), 1)]
    rows = parse_rows(records, schema, str(path))
    for where, values, _ in rows:
        name = values["adapter"]
        if name not in (None, "base") and name not in adapters:
            raise InputError(f"{where}: adapter {name!r} is not loaded; "
                             + (f"--adapter gave {sorted(adapters)}" if adapters else "no --adapter was given")
                             + " (null or 'base' = the base model)")
    return rows


def _at_row(err: RequestError, wheres: list[str]) -> InputError:
    """An engine error about request i, re-said about the input row it came from."""
    if err.index is None or not 0 <= err.index < len(wheres):
        return err
    msg = str(err).split(": ", 1)[-1] if str(err).startswith(("ScoreRequest #", "GenerateRequest #")) else str(err)
    return InputError(f"{wheres[err.index]}: {msg}")


def cmd_score(args) -> int:
    adapters = adapter_flags(args.adapter)
    out_path = check_output_file(args.output)
    rows = _rows(args, SCORE_ROW, adapters)
    eng = _engine(args, adapters)
    reqs = [ScoreRequest(v["context"], v["continuation"], v["adapter"], messages=v["messages"])
            for _, v, _ in rows]
    t0 = time.perf_counter()
    try:
        results = eng.score(reqs, max_batch_tokens=args.batch_tokens, progress=_progress(args))
    except RequestError as err:
        raise _at_row(err, [w for w, _, _ in rows]) from err
    dt = time.perf_counter() - t0
    eng.close()
    write_atomically(out_path, (json.dumps({**raw, "logprob": res.logprob, "token_logprobs": res.token_logprobs,
                                            "is_greedy": res.is_greedy, "num_tokens": res.num_tokens}) + "\n"
                                for (_, _, raw), res in zip(rows, results)))
    log.info("scored %d rows in %.2fs -> %s", len(rows), dt, out_path)
    return 0


def _generate_request(v: dict, args, sample: int) -> GenerateRequest:
    """One engine request of a validated row; sample k of n > 1 gets its own random stream."""
    rid = v["request_id"]
    if v["n"] > 1:  # n samples of one prompt: request ids request_id + k, or (no request_id) seeds seed + k
        rid = None if rid is None else (rid + sample) % 2**64
    pick = lambda name, flag: flag if v[name] is None else v[name]  # noqa: E731 (row first, then the flag)
    return GenerateRequest(
        prompt=v["prompt"], messages=v["messages"], adapter=v["adapter"],
        max_new_tokens=pick("max_new_tokens", args.max_new_tokens), temperature=pick("temperature", args.temperature),
        top_p=pick("top_p", args.top_p), top_k=pick("top_k", args.top_k), min_p=pick("min_p", args.min_p),
        seed=pick("seed", args.seed) + (sample if v["n"] > 1 and rid is None else 0),
        stop=v["stop"], request_id=rid, logprobs=pick("logprobs", args.logprobs),
        prompt_logprobs=pick("prompt_logprobs", args.prompt_logprobs))


def cmd_generate(args) -> int:
    adapters = adapter_flags(args.adapter)
    out_path = check_output_file(args.output)
    for name in ("max_new_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "logprobs"):  # as a row's would be
        GENERATE_ROW.check(name, getattr(args, name), f"--{name.replace('_', '-')}")
    rows = _rows(args, GENERATE_ROW, adapters)
    reqs, owner = [], []  # owner[i]: the row request i came from
    for i, (where, v, _) in enumerate(rows):
        for k in range(v["n"]):
            try:
                reqs.append(_generate_request(v, args, k))
            except InputError as err:
                raise InputError(f"{where}: {err}") from None
            owner.append(i)
    eng = _engine(args, adapters)
    try:  # every request is validated here, before the first step
        outputs = eng.stream(reqs, max_batch_size=args.max_batch_size, cuda_graphs=args.cuda_graphs)
    except RequestError as err:
        raise _at_row(err, [rows[o][0] for o in owner]) from err

    lp_rows = LogprobRows(eng)

    def line(i: int, res: list) -> str:
        where, _, raw = rows[i]
        # the asked logprobs / prompt_logprobs values give way to the lists they asked for
        row = {k: v for k, v in raw.items() if k not in ("logprobs", "prompt_logprobs")}
        if len(res) == 1:
            out = {"text": res[0].text, "token_ids": res[0].token_ids, "finish_reason": res[0].finish_reason,
                   **lp_rows.generated(res[0])}
        else:  # OpenAI's n: one choice per sample
            out = {"choices": [{"index": k, "text": r.text, "token_ids": r.token_ids, "finish_reason": r.finish_reason,
                                **lp_rows.generated(r)} for k, r in enumerate(res)]}
        out.update(lp_rows.prompt(res[0], reqs[first[i]], where))  # the same prompt for every sample
        return json.dumps({**row, **out}) + "\n"

    # each row is written (and flushed) as soon as all its samples are done; --ordered holds rows
    # back until every earlier row is written, so the file is in input order
    first = [owner.index(i) for i in range(len(rows))]
    per_row: list[list] = [[None] * rows[i][1]["n"] for i in range(len(rows))]
    left = [rows[i][1]["n"] for i in range(len(rows))]
    ready, next_row = set(), 0
    with tqdm(total=len(reqs), unit="req", desc="generate", disable=not _progress(args)) as bar, \
            open(out_path, "w", encoding="utf-8") as f:
        for out in outputs:
            if not out.finished:
                continue
            bar.update(1)
            o = owner[out.request_id]
            per_row[o][out.request_id - first[o]] = out.result
            left[o] -= 1
            if left[o]:
                continue
            if not args.ordered:
                f.write(line(o, per_row[o]))
                f.flush()
                continue
            ready.add(o)
            while next_row in ready:
                f.write(line(next_row, per_row[next_row]))
                ready.discard(next_row)
                next_row += 1
            f.flush()
    stats = eng.generate_stats.summary() if eng.generate_stats is not None else "nothing to generate"
    log.info("generated %s -> %s", stats, out_path)
    eng.close()
    return 0


def cmd_tiny(args) -> int:
    out = args.output_dir or args.folder
    if out is None or (args.output_dir and args.folder and args.output_dir != args.folder):
        raise InputError("give the folder once: warmfast tiny --output-dir DIR")
    paths = build_tiny(out, arch=args.arch, n_adapters=args.adapters, seed=args.seed)
    print(f"model: {paths.model_dir}")
    for name, p in paths.adapters.items():
        print(f"adapter {name}: {p}")
    return 0


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR",
                   help="local Hugging Face model folder (config.json, *.safetensors, tokenizer files)")
    p.add_argument("--adapter", action="append", metavar="NAME=DIR", help="PEFT LoRA adapter (repeatable)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--dtype", default="auto", choices=DTYPE_NAMES,
                   help="auto (default): bfloat16 on a GPU that supports it, float32 on the CPU")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "triton"])
    p.add_argument("--tensor-parallel", type=int, default=1, metavar="N",
                   help="split the model over N ranks: N-1 worker processes start with the engine "
                        "(N GPUs from --device's index on CUDA)")
    p.add_argument("--input", required=True, metavar="FILE", help="JSONL requests, one object a line")
    p.add_argument("--output", required=True, metavar="FILE", help="JSONL results (the input rows plus results)")


def register(sub) -> None:
    p = sub.add_parser("score", help="log-probs of continuations (JSONL: context, continuation, adapter)",
                       description="Rows: context, continuation (text or token ids), adapter (null = base), "
                                   "id and metadata (copied to the output).")
    _engine_args(p)
    p.add_argument("--batch-tokens", type=int, default=8192)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("generate", help="sample continuations (JSONL: prompt or messages, adapter, ...)",
                       description="Rows: prompt or messages, adapter, max_new_tokens (or OpenAI's max_tokens), "
                                   "temperature, top_p, top_k, min_p, seed, stop (a string or a list), request_id, "
                                   "n (samples; the output row then holds choices), logprobs (k in 0..20: each "
                                   "token's log-prob and the k most likely tokens), prompt_logprobs (true: the "
                                   "prompt's too), id, metadata. A row's value wins over the flag of the same name.")
    _engine_args(p)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--logprobs", type=int, default=None, metavar="K",
                   help="each generated token's log-prob and the K (0..20) most likely tokens at its step")
    p.add_argument("--prompt-logprobs", action="store_true", help="the log-prob of every prompt token too")
    p.add_argument("--max-batch-size", type=int, default=64, help="sequences per decode step")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="decode steps replay per-batch-size CUDA graphs (CUDA, triton backend)")
    p.add_argument("--ordered", action="store_true",
                   help="write rows in input order (default: each row as soon as it finishes)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("tiny", help="write a tiny random model, tokenizer and PEFT adapters")
    p.add_argument("folder", nargs="?", default=None, help=argparse.SUPPRESS)  # the old spelling
    output_dir_arg(p, help="where to write model/ and adapter_*/")
    p.add_argument("--arch", default="llama", choices=["llama", "mistral", "qwen2"])
    p.add_argument("--adapters", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tiny)
