"""Where a generation step's time goes on the CPU: Engine.generate on a mixed-adapter batch, timed
by part, plus torch.profiler's top ops.

On the CPU every op is synchronous, so a wall-clock timer around a call is its cost. This bench
wraps (on this process's objects only, nothing in the package changes) the calls a step makes and
sums their time per step kind (prefill / decode / mixed):
  schedule      Scheduler.schedule (admission, block allocation)
  batch_build   build_decode / build_prefill / build_mixed / the block tables (host tensors)
  embed_other   the forward minus every part below (embedding gather, residual adds, reshapes)
  gemm          the base projections (Model.linear minus its LoRA call)
  lora          ops.lora (shrink + block-diagonal expand per adapter segment)
  attention     ops.decode_attention / ops.attention (C++ paged decode on fp32 CPU)
  kv_write      PagedKVCache.write
  norm, rope, silu_mul
  lm_head       the logits GEMM of the rows that sample ([B, H] @ [H, V]), timed alone at B = --rows
  sample        sample_logits (argmax for greedy rows, the C++ Philox sampler otherwise)
  postprocess   stop checks, result objects, detokenisation of finished rows (the rest of _sample)
  python_other  EngineCore.step minus everything above (the step loop's own Python)
The generate call runs once to warm up, once timed by parts, and once under torch.profiler (its
top ops by self CPU time; the profiler's own overhead makes that run slower). One JSON record
(machine, date, load average) goes to --out.

  python bench/cpu_profile.py --model ~/.cache/warmfast/smollm2/hf-float32 --label smollm2-135m \
      --adapters 3 --rank 16 --rows 32 --prompt 64 --new 32 --threads 2
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_generate import make_prompts  # noqa: E402
from e2e_score import add_model_args, build_from_args, record_header, write_record  # noqa: E402


class Timers:
    """Seconds per (step kind, part); `kind` is set by the wrapped Scheduler.schedule."""

    def __init__(self):
        self.kind = "none"
        self.s = defaultdict(float)
        self.steps = defaultdict(int)
        self.depth = defaultdict(int)  # nested calls of one part (linear -> lora) count once

    def wrap(self, owner, attr: str, part: str, on_result=None):
        fn = getattr(owner, attr)

        def timed(*a, **kw):
            self.depth[part] += 1
            t0 = time.perf_counter()
            try:
                out = fn(*a, **kw)
            finally:
                self.depth[part] -= 1
                if not self.depth[part]:
                    self.s[(self.kind, part)] += time.perf_counter() - t0
            if on_result is not None:
                on_result(out)
            return out
        setattr(owner, attr, timed)


def instrument(eng, t: Timers) -> None:
    from warmfast.engine import core, scheduler
    from warmfast.engine.kv_cache import PagedKVCache
    from warmfast.model import llama

    def kind_of(work):
        t.kind = work.kind
        t.steps[work.kind] += 1
    t.wrap(scheduler.Scheduler, "schedule", "schedule", kind_of)
    for name in ("build_decode", "build_prefill", "build_mixed", "_tables"):
        t.wrap(core, name, "batch_build")
    for name, part in (("lora", "lora"), ("decode_attention", "attention"), ("attention", "attention"),
                       ("rmsnorm", "norm"), ("rope", "rope"), ("silu_mul", "silu_mul")):
        t.wrap(eng.ops, name, part)
    t.wrap(PagedKVCache, "write", "kv_write")
    t.wrap(llama.Model, "linear", "linear")  # gemm = linear - lora
    t.wrap(llama.Model, "forward", "forward")
    t.wrap(core, "sample_logits", "sample")
    t.wrap(core.EngineCore, "_sample", "sample_all")  # lm_head + sample + postprocess
    t.wrap(core.EngineCore, "step", "step")


def lm_head_seconds(eng, rows: int, reps: int = 20) -> float:
    """The logits GEMM of `rows` rows, alone (its share of _sample)."""
    h = torch.randn(rows, eng.model.cfg.hidden_size, dtype=eng.dtype)
    w = eng.model.weights.lm_head
    h @ w.T
    t0 = time.perf_counter()
    for _ in range(reps):
        h @ w.T
    return (time.perf_counter() - t0) / reps


def breakdown(t: Timers, kind: str, lm_head_s: float) -> dict:
    g = lambda p: t.s.get((kind, p), 0.0)  # noqa: E731
    n = max(t.steps[kind], 1)
    parts = {"schedule": g("schedule"), "batch_build": g("batch_build"),
             "gemm": g("linear") - g("lora"), "lora": g("lora"), "attention": g("attention"),
             "kv_write": g("kv_write"), "norm": g("norm"), "rope": g("rope"), "silu_mul": g("silu_mul")}
    parts["embed_other"] = g("forward") - sum(parts[p] for p in ("gemm", "lora", "attention", "kv_write", "norm",
                                                                  "rope", "silu_mul"))
    lm = min(lm_head_s * n, g("sample_all") - g("sample")) if lm_head_s else 0.0
    parts.update(lm_head=lm, sample=g("sample"), postprocess=g("sample_all") - g("sample") - lm)
    parts["python_other"] = g("step") - g("forward") - g("schedule") - g("batch_build") - g("sample_all")
    total = g("step")
    return {"steps": t.steps[kind], "ms_per_step": round(1e3 * total / n, 2),
            "ms_per_step_by_part": {k: round(1e3 * v / n, 3) for k, v in parts.items()},
            "share": {k: round(v / total, 3) for k, v in parts.items()} if total else {}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--ragged", action="store_true")
    ap.add_argument("--sampled", action="store_true", help="temperature 0.8, top_p 0.95 instead of greedy")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-torch-profiler", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import warmfast as wf

    built = build_from_args(args)
    eng, arms = built.engine, [None, *built.adapters]
    prompts = make_prompts(args.rows, args.prompt, args.new, built.vocab, arms, args.ragged)
    sampling = dict(temperature=0.8, top_p=0.95) if args.sampled else {}
    reqs = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=n, seed=i, **sampling)
            for i, (p, a, n) in enumerate(prompts)]

    def run():
        return eng.generate(reqs, max_batch_size=args.rows)

    run()  # warm-up
    t0 = time.perf_counter()
    run()
    plain_s = time.perf_counter() - t0
    t = Timers()
    instrument(eng, t)
    t0 = time.perf_counter()
    res = run()
    timed_s = time.perf_counter() - t0
    tokens = sum(len(r.token_ids) for r in res)
    lm_head = lm_head_seconds(eng, args.rows)  # per step: every row samples (exact when uniform)
    rec = {**record_header("cpu_profile", args.device, eng.backend), "preset": args.preset,
           "params": built.params, "dtype": args.dtype, "adapters": args.adapters, "rank": args.rank,
           "rows": args.rows, "prompt": args.prompt, "new": args.new, "ragged": args.ragged,
           "sampled": args.sampled, "tokens": tokens, "seconds_plain": round(plain_s, 3),
           "seconds_instrumented": round(timed_s, 3), "tokens_per_s": round(tokens / plain_s, 1),
           "by_step_kind": {k: breakdown(t, k, lm_head) for k in sorted(t.steps)}}
    if not args.no_torch_profiler:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:20]
        rec["torch_profiler_top_ops"] = [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 2),
                                          "calls": e.count} for e in ops]
    print(f"{args.preset}: {args.rows} rows, {tokens} tokens in {plain_s:.2f}s ({rec['tokens_per_s']} tokens/s)")
    for k, b in rec["by_step_kind"].items():
        print(f"== {k}: {b['steps']} steps, {b['ms_per_step']} ms/step")
        for p, ms in sorted(b["ms_per_step_by_part"].items(), key=lambda kv: -kv[1]):
            print(f"   {p:<13}{ms:9.2f} ms  {b['share'].get(p, 0):6.1%}")
    for op in rec.get("torch_profiler_top_ops", [])[:12]:
        print(f"   {op['self_ms']:9.1f} ms  x{op['calls']:<6} {op['op']}")
    path = write_record(rec, args.out, f"cpu_profile_{args.device}_{args.preset}")
    print(f"record -> {path}")
    return rec


if __name__ == "__main__":
    main()
