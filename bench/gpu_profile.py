"""Where a step's time goes: kernel times of one mixed scoring call and of decode steps.

Builds the same random model as bench/e2e_check.py (in memory), then runs each phase once to
warm up and once under torch.profiler: one mixed-arm scoring call of --batch-tokens tokens, and a
generate() call of --gen-rows requests x --new tokens (eager, then CUDA graphs when asked). For
each phase it records the wall time, the summed device time of its kernels, and the kernels
grouped by family (GEMM, LoRA shrink/expand, attention, norm, rope, sampling, logprob, copies,
other) with their share, so a missed goal can be read against the roofline.

  python bench/gpu_profile.py --preset llama8b --device cuda --dtype bfloat16 --adapters 8 \
      --rank 16 --ctx 236 --cont 20 --batch-tokens 8192 --gen-rows 64 --prompt 128 --new 16 \
      --cuda-graphs --out OUT
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_generate import make_prompts  # noqa: E402
from e2e_score import (add_model_args, build_from_args, make_rows, mixed_chunks, record_header,  # noqa: E402
                       write_record)

FAMILIES = [  # (family, pattern on the kernel name), first match wins
    ("lora_shrink", r"shrink"), ("lora_expand", r"expand"),
    ("attention", r"attn|attention|flash|fmha|_decode_kernel|_prefill"),
    ("norm", r"rmsnorm|norm"), ("rope", r"rope|rotary"),
    ("sampling", r"sample|_race|topp|top_p|multinomial|sort|cumsum|softmax"),
    ("logprob", r"logprob|logsumexp"),
    ("gemm", r"gemm|nvjet|cutlass|sm90_xmma|sm80_xmma|cublas|ampere|hopper|matmul"),
    ("silu_mul", r"silu|mul"),
    ("copy_fill", r"copy|memcpy|memset|fill|cat|index|gather|scatter"),
]


def family(name: str) -> str:
    low = name.lower()
    for fam, pat in FAMILIES:
        if re.search(pat, low):
            return fam
    return "other"


def profiled(fn, device: str) -> dict:
    """Run fn once to warm up, once under the profiler: wall and device time, kernels by family."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize() if device.startswith("cuda") else None
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    kernels = defaultdict(lambda: [0.0, 0])  # name -> [device us, count]
    for ev in prof.events():
        dev_us = ev.time_range.elapsed_us()  # a CUDA event is one kernel (or copy) on the device
        if str(ev.device_type).endswith("CUDA") and dev_us > 0:
            kernels[ev.name][0] += dev_us
            kernels[ev.name][1] += 1
    fams = defaultdict(float)
    for name, (us, _) in kernels.items():
        fams[family(name)] += us
    device_s = sum(us for us, _ in kernels.values()) / 1e6
    top = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:25]
    return {"wall_s": round(wall, 4), "device_kernel_s": round(device_s, 4),
            "device_busy_fraction": round(device_s / wall, 3) if wall else None,
            "families_ms": {k: round(v / 1e3, 2) for k, v in sorted(fams.items(), key=lambda kv: -kv[1])},
            "top_kernels": [{"name": n[:120], "ms": round(us / 1e3, 3), "count": c} for n, (us, c) in top]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--ctx", type=int, default=236)
    ap.add_argument("--cont", type=int, default=20)
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--gen-rows", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--cuda-graphs", action="store_true")
    args = ap.parse_args(argv)
    import warmfast as wf

    built = build_from_args(args)
    eng, arms = built.engine, [None, *built.adapters]
    rec = {**record_header("gpu_profile", args.device, eng.backend), "preset": args.preset,
           "dtype": args.dtype, "adapters": args.adapters, "rank": args.rank, "phases": {}}

    rows = make_rows(4 * len(arms) * 8, args.ctx, args.cont, built.vocab, arms)
    chunk = mixed_chunks(rows, args.batch_tokens)[0]
    reqs = [wf.ScoreRequest(c, x, a) for c, x, a in chunk]
    n_tok = sum(len(c) + len(x) for c, x, _ in chunk)
    score = profiled(lambda: eng.score(reqs, max_batch_tokens=args.batch_tokens), args.device)
    score.update(tokens=n_tok, rows=len(chunk), tokens_per_s=round(n_tok / score["wall_s"]))
    rec["phases"]["score"] = score

    prompts = make_prompts(args.gen_rows, args.prompt, args.new, built.vocab, arms, ragged=False)
    greqs = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=n, seed=i)
             for i, (p, a, n) in enumerate(prompts)]
    for graphs in ([False, True] if args.cuda_graphs else [False]):
        name = "generate_cuda_graphs" if graphs else "generate_eager"
        res = profiled(lambda: eng.generate(greqs, max_batch_size=args.gen_rows, cuda_graphs=graphs),
                       args.device)
        steps = sum(eng.generate_stats.steps.values())
        res.update(rows=args.gen_rows, new=args.new, steps=steps,
                   ms_per_step=round(1e3 * res["wall_s"] / steps, 2),
                   device_ms_per_step=round(1e3 * res["device_kernel_s"] / steps, 2),
                   tokens_per_s=round(eng.generate_stats.tokens / res["wall_s"]))
        rec["phases"][name] = res

    for name, ph in rec["phases"].items():
        print(f"== {name}: wall {ph['wall_s']:.3f}s, kernels {ph['device_kernel_s']:.3f}s "
              f"(busy {ph['device_busy_fraction']}), {ph['tokens_per_s']} tokens/s"
              + (f", {ph['ms_per_step']} ms/step ({ph['device_ms_per_step']} on the device)" if "steps" in ph else ""))
        print("   families ms: " + ", ".join(f"{k} {v}" for k, v in ph["families_ms"].items()))
        for k in ph["top_kernels"][:12]:
            print(f"   {k['ms']:9.3f} ms  x{k['count']:<5} {k['name']}")
    path = write_record(rec, args.out, f"gpu_profile_{args.device.split(':')[0]}_{args.preset}")
    print(f"record -> {path}")
    return rec


if __name__ == "__main__":
    main()
