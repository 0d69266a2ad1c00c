"""Live adapter load/unload: what it costs next to restarting the engine and next to HF+PEFT.

On one model and its PEFT adapters, in one process:
  restart        Engine.from_pretrained(model, adapters=all): what changing adapters cost before
  live_load      Engine.load_adapter(name, path) into a free slot of an engine started without them
  live_unload    Engine.unload_adapter(name)
  peft_load      PeftModel.load_adapter(path, adapter_name) (HF+PEFT's live load), then delete_adapter
Best of --reps seconds per adapter (each rep unloads and loads every adapter again). It also
checks that the live-loaded engine scores exactly what the engine given the adapters at start
scores (same capacity), and records the largest relative difference. One JSON record (machine,
date) goes to --out.

  python bench/e2e_live_adapters.py --model ~/.cache/warmfast/smollm2/hf-float32 \
      --adapter all_r8=DIR --adapter qv_r4_rslora=DIR --adapter mlp_r16=DIR --threads 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_score import record_header, write_record  # noqa: E402

TEXTS = [("The capital of France is", " Paris, the city of light."),
         ("Explain the difference between a poem and a story", " A poem has lines; a story has a plot.")]


def best(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", action="append", required=True, help="name=DIR (repeat)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import warmfast as wf
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapters = dict(a.split("=", 1) for a in args.adapter)
    names = list(adapters)
    restart_s = best(lambda: wf.Engine.from_pretrained(args.model, adapters=adapters), args.reps)
    ref = wf.Engine.from_pretrained(args.model, adapters=adapters)
    cap = ref.adapter_slots.capacity
    eng = wf.Engine.from_pretrained(args.model, max_adapters=cap.max_adapters, max_lora_rank=cap.max_rank,
                                    lora_target_modules=list(cap.modules))
    load_s = {n: float("inf") for n in names}
    unload_s = dict(load_s)
    for _ in range(args.reps):  # unload and load every adapter again, in a rotating order
        for n in names:
            if n in eng.adapter_names:
                t0 = time.perf_counter()
                eng.unload_adapter(n)
                unload_s[n] = min(unload_s[n], time.perf_counter() - t0)
            t0 = time.perf_counter()
            eng.load_adapter(n, adapters[n])
            load_s[n] = min(load_s[n], time.perf_counter() - t0)
    reqs = [wf.ScoreRequest(c, x, a) for c, x in TEXTS for a in [None, *names]]
    diffs = [abs(a.logprob - b.logprob) / abs(b.logprob) for a, b in zip(eng.score(reqs), ref.score(reqs))]

    base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, adapters[names[0]], adapter_name="first")
    peft_s = {}
    for n in names:
        def cycle(n=n):
            peft_model.load_adapter(adapters[n], adapter_name=n)
            peft_model.delete_adapter(n)
        peft_s[n] = best(cycle, args.reps)

    record = {**record_header("e2e_live_adapters", "cpu", eng.backend), "model": str(args.model),
              "capacity": cap.describe(), "reps": args.reps, "restart_s": restart_s,
              "live_load_s": load_s, "live_unload_s": unload_s, "peft_load_and_delete_s": peft_s,
              "restart_over_live_load": {n: restart_s / load_s[n] for n in names},
              "peft_over_live_load": {n: peft_s[n] / load_s[n] for n in names},
              "max_rel_diff_live_vs_at_start": max(diffs)}
    path = write_record(record, args.out, "e2e_live_adapters_cpu")
    for k in ("restart_s", "live_load_s", "live_unload_s", "peft_load_and_delete_s", "max_rel_diff_live_vs_at_start"):
        print(f"{k}: {record[k]}")
    print(path)


if __name__ == "__main__":
    main()
