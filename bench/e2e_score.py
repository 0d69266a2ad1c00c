"""End-to-end scoring throughput: warmfast vs HF transformers + PEFT, in the same process.

Base model + N LoRA adapters (bench/e2e_model.py: random, built once in memory), rows of `--ctx`
context + `--cont` continuation tokens spread evenly over the base model and every adapter. The
rows go to warmfast in chunks of at most `--batch-tokens` tokens, each chunk holding every arm in
turn, so every forward is a mixed-adapter batch (one call with all rows would let the scorer
group them into one arm per batch, which is not the mixed-LoRA case this bench is for). Measured
on the same rows, interleaved within each repetition (best of `--reps`):
  warmfast        Engine.score per mixed chunk
  hf_peft_mixed   PeftModel forward with adapter_names= (PEFT's mixed-batch inference), padded
  hf_peft_loop    set_adapter per arm, one padded forward per arm (off with --no-hf-loop: at 8B
                  scale it costs a minute and says nothing new)
  hf_base_only    the base model alone on all rows (the speed a LoRA-free run could reach)
Prints tokens/s and the ratios, and writes one JSON record to --out.

  python bench/e2e_score.py                       # CPU: ~31M-parameter Llama, base + 3 adapters
  python bench/e2e_score.py --preset llama8b --device cuda --dtype bfloat16 --adapters 8 --rank 16 \
      --ctx 236 --cont 20 --rows 288 --reps 1 --no-hf-loop   # what bench/e2e_check.py runs on a GPU
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_model import PRESETS, Built, build, build_real  # noqa: E402


def make_rows(n_rows: int, ctx: int, cont: int, vocab: int, arms: list, seed: int = 0,
              ragged: bool = False):
    """Random token rows, arms in turn; ragged: lengths uniform in [n/2, 3n/2] (mean n)."""
    rng = random.Random(seed)
    size = (lambda n: rng.randint(max(1, n // 2), n + n // 2)) if ragged else (lambda n: n)
    rows = []
    for i in range(n_rows):
        rows.append(([rng.randrange(10, vocab) for _ in range(size(ctx))],
                     [rng.randrange(10, vocab) for _ in range(size(cont))], arms[i % len(arms)]))
    return rows


def mixed_chunks(rows: list, budget: int) -> list[list]:
    """Consecutive rows (arms in turn) in chunks of at most `budget` fed tokens (context +
    continuation - 1): each chunk is one forward of the scorer with every arm in it."""
    chunks, cur, used = [], [], 0
    for r in rows:
        n = len(r[0]) + len(r[1]) - 1
        if cur and used + n > budget:
            chunks.append(cur)
            cur, used = [], 0
        cur.append(r)
        used += n
    return chunks + ([cur] if cur else [])


def arms_per_batch(engine, chunks: list[list], budget: int) -> list[int]:
    """Distinct adapters (the base counts as one) in each forward the scorer will run."""
    import warmfast as wf
    from warmfast.engine.scorer import pack, prepare_rows, share_prefixes

    counts = []
    for chunk in chunks:
        rows = prepare_rows(engine, [wf.ScoreRequest(c, x, a) for c, x, a in chunk])
        counts.extend(len({f.slot for f in batch}) for batch in pack(share_prefixes(rows), budget))
    return counts


def record_header(bench: str, device: str, backend: str) -> dict:
    """Where and when a bench record was measured: machine, CPU, threads, card, torch, backend."""
    import triton

    return {"bench": bench, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.node(), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "device": device,
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "card": torch.cuda.get_device_name() if device == "cuda" else None,
            "torch": torch.__version__, "triton": triton.__version__, "backend": backend}


def timed(fns: dict, device: str, reps: int, warmups: dict | None = None) -> dict[str, float]:
    """Best-of-reps seconds per system, the systems interleaved within each rep so that a change
    in machine load hits all of them alike. warmups: {system: a cheaper warm-up call} for systems
    whose full run is long (HF+PEFT generation on a GPU: a minute per run); the others warm up
    with one full run."""
    def once(fn) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for k, fn in fns.items():
        (warmups or {}).get(k, fn)()  # warm-up (allocations, kernel compilation, graph capture)
    best = {k: float("inf") for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            best[k] = min(best[k], once(fn))
    return best


def hf_runners(pm, rows, device: str, batch_rows: int) -> dict:
    """HF+PEFT scoring of `rows` on the PeftModel `pm`: {"hf_peft_mixed", "hf_peft_loop", "hf_base_only"}."""
    rows = sorted(rows, key=lambda r: -(len(r[0]) + len(r[1])))  # least padding, as lm-eval sorts

    def forward_rows(sub, **kw):
        # right-padded batch; the log-probs of the continuation are gathered like lm-eval does
        width = max(len(c) + len(x) for c, x, _ in sub)
        ids = torch.zeros(len(sub), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (c, x, _) in enumerate(sub):
            ids[i, :len(c) + len(x)] = torch.tensor(c + x)
            mask[i, :len(c) + len(x)] = 1
        logits = pm(input_ids=ids.to(device), attention_mask=mask.to(device), **kw).logits
        return torch.log_softmax(logits.float(), -1)

    @torch.inference_mode()
    def mixed():
        for s in range(0, len(rows), batch_rows):
            sub = rows[s:s + batch_rows]
            forward_rows(sub, adapter_names=[a if a is not None else "__base__" for _, _, a in sub])

    @torch.inference_mode()
    def loop():
        for arm in dict.fromkeys(a for _, _, a in rows):
            sub_all = [r for r in rows if r[2] == arm]
            for s in range(0, len(sub_all), batch_rows):
                if arm is None:
                    with pm.disable_adapter():
                        forward_rows(sub_all[s:s + batch_rows])
                else:
                    pm.set_adapter(arm)
                    forward_rows(sub_all[s:s + batch_rows])

    @torch.inference_mode()
    def base_only():
        with pm.disable_adapter():
            for s in range(0, len(rows), batch_rows):
                forward_rows(rows[s:s + batch_rows])

    return {"hf_peft_mixed": mixed, "hf_peft_loop": loop, "hf_base_only": base_only}


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """The random model both end-to-end benches build: shape preset, device, dtype, adapters."""
    ap.add_argument("--preset", default="cpu31m", choices=list(PRESETS))
    ap.add_argument("--model", default=None,
                    help="a real HF Llama folder instead of a random preset (e.g. "
                         "~/.cache/warmfast/smollm2/hf-float32); records name it by --label")
    ap.add_argument("--label", default=None, help="the model's name in records (default: the folder name)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--adapters", type=int, default=3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--workdir", default=None, help="config, tokenizer and adapters (default: a temp dir)")
    ap.add_argument("--out", default="bench/results", help="folder for the JSON records")


def add_score_args(ap: argparse.ArgumentParser, alone: bool = False) -> None:
    """alone: this bench's own command line, where --rows means --score-rows."""
    ap.add_argument("--ctx", type=int, default=200)
    ap.add_argument("--cont", type=int, default=20)
    ap.add_argument("--score-rows", *(["--rows"] if alone else []), dest="score_rows", type=int, default=32)
    ap.add_argument("--ragged", action="store_true",
                    help="row lengths uniform in [n/2, 3n/2]; HF batches are sorted by length (as lm-eval does)")
    ap.add_argument("--hf-batch-rows", type=int, default=16)
    ap.add_argument("--batch-tokens", type=int, default=8192, help="warmfast tokens per mixed forward")
    ap.add_argument("--no-hf-loop", action="store_true", help="skip HF+PEFT's set_adapter loop")


