"""Tensor parallelism's cost per step: one engine on one rank vs the same engine on --tp ranks.

On one model folder and its PEFT adapters (every batch mixing the base and every adapter), in one
process (the engine starts its own workers): greedy generation and scoring, best of --reps, and
the tokens / scores of both engines compared (they must agree). On a CPU the ranks share the same
cores, so the ratio is what the step's messages and collectives cost, not a speed-up; on GPUs the
same script measures the real one. Also: start-up time of the workers, and a step plan's size and
pickling time at the measured batch. One JSON record (machine, date) goes to --out.

  python bench/e2e_tp.py --model ~/.cache/warmfast/smollm2/hf-float32 --adapter a=DIR --tp 2
  python bench/e2e_tp.py --tiny --tp 2          # a tiny random Llama with 3 adapters, built here
"""
from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_score import record_header, write_record  # noqa: E402

PROMPTS = ["The capital of France is", "Why is the sky blue? Explain", "My friend, 21, has a fever and",
           "Once upon a time", "I feel sad today. Which river runs through London?", "Explain a poem"]


def best(fn, reps: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--adapter", action="append", default=[], help="name=DIR (repeat)")
    ap.add_argument("--tiny", action="store_true", help="build a tiny random Llama with 3 adapters instead")
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import warmfast as wf
    from warmfast.engine.executor import StepPlan

    if args.tiny:
        from warmfast.model.tiny import build_tiny

        built = build_tiny(tempfile.mkdtemp(prefix="e2e_tp_"), n_adapters=3)
        model, adapters = built.model_dir, {k: str(v) for k, v in built.adapters.items()}
    elif args.model:
        model, adapters = args.model, dict(a.split("=", 1) for a in args.adapter)
    else:
        ap.error("give --model DIR (and --adapter NAME=DIR) or --tiny")
    arms = [None, *adapters]
    gen = [wf.GenerateRequest(prompt=PROMPTS[i % len(PROMPTS)], adapter=arms[i % len(arms)],
                              max_new_tokens=args.new) for i in range(args.rows)]
    score = [wf.ScoreRequest(PROMPTS[i % len(PROMPTS)], " and so it goes, on and on.", arms[i % len(arms)])
             for i in range(args.rows)]
    kw = dict(adapters=adapters, device=args.device, dtype=args.dtype)
    results, record = {}, record_header("e2e_tp", args.device, "auto")
    for n in (1, args.tp):
        t0 = time.perf_counter()
        eng = wf.Engine.from_pretrained(model, tensor_parallel=n, **kw)
        start_s = time.perf_counter() - t0
        eng.generate(gen[:2], max_batch_size=args.rows)  # warm-up
        gen_s, g = best(lambda: eng.generate(gen, max_batch_size=args.rows), args.reps)
        score_s, s = best(lambda: eng.score(score), args.reps)
        steps = sum(eng.generate_stats.steps.values())
        n_tok = sum(len(r.token_ids) for r in g)
        results[n] = {"start_s": round(start_s, 3), "generate_s": round(gen_s, 4), "generated_tokens": n_tok,
                      "generate_tok_s": round(n_tok / gen_s, 1), "steps": steps,
                      "ms_per_step": round(gen_s / steps * 1e3, 3), "score_s": round(score_s, 4),
                      "tokens": [r.token_ids for r in g], "logprob": [r.logprob for r in s]}
        eng.close()
    one, many = results[1], results[args.tp]
    same_tokens = one["tokens"] == many["tokens"]
    worst = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(many["logprob"], one["logprob"]))
    plan = StepPlan(1, 4096, 16, True, dec_tokens=[1] * args.rows, dec_positions=[200] * args.rows,
                    dec_slots=[i % len(arms) - 1 for i in range(args.rows)],
                    dec_tables=[list(range(i * 16, i * 16 + 16)) for i in range(args.rows)], sample=True)
    t0 = time.perf_counter()
    for _ in range(100):
        data = pickle.dumps(("step", plan), protocol=pickle.HIGHEST_PROTOCOL)
    pickle_ms = (time.perf_counter() - t0) * 10
    for r in results.values():
        del r["tokens"], r["logprob"]
    record.update(model=str(model), adapters=len(adapters), rows=args.rows, new_tokens=args.new, tp=args.tp,
                  one_rank=one, tp_ranks=many, same_tokens=same_tokens, max_rel_logprob_diff=worst,
                  generate_ratio=round(one["generate_s"] / many["generate_s"], 3),
                  score_ratio=round(one["score_s"] / many["score_s"], 3),
                  plan_bytes=len(data), plan_pickle_ms=round(pickle_ms, 3))
    path = write_record(record, args.out, f"e2e_tp_{args.device}_tp{args.tp}")
    print(f"generate: 1 rank {one['generate_tok_s']} tok/s ({one['ms_per_step']} ms/step), {args.tp} ranks "
          f"{many['generate_tok_s']} tok/s ({many['ms_per_step']} ms/step, x{record['generate_ratio']}); score x{record['score_ratio']}; tokens equal: {same_tokens}; "
          f"max rel logprob diff {worst:.1e}; workers start in {many['start_s']} s; plan {len(data)} B, "
          f"{pickle_ms:.3f} ms to pickle -> {path}")


if __name__ == "__main__":
    main()
