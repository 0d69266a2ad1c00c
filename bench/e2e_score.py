"""End-to-end scoring throughput: warmfast vs HF transformers + PEFT, in the same process.

Base model + N LoRA adapters, rows of `--ctx` context + `--cont` continuation tokens spread evenly
over the base model and every adapter. Four measurements on the same rows:
  warmfast        one call to Engine.score (all arms packed in shared varlen batches)
  hf_peft_mixed   PeftModel forward with adapter_names= (PEFT's mixed-batch inference), padded
  hf_peft_loop    set_adapter per arm, one padded forward per arm
  hf_base_only    the base model alone on all rows (the speed a LoRA-free run could reach)
Prints tokens/s and the ratios, and writes one JSON record to bench/results/.

  python bench/e2e_score.py                       # CPU: ~31M-parameter Llama, base + 3 adapters
  python bench/e2e_score.py --preset llama8b --device cuda --dtype bfloat16 --adapters 8 --rank 16 \
      --ctx 236 --cont 20 --rows 288              # the GPU check (bench/gpu_check.sh)
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import tempfile
import time
from pathlib import Path

import torch

PRESETS = {  # model shapes; vocab comes from the locally trained tokenizer unless given
    "cpu31m": dict(hidden_size=512, intermediate_size=1536, num_layers=10, num_heads=8,
                   num_kv_heads=4, vocab_size=4096),
    # embedding-heavy small model with a Llama-2/Mistral-size vocabulary (32k): 48.5M parameters
    "cpu48m-v32k": dict(hidden_size=512, intermediate_size=1536, num_layers=5, num_heads=8,
                        num_kv_heads=4, vocab_size=32000),
    "llama8b": dict(hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
                    num_kv_heads=8, vocab_size=128256),
}


def build_random_model(out: Path, preset: str, n_adapters: int, rank: int, device: str, dtype):
    """A random Llama of the preset's shape with n random rank-`rank` adapters on all projections."""
    import peft
    import transformers as tf

    from warmfast.model.tiny import build_tokenizer

    shape = PRESETS[preset]
    model_dir = out / "model"
    names = [f"adapter_{i}" for i in range(n_adapters)]
    stamp = out / f"built_{preset}_{n_adapters}x{rank}_{str(dtype).split('.')[-1]}"
    if stamp.is_file():  # a second bench in the same workdir (gpu_check.sh) reuses the folders
        return model_dir, {n: out / n for n in names}
    tok = build_tokenizer(model_dir, min(shape["vocab_size"], 4096), add_bos=True)
    cfg = tf.LlamaConfig(vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"],
                         intermediate_size=shape["intermediate_size"],
                         num_hidden_layers=shape["num_layers"], num_attention_heads=shape["num_heads"],
                         num_key_value_heads=shape["num_kv_heads"], max_position_embeddings=8192,
                         rope_theta=500000.0, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, initializer_range=0.02)
    torch.manual_seed(0)
    with torch.device(device):
        model = tf.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.save_pretrained(model_dir, safe_serialization=True)
    adapters = {}
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for i in range(n_adapters):
        pm = peft.get_peft_model(model, peft.LoraConfig(r=rank, lora_alpha=2 * rank,
                                                        target_modules=targets, lora_dropout=0.0))
        with torch.no_grad():
            for name, p in pm.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
        pm.save_pretrained(out / f"adapter_{i}")
        adapters[f"adapter_{i}"] = out / f"adapter_{i}"
        model = pm.unload()
    del model
    stamp.touch()
    return model_dir, adapters