def build_from_args(args) -> Built:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="wf_bench_"))
    if args.model:
        args.preset = args.label or Path(args.model).name  # the name records and files carry
        return build_real(work, str(Path(args.model).expanduser()), args.adapters, args.rank, args.device,
                          args.dtype, args.backend, args.batch_tokens if hasattr(args, "batch_tokens") else 8192)
    return build(work, args.preset, args.adapters, args.rank, args.device, args.dtype, args.backend,
                 args.batch_tokens if hasattr(args, "batch_tokens") else 8192)


def write_record(record: dict, out: str, name: str) -> Path:
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = path / f"{name}_{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def run_score(built: Built, args, reps: int) -> dict:
    """Measure scoring on `built`; write and return the record."""
    import warmfast as wf

    eng = built.engine
    arms = [None, *built.adapters]
    rows = make_rows(args.score_rows, args.ctx, args.cont, built.vocab, arms, ragged=args.ragged)
    n_tokens = sum(len(c) + len(x) for c, x, _ in rows)
    chunks = mixed_chunks(rows, args.batch_tokens)
    reqs = [[wf.ScoreRequest(c, x, a) for c, x, a in chunk] for chunk in chunks]
    per_batch = arms_per_batch(eng, chunks, args.batch_tokens)

    def warmfast_mixed():
        for chunk in reqs:
            eng.score(chunk, max_batch_tokens=args.batch_tokens)

    hf = hf_runners(built.hf, rows, args.device, args.hf_batch_rows)
    if args.no_hf_loop:
        del hf["hf_peft_loop"]
    secs = timed({"warmfast": warmfast_mixed, **hf}, args.device, reps)
    tps = {k: n_tokens / t for k, t in secs.items()}
    record = {
        **record_header("e2e_score", args.device, eng.backend),
        "preset": args.preset, "params": built.params, "dtype": args.dtype, "adapters": args.adapters,
        "rank": args.rank, "rows": args.score_rows, "ragged": args.ragged, "ctx": args.ctx, "cont": args.cont,
        "tokens": n_tokens, "reps": reps, "batch_tokens": args.batch_tokens,
        "warmfast_batches": len(per_batch), "arms_per_batch_min": min(per_batch),
        "arms_per_batch_mean": round(sum(per_batch) / len(per_batch), 2),
        "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        **{f"ratio_vs_{k}": round(tps["warmfast"] / v, 2) for k, v in tps.items() if k != "warmfast"},
    }
    print(f"{'system':<16}{'tokens/s':>12}{'warmfast x':>12}   ({per_batch and record['arms_per_batch_mean']} arms per warmfast batch)")
    for k, v in tps.items():
        print(f"{k:<16}{v:>12.0f}{tps['warmfast'] / v:>12.2f}")
    path = write_record(record, args.out, f"e2e_score_{args.device}_{args.preset}{'_ragged' if args.ragged else ''}")
    print(f"record -> {path}")
    return record


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    add_score_args(ap, alone=True)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    return run_score(build_from_args(args), args, args.reps)


if __name__ == "__main__":
    main()
