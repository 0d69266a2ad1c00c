"""lm-eval with base + N adapters: `hf` + `peft=` (one run per arm, as users do today) vs warmfast
(`arm=all`: one run, every arm scored in the same batches). Same tasks, same batch size.

Three offline tasks from local JSONL: multiple choice (loglikelihood), perplexity
(loglikelihood_rolling) and a short generate_until. Two measurements:
  cli      the commands as a user types them, each a fresh process: `lm_eval --model hf ...` once
           per arm vs `warmfast lm-eval --model warmfast ... arm=all` once (start-up, lm-eval's
           task index, model loading and evaluation all included)
  inproc   lm-eval's simple_evaluate in this process with a prebuilt task manager (local tasks
           only), model loading included: the evaluation work alone
Writes one JSON record to bench/results/ with both wall-clock ratios and the largest per-request
log-likelihood difference between the two systems (a parity check on the benchmark's own data).

The model has the --preset's shape and the adapters warmfast.model.tiny's ranks (8, 4, 16 on
different projections; --rank is not used here).

  nice python bench/lm_eval_speed.py                      # CPU: cpu31m, base + 3 adapters
  python bench/lm_eval_speed.py --device cuda --dtype bfloat16 --preset llama8b --mode inproc
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from e2e_score import PRESETS, add_model_args, record_header  # noqa: E402

TASKS = ("bench_mc", "bench_ppl", "bench_gen")


def write_tasks(out: Path, n_mc: int, n_text: int, n_gen: int, seed: int = 0) -> Path:
    from warmfast.model.tiny import _WORDS

    rng = random.Random(seed)

    def words(lo, hi):
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "mc": [{"question": words(40, 120), "choices": [words(1, 4) for _ in range(4)],
                "answer": rng.randrange(4)} for _ in range(n_mc)],
        "text": [{"text": words(100, 300)} for _ in range(n_text)],
        "gen": [{"question": words(20, 60), "answer": words(1, 2)} for _ in range(n_gen)],
    }
    for name, rows in data.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    head = "dataset_path: json\ntest_split: test\ndataset_kwargs:\n  data_files:\n    test: {}\n"
    (out / "bench_mc.yaml").write_text(
        "task: bench_mc\n" + head.format(out / "mc.jsonl") + "output_type: multiple_choice\n"
        "doc_to_text: \"Question: {{question}}\\nAnswer:\"\ndoc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: \"{{answer}}\"\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    (out / "bench_ppl.yaml").write_text(
        "task: bench_ppl\n" + head.format(out / "text.jsonl") + "output_type: loglikelihood_rolling\n"
        "doc_to_text: \"\"\ndoc_to_target: \"{{text}}\"\nmetric_list:\n  - metric: word_perplexity\n")
    (out / "bench_gen.yaml").write_text(
        "task: bench_gen\n" + head.format(out / "gen.jsonl") + "output_type: generate_until\n"
        "doc_to_text: \"Q: {{question}}\\nA:\"\ndoc_to_target: \"{{answer}}\"\n"
        "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 16\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n")
    return out


def build_model(out: Path, preset: str, n_adapters: int, seed: int = 0):
    """A random Llama of the preset's shape and n random PEFT adapters (warmfast.model.tiny: ranks
    8/4/16/12 on different projections, non-zero B). Its config's vocab_size equals the tokenizer's
    length: lm-eval's hf backend, given peft=, resizes the embeddings to len(tokenizer) otherwise,
    and its adapter arms would then be normalised over fewer tokens than its base arm."""
    from warmfast.model.tiny import build_tiny

    shape = PRESETS[preset]
    stamp = out / f"built_{preset}_{n_adapters}"
    if stamp.is_file():
        return out / "model", {f"adapter_{i}": out / f"adapter_{i}" for i in range(n_adapters)}
    paths = build_tiny(out, arch="llama", n_adapters=n_adapters, seed=seed,
                       vocab_size=min(shape["vocab_size"], 4096), hidden_size=shape["hidden_size"],
                       intermediate_size=shape["intermediate_size"], num_layers=shape["num_layers"],
                       num_heads=shape["num_heads"], num_kv_heads=shape["num_kv_heads"],
                       max_position_embeddings=2048, init_std=0.02, lora_b_std=0.02)
    stamp.touch()
    return paths.model_dir, paths.adapters


def hf_args(model_dir, adapter_dir, dtype) -> dict:
    args = {"pretrained": str(model_dir), "dtype": dtype}
    if adapter_dir is not None:
        args["peft"] = str(adapter_dir)
    return args


def wf_args(model_dir, adapters: dict, dtype, backend) -> dict:
    return {"pretrained": str(model_dir), "adapters": "|".join(f"{n}:{d}" for n, d in adapters.items()),
            "arm": "all", "dtype": dtype, "backend": backend}


def arg_text(args: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in args.items())


def run_cli(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child): on a shared machine the CPU time is the steadier."""
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{out.stderr[-3000:]}")
    return wall, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)


