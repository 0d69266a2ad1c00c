"""Batch occupancy of the grid's generation: chunked closed batches vs one call vs the runner's feed.

Before the engine core, the grid runner (run/runner.py) called Engine.generate once per chunk of
`runner.chunk_size` jobs, so every chunk ended with a drain: the batch emptied while the chunk's
longest answers finished, and the next chunk started only then. Now it feeds the core
continuously (runner_feed below). This bench measures that cost on a mini grid: `--rows` requests
over the base model and every adapter with ragged answer lengths (max_new_tokens uniform in
[new / 8, new]: a stand-in for EOS arriving at different steps, which a random model does not do),
generated
  chunked      in chunks of `--chunk` requests, one generate call each (the runner's way)
  continuous   in one generate call (what a runner feeding the engine continuously approaches)
  runner_feed  the runner's loop: requests added while fewer than two batches are unfinished
Batch occupancy = mean sequences per forward step / max batch size, from Engine.generate_stats
summed over the calls. One JSON record goes to --out (machine, date); it is the "before" of the
engine-core redesign, whose target is occupancy >= 90% of the batch while work remains.

  python bench/e2e_grid.py --threads 1
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_score import add_model_args, build_from_args, record_header, write_record  # noqa: E402


def grid_requests(n: int, prompt: int, new: int, vocab: int, arms: list, seed: int = 0):
    """(prompt ids, adapter, max_new_tokens) per job; arms interleaved as the plan lists them."""
    rng = random.Random(seed)
    return [([rng.randrange(10, vocab) for _ in range(rng.randint(prompt // 2, prompt))],
             arms[i % len(arms)], rng.randint(max(1, new // 8), new)) for i in range(n)]


def run(eng, jobs, chunk: int, batch: int) -> dict:
    """Generate `jobs` in calls of `chunk` requests; tokens/s and occupancy over all calls."""
    import warmfast as wf

    rows = steps = tokens = 0
    t0 = time.perf_counter()
    for s in range(0, len(jobs), chunk):
        reqs = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=n, seed=s + i)
                for i, (p, a, n) in enumerate(jobs[s:s + chunk])]
        eng.generate(reqs, max_batch_size=batch, progress=False)
        st = eng.generate_stats
        rows, steps, tokens = rows + st.batch_rows, steps + sum(st.steps.values()), tokens + st.tokens
    secs = time.perf_counter() - t0
    return {"calls": -(-len(jobs) // chunk), "steps": steps, "tokens": tokens, "seconds": round(secs, 3),
            "tokens_per_s": round(tokens / secs, 1), "occupancy": round(rows / (steps * batch), 4)}


def feed(eng, jobs, batch: int) -> dict:
    """The runner's way since the engine core (run/runner.py): requests added while fewer than two
    batches' worth are unfinished, one core step at a time; tokens/s and occupancy."""
    import warmfast as wf
    from warmfast.engine.core import CoreConfig, EngineCore

    reqs = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=n, seed=i) for i, (p, a, n) in enumerate(jobs)]
    tokens = nxt = 0
    t0 = time.perf_counter()
    with EngineCore(eng, CoreConfig(max_batch_size=batch), max_lens=[len(p) + n - 1 for p, _, n in jobs]) as core:
        while nxt < len(reqs) or core.has_unfinished():
            while nxt < len(reqs) and core.num_unfinished < 2 * batch:
                core.add_request(reqs[nxt], request_id=nxt)
                nxt += 1
            tokens += sum(len(o.result.token_ids) for o in core.step() if o.finished)
        steps = sum(core.steps.values())
        secs = time.perf_counter() - t0
        return {"calls": 1, "steps": steps, "tokens": tokens, "seconds": round(secs, 3),
                "tokens_per_s": round(tokens / secs, 1), "occupancy": round(core.batch_rows / (steps * batch), 4)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--rows", type=int, default=256, help="jobs in the mini grid")
    ap.add_argument("--chunk", type=int, default=64, help="jobs per generate call (runner.chunk_size)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    built = build_from_args(args)
    eng = built.engine
    jobs = grid_requests(args.rows, args.prompt, args.new, built.vocab, [None, *built.adapters])
    run(eng, jobs[: args.max_batch], args.max_batch, args.max_batch)  # warm-up
    with torch.inference_mode():
        systems = {"chunked": run(eng, jobs, args.chunk, args.max_batch),
                   "continuous": run(eng, jobs, len(jobs), args.max_batch),
                   "runner_feed": feed(eng, jobs, args.max_batch)}
    record = {**record_header("e2e_grid", args.device, eng.backend), "preset": args.preset,
              "dtype": args.dtype, "adapters": args.adapters, "rank": args.rank, "rows": args.rows,
              "chunk": args.chunk, "max_batch": args.max_batch, "prompt": args.prompt, "new": args.new,
              "systems": systems,
              "ratio_continuous_vs_chunked": round(systems["continuous"]["tokens_per_s"]
                                                   / systems["chunked"]["tokens_per_s"], 2),
              "ratio_runner_feed_vs_chunked": round(systems["runner_feed"]["tokens_per_s"]
                                                    / systems["chunked"]["tokens_per_s"], 2)}
    print(f"{args.rows} jobs, batch {args.max_batch}, chunks of {args.chunk}:")
    for name, r in systems.items():
        print(f"  {name:<11} {r['tokens_per_s']:>8.0f} tokens/s  occupancy {r['occupancy']:.0%}  "
              f"({r['calls']} calls, {r['steps']} steps)")
    path = write_record(record, args.out, f"e2e_grid_{args.device}_{args.preset}")
    print(f"record -> {path}")
    return record


if __name__ == "__main__":
    main()
