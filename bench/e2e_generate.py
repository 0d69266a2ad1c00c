"""End-to-end generation throughput: warmfast vs HF transformers + PEFT `generate`, same process.

Base model + N LoRA adapters; `--rows` requests of `--prompt` random prompt tokens, spread evenly
over the base model and every adapter, each generating up to `--new` tokens. Measured on the
same requests, interleaved within each repetition (best of `--reps`):
  warmfast          Engine-level generator (paged KV, continuous batching, mixed adapters), greedy
  warmfast_sampled  the same, temperature 0.8 + top_p 0.95 (Philox sampler)
  hf_peft_mixed     PeftModel.generate(adapter_names=...) on static mixed batches of --max-batch, greedy,
                    left-padded
  hf_base_only      the base model's generate on the same batches (what a LoRA-free run could reach)
tokens/s counts the tokens the requests asked for (EOS included where a row stopped early);
HF generates the longest request's length for the whole padded batch. `--ragged` varies prompt
lengths and max_new_tokens, the study's real case; without it every row is alike (HF's best
case). One JSON record per request count goes to bench/results/ (machine, date, card).

  python bench/e2e_generate.py --threads 1                      # CPU: ~31M-parameter Llama
  python bench/e2e_generate.py --threads 1 --rows 128 --max-batch 32 --prompt 128 --new 64 --ragged
  python bench/e2e_generate.py --preset llama8b --device cuda --dtype bfloat16 --adapters 8 \
      --rank 16 --prompt 128 --new 128 --rows 64 256 --hf-max-rows 64 --cuda-graphs   # GPU check
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_score import add_model_args, build_random_model, load_hf_peft, record_header, timed  # noqa: E402


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


def hf_generate(model_dir, adapters, device, dtype):
    pm = load_hf_peft(model_dir, adapters, device, dtype)
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


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--rows", type=int, nargs="+", default=[32], help="request counts to measure")
    ap.add_argument("--max-batch", type=int, default=None,
                    help="rows per step for warmfast and per static batch for HF (default: all rows)")
    ap.add_argument("--ragged", action="store_true",
                    help="varied prompt lengths and max_new_tokens (continuous batching's case)")
    ap.add_argument("--hf-max-rows", type=int, default=None, help="skip HF above this batch size")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--cuda-graphs", action="store_true")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads for both systems (1 avoids barrier stalls on a shared machine)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)

    import warmfast as wf
    from warmfast.engine.generator import generate
    from warmfast.engine.kv_cache import blocks_for

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="wf_bench_gen_"))
    model_dir, adapters = build_random_model(work, args.preset, args.adapters, args.rank, args.device, dtype)
    arms = [None, *adapters]
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    eng = wf.Engine.from_pretrained(model_dir, adapters=adapters, device=args.device, dtype=args.dtype,
                                    backend=args.backend)
    hf = hf_generate(model_dir, adapters, args.device, dtype)
    records = []
    for rows in args.rows:
        prompts = make_prompts(rows, args.prompt, args.new, vocab, arms, args.ragged)
        batch = min(rows, args.max_batch or rows)
        knobs = dict(max_batch_size=batch, block_size=args.block_size,
                     kv_blocks=batch * blocks_for(args.prompt + args.new, args.block_size),
                     max_batch_tokens=max(8192, args.prompt * 16))
        counts, outputs, errors = {}, {}, {}

        def wf_run(name, graphs=False, **sampling):
            reqs = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=n, seed=i, **sampling)
                    for i, (p, a, n) in enumerate(prompts)]

            def fn():
                res = generate(eng, reqs, cuda_graphs=graphs, **knobs)
                counts[name] = sum(len(r.token_ids) + (r.finish_reason == "stop") for r in res)
                outputs[name] = [r.token_ids for r in res]
            return fn

        def hf_run(name, mixed):
            def fn():
                counts[name] = hf(prompts, mixed, batch)
            return fn

        def hf_warmup(mixed):  # one batch, two new tokens: HF's allocations and kernels, not a minute
            short = [(p, a, min(n, 2)) for p, a, n in prompts[:batch]]
            return lambda: hf(short, mixed, batch)

        systems = {"warmfast": wf_run("warmfast"),
                   "warmfast_sampled": wf_run("warmfast_sampled", temperature=0.8, top_p=0.95)}
        if args.cuda_graphs:  # decode replays per-bucket CUDA graphs; eager stays the headline row
            graphed = wf_run("warmfast_cuda_graphs", graphs=True)
            try:
                graphed()  # captures every bucket once and checks each against the eager step
                systems["warmfast_cuda_graphs"] = graphed
            except RuntimeError as err:  # recorded in the JSON, the eager numbers still measured
                errors["warmfast_cuda_graphs"] = f"{type(err).__name__}: {err}"
                print(f"CUDA graphs failed, measured without them: {errors['warmfast_cuda_graphs']}")
        if args.hf_max_rows is None or rows <= args.hf_max_rows:
            systems["hf_peft_mixed"] = hf_run("hf_peft_mixed", True)
            systems["hf_base_only"] = hf_run("hf_base_only", False)
        secs = timed(systems, args.device, args.reps,
                     warmups={"hf_peft_mixed": hf_warmup(True), "hf_base_only": hf_warmup(False)})
        tps = {k: counts[k] / s for k, s in secs.items()}
        record = {
            **record_header("e2e_generate", args.device, eng.backend),
            "preset": args.preset, "dtype": args.dtype, "adapters": args.adapters, "rank": args.rank,
            "rows": rows, "max_batch": batch, "prompt": args.prompt, "new": args.new, "ragged": args.ragged,
            "generated_tokens": counts,
            "seconds": {k: round(v, 4) for k, v in secs.items()},
            "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        }
        if errors:
            record["errors"] = errors
        if "warmfast_cuda_graphs" in outputs:  # greedy: graph replay must give the eager tokens
            same = sum(a == b for a, b in zip(outputs["warmfast"], outputs["warmfast_cuda_graphs"]))
            record["cuda_graphs_rows_equal_eager"] = f"{same}/{len(prompts)}"
        if "hf_peft_mixed" in tps:
            record["ratio_vs_hf_peft_mixed"] = round(tps["warmfast"] / tps["hf_peft_mixed"], 2)
            record["ratio_vs_hf_base_only"] = round(tps["warmfast"] / tps["hf_base_only"], 2)
        print(f"{rows} requests, batch {batch}: {'system':<18}{'tokens/s':>12}{'warmfast x':>12}")
        for k, v in tps.items():
            print(f"          {k:<18}{v:>12.0f}{tps['warmfast'] / v:>12.2f}")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        kind = "ragged" if args.ragged else "uniform"
        path = out / f"e2e_generate_{args.device}_{args.preset}_n{rows}_b{batch}_{kind}_{stamp}.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps(record))
        records.append(record)
    return records


if __name__ == "__main__":
    main()