def summary(hf: dict[str, tuple[float, float]], wf: tuple[float, float]) -> dict:
    """hf: arm -> (wall s, CPU s) of its run; wf: (wall s, CPU s) of the all-arms run."""
    hf_wall, hf_cpu = sum(w for w, _ in hf.values()), sum(c for _, c in hf.values())
    return {"hf_peft_per_arm_wall_s": {k: round(w, 2) for k, (w, _) in hf.items()},
            "hf_peft_per_arm_cpu_s": {k: round(c, 2) for k, (_, c) in hf.items()},
            "hf_peft_total_wall_s": round(hf_wall, 2), "hf_peft_total_cpu_s": round(hf_cpu, 2),
            "warmfast_all_arms_wall_s": round(wf[0], 2), "warmfast_all_arms_cpu_s": round(wf[1], 2),
            "ratio_wall": round(hf_wall / wf[0], 3), "ratio_cpu": round(hf_cpu / wf[1], 3)}


def measure_cli(model_dir, adapters, tasks, a, env) -> dict:
    common = ["--device", a.device, "--batch_size", str(a.batch_size), "--tasks", *TASKS,
              "--include_path", str(tasks)]
    hf = {}
    for arm, path in [("base", None), *adapters.items()]:
        hf[arm] = run_cli([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                           arg_text(hf_args(model_dir, path, a.dtype)), *common], env)
        print(f"cli hf {arm}: {hf[arm][0]:.1f}s wall, {hf[arm][1]:.1f}s CPU", file=sys.stderr)
    wf = run_cli([sys.executable, "-m", "warmfast", "lm-eval", "--model", "warmfast", "--model_args",
                  arg_text(wf_args(model_dir, adapters, a.dtype, a.backend)), *common], env)
    print(f"cli warmfast all arms: {wf[0]:.1f}s wall, {wf[1]:.1f}s CPU", file=sys.stderr)
    return summary(hf, wf)


def loglikelihoods(result) -> dict:
    """(task, doc_id, request) -> log-likelihood, for the parity check."""
    out = {}
    for task, samples in result["samples"].items():
        for s in samples:
            for i, r in enumerate(s["resps"]):
                v = r[0][0] if isinstance(r[0], (tuple, list)) else r[0]
                if isinstance(v, float):
                    out[(task, s["doc_id"], i)] = v
    return out


def measure_inproc(model_dir, adapters, tasks, a) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from warmfast.integrations import engines, lm_eval_backend
    from warmfast.integrations.lm_eval_cli import arm_runs

    tm = TaskManager(include_path=str(tasks), include_defaults=False)

    def evaluate(model, model_args):
        return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=list(TASKS),
                                       task_manager=tm, device=a.device, batch_size=a.batch_size,
                                       log_samples=True)
    hf, hf_ll = {}, {}
    for arm, path in [("base", None), *adapters.items()]:
        t0, c0 = time.perf_counter(), time.process_time()
        hf_ll[arm] = loglikelihoods(evaluate("hf", hf_args(model_dir, path, a.dtype)))
        hf[arm] = (time.perf_counter() - t0, time.process_time() - c0)
        print(f"inproc hf {arm}: {hf[arm][0]:.1f}s wall, {hf[arm][1]:.1f}s CPU", file=sys.stderr)
    t0, c0 = time.perf_counter(), time.process_time()
    wf_ll = {}
    for arm, args in arm_runs("warmfast", wf_args(model_dir, adapters, a.dtype, a.backend), None):
        wf_ll[arm] = loglikelihoods(evaluate("warmfast", args))
    lm_eval_backend.clear_arm_memo()
    engines.release_engines()
    wf = (time.perf_counter() - t0, time.process_time() - c0)
    print(f"inproc warmfast all arms: {wf[0]:.1f}s wall, {wf[1]:.1f}s CPU", file=sys.stderr)
    diff = max(abs(hf_ll[arm][k] - wf_ll[arm][k]) for arm in hf_ll for k in hf_ll[arm])
    return {**summary(hf, wf), "max_abs_loglikelihood_diff": diff,
            "requests_per_arm": len(hf_ll["base"])}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--mode", default="both", choices=["cli", "inproc", "both"])
    ap.add_argument("--batch-size", type=int, default=16, help="lm-eval --batch_size, both systems")
    ap.add_argument("--mc", type=int, default=32, help="multiple-choice docs (4 choices each)")
    ap.add_argument("--texts", type=int, default=8, help="perplexity texts (100-300 words)")
    ap.add_argument("--gen", type=int, default=12, help="generate_until docs (16 new tokens)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args(argv)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="lm_eval_speed_"))
    model_dir, adapters = build_model(work / "model_folder", a.preset, a.adapters)
    tasks = write_tasks(work / "tasks", a.mc, a.texts, a.gen)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    os.environ.update({k: env[k] for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")})
    backend = "torch" if a.device == "cpu" and a.backend == "auto" else a.backend
    record = {**record_header("lm_eval_speed", a.device, backend), "preset": a.preset,
              "params": PRESETS[a.preset], "dtype": a.dtype, "adapters": a.adapters,
              "adapter_ranks": {n: json.loads((Path(d) / "adapter_config.json").read_text())["r"]
                                for n, d in adapters.items()},
              "batch_size": a.batch_size, "tasks": {"mc_docs": a.mc, "texts": a.texts, "gen_docs": a.gen}}
    if a.mode in ("inproc", "both"):
        record["inproc"] = measure_inproc(model_dir, adapters, tasks, a)
    if a.mode in ("cli", "both"):
        record["cli"] = measure_cli(model_dir, adapters, tasks, a, env)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = record["date"].replace(":", "").replace("-", "")[:15]
    path = out / f"lm_eval_speed_{a.device}_{a.preset}_{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("inproc", "cli") if k in record}))
    print(f"-> {path}", file=sys.stderr)
    return record


if __name__ == "__main__":
    main()
