"""Scoring and generation benches in one process on one random model built once in memory.

What bench/gpu_check.sh runs on a GPU: the Llama-3.1-8B-shaped random bf16 model and its
adapters are built once (bench/e2e_model.py, ~30 s on a GPU instead of writing and reading a
16 GB checkpoint twice), then scoring (bench/e2e_score.py) and generation at each request count
(bench/e2e_generate.py) are measured on it, each record written as soon as it is measured. Parts
that would start after --deadline-s are skipped and recorded as skipped.

  python bench/e2e_check.py --preset llama8b --device cuda --dtype bfloat16 --adapters 8 --rank 16 \
      --ctx 236 --cont 20 --score-rows 288 --no-hf-loop --prompt 128 --new 128 --gen-rows 64 256 \
      --hf-max-rows 64 --cuda-graphs --reps 1 --deadline-s 400 --out OUT
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_generate import add_generate_args, run_generate  # noqa: E402
from e2e_score import add_model_args, add_score_args, build_from_args, run_score, write_record  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    add_score_args(ap)
    add_generate_args(ap)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--parts", nargs="+", default=["score", "generate"], choices=["score", "generate"])
    ap.add_argument("--deadline-s", type=float, default=None,
                    help="skip parts that would start this many seconds after the start (default: "
                         "3/4 of WF_STEP_LIMIT, the limit bench/gpu_check.sh gives this step, if set)")
    args = ap.parse_args(argv)
    start = time.monotonic()
    if args.deadline_s is None and os.environ.get("WF_STEP_LIMIT"):
        args.deadline_s = 0.75 * float(os.environ["WF_STEP_LIMIT"])  # a part started late is killed
    deadline = None if args.deadline_s is None else start + args.deadline_s
    if args.threads:
        torch.set_num_threads(args.threads)
    built = build_from_args(args)
    print(f"built {args.preset} ({built.params / 1e6:.1f}M parameters) + {args.adapters} adapters "
          f"in {built.seconds:.1f}s", flush=True)
    summary = {"bench": "e2e_check", "preset": args.preset, "build_seconds": round(built.seconds, 1),
               "deadline_s": args.deadline_s, "parts": {}}
    if "score" in args.parts:
        if deadline is not None and time.monotonic() > deadline:
            summary["parts"]["score"] = "skipped: out of time (global deadline)"
        else:
            rec = run_score(built, args, args.reps)
            summary["parts"]["score"] = rec["tokens_per_s"]
    if "generate" in args.parts:
        recs = run_generate(built, args, args.reps, deadline)
        summary["parts"]["generate"] = [r.get("tokens_per_s", r.get("skipped")) for r in recs]
    summary["seconds"] = round(time.monotonic() - start, 1)
    path = write_record(summary, args.out, f"e2e_check_{args.device}_{args.preset}")
    print(json.dumps(summary))
    print(f"summary -> {path}")
    return summary


if __name__ == "__main__":
    main()
