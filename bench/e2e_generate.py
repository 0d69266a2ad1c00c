"""End-to-end generation throughput: warmfast vs HF transformers + PEFT `generate`, same process.

Base model + N LoRA adapters (bench/e2e_model.py: random, built once in memory); `--rows`
requests of `--prompt` random prompt tokens, spread evenly over the base model and every adapter,
each generating up to `--new` tokens. Measured on the same requests, interleaved within each
repetition (best of `--reps`), every system under torch.inference_mode:
  warmfast          Engine.generate (paged KV, continuous batching, mixed adapters), greedy
  warmfast_sampled  the same, temperature 0.8 + top_p 0.95 (Philox sampler)
  warmfast_cuda_graphs  greedy with decode CUDA graphs (--cuda-graphs); captured in the warm-up
                    call, replayed in the timed ones (the record counts captures in timed calls)
  hf_peft_mixed     PeftModel.generate(adapter_names=...) on static mixed batches of --max-batch,
                    greedy, left-padded (skipped above --hf-max-rows)
  hf_base_only      the base model's generate on the same batches (what a LoRA-free run could reach)
tokens/s counts the tokens the requests asked for (EOS included where a row stopped early);
HF generates the longest request's length for the whole padded batch. `--ragged` varies prompt
lengths and max_new_tokens, the study's real case; without it every row is alike (HF's best
case). One JSON record per request count goes to --out (machine, date, card).

  python bench/e2e_generate.py --threads 1                      # CPU: ~31M-parameter Llama
  python bench/e2e_generate.py --threads 1 --rows 128 --max-batch 32 --prompt 128 --new 64 --ragged
  python bench/e2e_generate.py --threads 1 --model ~/.cache/warmfast/smollm2/hf-float32 \
      --label smollm2-135m --rows 48 --max-batch 16 --prompt 96 --new 48 --ragged   # a real model
On a shared CPU use --threads 1: with more threads than free cores, OpenMP barrier stalls make
one run of the same command take several times another.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_score import add_model_args, build_from_args, record_header, timed, write_record  # noqa: E402


def make_prompts(n: int, length: int, new: int, vocab: int, arms: list, ragged: bool, seed: int = 0):
    """(prompt ids, adapter, max_new_tokens) per request. ragged: prompt lengths uniform in
    [length / 4, length] and max_new_tokens in [new / 4, new] (a stand-in for EOS arriving at
    different steps, which a random model does not do by itself)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        plen = rng.randint(max(1, length // 4), length) if ragged else length
        nnew = rng.randint(max(1, new // 4), new) if ragged else new
        out.append(([rng.randrange(10, vocab) for _ in range(plen)], arms[i % len(arms)], nnew))
    return out


def hf_generate(pm, device):
    """HF+PEFT generation on the PeftModel `pm`: run(prompts, mixed, batch) -> tokens asked for."""
    pad = pm.config.pad_token_id if pm.config.pad_token_id is not None else 0

    def run(prompts, mixed: bool, batch: int) -> int:
        """Static batches of `batch` requests in order, as a plain HF loop would run them."""
        return sum(run_batch(prompts[s:s + batch], mixed) for s in range(0, len(prompts), batch))

    @torch.inference_mode()
    def run_batch(prompts, mixed: bool) -> int:
        """Generates max(max_new_tokens) for the whole padded batch (HF has no per-row limit);
        returns the tokens the requests asked for (up to and including an EOS)."""
        width = max(len(p) for p, _, _ in prompts)
        new = max(n for _, _, n in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (p, _, _) in enumerate(prompts):  # left padding, as decoder-only generate wants
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        kw = dict(max_new_tokens=new, do_sample=False, pad_token_id=pad)
        if mixed:
            out = pm.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                              adapter_names=[a if a is not None else "__base__" for _, a, _ in prompts], **kw)
        else:
            with pm.disable_adapter():
                out = pm.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kw)
        gen = out[:, width:].cpu()
        eos = pm.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        count = 0
        for row, (_, _, n) in zip(gen.tolist(), prompts):  # up to the first EOS or the row's limit
            row = row[:n]
            k = next((j for j, t in enumerate(row) if t in eos), len(row) - 1)
            count += k + 1
        return count

    return run


def add_generate_args(ap: argparse.ArgumentParser, alone: bool = False) -> None:
    """alone: this bench's own command line, where --rows and --ragged need no gen- prefix."""
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--gen-rows", *(["--rows"] if alone else []), dest="gen_rows", type=int, nargs="+", default=[32],
                    help="request counts to measure")
    ap.add_argument("--max-batch", type=int, default=None,
                    help="rows per step for warmfast and per static batch for HF (default: all rows)")
    ap.add_argument("--gen-ragged", *(["--ragged"] if alone else []), dest="gen_ragged", action="store_true",
                    help="varied prompt lengths and max_new_tokens (continuous batching's case)")
    ap.add_argument("--hf-max-rows", type=int, default=None, help="skip HF above this batch size")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--cuda-graphs", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads for both systems (1 avoids barrier stalls on a shared machine)")


def run_generate(built, args, reps: int, deadline: float | None = None) -> list[dict]:
    """Measure generation at each of args.gen_rows; write and return one record per count. A
    count that starts after `deadline` (time.monotonic()) is skipped and says so in its record."""
    import warmfast as wf
    from warmfast.engine.kv_cache import blocks_for

    eng, arms = built.engine, [None, *built.adapters]
    hf = None
    records = []
    for rows in args.gen_rows:
        if deadline is not None and time.monotonic() > deadline:
            records.append({"bench": "e2e_generate", "rows": rows, "skipped": "out of time (global deadline)"})
            print(f"e2e_generate rows={rows}: skipped, out of time")
            continue
        prompts = make_prompts(rows, args.prompt, args.new, built.vocab, arms, args.gen_ragged)
        batch = min(rows, args.max_batch or rows)
        knobs = dict(max_batch_size=batch, block_size=args.block_size,
                     kv_blocks=batch * blocks_for(args.prompt + args.new, args.block_size),
                     max_batch_tokens=max(8192, args.prompt * 16))
        counts, outputs, errors = {}, {}, {}

        def wf_run(name, graphs=False, **sampling):
            reqs = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=n, seed=i, **sampling)
                    for i, (p, a, n) in enumerate(prompts)]

            def fn():
                res = eng.generate(reqs, cuda_graphs=graphs, **knobs)
                counts[name] = sum(len(r.token_ids) + (r.finish_reason == "stop") for r in res)
                outputs[name] = [r.token_ids for r in res]
            return fn

        systems = {"warmfast": wf_run("warmfast"),
                   "warmfast_sampled": wf_run("warmfast_sampled", temperature=0.8, top_p=0.95)}
        captures_before = None
        if args.cuda_graphs:  # decode replays per-bucket CUDA graphs; eager stays the headline row
            graphed = wf_run("warmfast_cuda_graphs", graphs=True)
            try:
                graphed()  # captures every bucket once and checks each against the eager step
                systems["warmfast_cuda_graphs"] = graphed
                captures_before = eng.decode_graphs.captures
            except (RuntimeError, ValueError) as err:  # recorded in the JSON, eager still measured
                errors["warmfast_cuda_graphs"] = f"{type(err).__name__}: {err}"
                print(f"CUDA graphs failed, measured without them: {errors['warmfast_cuda_graphs']}")
        warmups = {}
        if args.hf_max_rows is None or rows <= args.hf_max_rows:
            hf = hf or hf_generate(built.hf, args.device)
            for name, mixed in (("hf_peft_mixed", True), ("hf_base_only", False)):
                systems[name] = (lambda name=name, mixed=mixed: counts.__setitem__(name, hf(prompts, mixed, batch)))
                # one batch, two new tokens: HF's allocations and kernels, not a minute
                short = [(p, a, min(n, 2)) for p, a, n in prompts[:batch]]
                warmups[name] = (lambda short=short, mixed=mixed: hf(short, mixed, batch))
        secs = timed(systems, args.device, reps, warmups=warmups)
        tps = {k: counts[k] / s for k, s in secs.items()}
        record = {
            **record_header("e2e_generate", args.device, eng.backend),
            "preset": args.preset, "dtype": args.dtype, "adapters": args.adapters, "rank": args.rank,
            "rows": rows, "max_batch": batch, "prompt": args.prompt, "new": args.new,
            "ragged": args.gen_ragged, "reps": reps, "generated_tokens": counts,
            "seconds": {k: round(v, 4) for k, v in secs.items()},
            "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        }
        if errors:
            record["errors"] = errors
        if "warmfast_cuda_graphs" in outputs:  # greedy: graph replay must give the eager tokens
            same = sum(a == b for a, b in zip(outputs["warmfast"], outputs["warmfast_cuda_graphs"]))
            record["cuda_graphs_rows_equal_eager"] = f"{same}/{len(prompts)}"
            # where rows part: a late first difference on a random model (near-tied logits) reads
            # as rounding; an early one in most rows as a real difference between the two paths
            firsts = sorted(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                            for a, b in zip(outputs["warmfast"], outputs["warmfast_cuda_graphs"]) if a != b)
            if firsts:
                record["cuda_graphs_first_difference"] = {"min": firsts[0], "median": firsts[len(firsts) // 2],
                                                          "max": firsts[-1]}
            if captures_before is not None:
                record["cuda_graph_captures_in_timed_runs"] = eng.decode_graphs.captures - captures_before
        if "hf_peft_mixed" in tps:
            record["ratio_vs_hf_peft_mixed"] = round(tps["warmfast"] / tps["hf_peft_mixed"], 2)
            record["ratio_vs_hf_base_only"] = round(tps["warmfast"] / tps["hf_base_only"], 2)
        else:
            record["hf"] = f"skipped: {rows} requests > --hf-max-rows {args.hf_max_rows}"
        print(f"{rows} requests, batch {batch}: {'system':<18}{'tokens/s':>12}{'warmfast x':>12}")
        for k, v in tps.items():
            print(f"          {k:<18}{v:>12.0f}{tps['warmfast'] / v:>12.2f}")
        kind = "ragged" if args.gen_ragged else "uniform"
        path = write_record(record, args.out, f"e2e_generate_{args.device}_{args.preset}_n{rows}_b{batch}_{kind}")
        print(f"record -> {path}")
        records.append(record)
    return records


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    add_generate_args(ap, alone=True)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return run_generate(build_from_args(args), args, args.reps)


if __name__ == "__main__":
    main()