def make_rows(n_rows: int, ctx: int, cont: int, vocab: int, arms: list, seed: int = 0,
              ragged: bool = False):
    """Random token rows; ragged: lengths uniform in [n/2, 3n/2] (mean n), as real prompts vary."""
    rng = random.Random(seed)
    size = (lambda n: rng.randint(max(1, n // 2), n + n // 2)) if ragged else (lambda n: n)
    rows = []
    for i in range(n_rows):
        rows.append(([rng.randrange(10, vocab) for _ in range(size(ctx))],
                     [rng.randrange(10, vocab) for _ in range(size(cont))], arms[i % len(arms)]))
    return rows


def record_header(bench: str, device: str, backend: str) -> dict:
    """Where and when a bench record was measured: machine, CPU, threads, card, torch, backend."""
    return {"bench": bench, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.node(), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "device": device,
            "card": torch.cuda.get_device_name() if device == "cuda" else None,
            "torch": torch.__version__, "backend": backend}


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
        (warmups or {}).get(k, fn)()  # warm-up (allocations, kernel compilation)
    best = {k: float("inf") for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            best[k] = min(best[k], once(fn))
    return best


def load_hf_peft(model_dir, adapters: dict, device: str, dtype):
    """The HF model with every adapter loaded under its name (PEFT's multi-adapter model), eval mode."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    names = list(adapters)
    pm = PeftModel.from_pretrained(base, adapters[names[0]], adapter_name=names[0])
    for n in names[1:]:
        pm.load_adapter(adapters[n], adapter_name=n)
    return pm.eval()


def hf_runner(model_dir, adapters, rows, device, dtype, batch_rows: int):
    rows = sorted(rows, key=lambda r: -(len(r[0]) + len(r[1])))  # least padding, as lm-eval sorts
    pm = load_hf_peft(model_dir, adapters, device, dtype)

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

    return pm, mixed, loop, base_only


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """The random model both end-to-end benches build: shape preset, device, dtype, adapters."""
    ap.add_argument("--preset", default="cpu31m", choices=list(PRESETS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--adapters", type=int, default=3)
    ap.add_argument("--rank", type=int, default=16)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--ctx", type=int, default=200)
    ap.add_argument("--cont", type=int, default=20)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--ragged", action="store_true",
                    help="row lengths uniform in [n/2, 3n/2]; HF batches are sorted by length (as lm-eval does)")
    ap.add_argument("--hf-batch-rows", type=int, default=16)
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="where the random model is written (default: a temp dir)")
    ap.add_argument("--out", default="bench/results", help="folder for the JSON record")
    args = ap.parse_args(argv)

    import warmfast as wf

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="wf_bench_"))
    model_dir, adapters = build_random_model(work, args.preset, args.adapters, args.rank, args.device, dtype)
    arms = [None, *adapters]
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    rows = make_rows(args.rows, args.ctx, args.cont, vocab, arms, ragged=args.ragged)
    n_tokens = sum(len(c) + len(x) for c, x, _ in rows)

    eng = wf.Engine.from_pretrained(model_dir, adapters=adapters, device=args.device, dtype=args.dtype,
                                    backend=args.backend, max_batch_tokens=args.batch_tokens)
    reqs = [wf.ScoreRequest(c, x, a) for c, x, a in rows]
    pm, mixed, loop, base_only = hf_runner(model_dir, adapters, rows, args.device, dtype, args.hf_batch_rows)
    secs = timed({"warmfast": lambda: eng.score(reqs), "hf_peft_mixed": mixed, "hf_peft_loop": loop,
                  "hf_base_only": base_only}, args.device, args.reps)

    n_params = sum(p.numel() for n, p in pm.named_parameters() if "lora_" not in n)
    tps = {k: n_tokens / t for k, t in secs.items()}
    record = {
        **record_header("e2e_score", args.device, eng.backend),
        "preset": args.preset, "params": n_params, "dtype": args.dtype, "adapters": args.adapters,
        "rank": args.rank, "rows": args.rows, "ragged": args.ragged, "ctx": args.ctx, "cont": args.cont, "tokens": n_tokens,
        "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        "ratio_vs_hf_peft_mixed": round(tps["warmfast"] / tps["hf_peft_mixed"], 2),
        "ratio_vs_hf_peft_loop": round(tps["warmfast"] / tps["hf_peft_loop"], 2),
        "ratio_vs_hf_base_only": round(tps["warmfast"] / tps["hf_base_only"], 2),
    }
    print(f"{'system':<16}{'tokens/s':>12}{'warmfast x':>12}")
    for k, v in tps.items():
        print(f"{k:<16}{v:>12.0f}{tps['warmfast'] / v:>12.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = out / f"e2e_score_{args.device}_{args.preset}{'_ragged' if args.ragged else ''}_{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
