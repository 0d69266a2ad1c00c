"""The engine core against the closed-batch scorer and generator it replaced, in one process.

Loads engine/scorer.py and engine/generator.py as they were at git commit BEFORE (the last commit
before the core) from this repository's history, and times them against Engine.score /
Engine.generate on the same engine and requests, interleaved within each repetition (best of
--reps), after checking that both give the same scores (1e-3) and tokens. Writes one JSON record.

  python bench/core_ab.py --preset cpu31m          # score (ragged; 4 continuations per context), generate
  python bench/core_ab.py --preset tiny            # per-step overhead: a tiny model is all Python
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from e2e_model import build  # noqa: E402
from e2e_score import make_rows  # noqa: E402

BEFORE = "e4d1b09"


def old_module(name: str, work: Path):
    src = subprocess.run(["git", "show", f"{BEFORE}:src/warmfast/engine/{name}.py"], cwd=HERE.parent,
                         check=True, capture_output=True, text=True).stdout
    path = work / f"before_{name}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"before_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def best_of(fa, fb, reps: int) -> tuple[float, float]:
    ba = bb = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fa()
        ba = min(ba, time.perf_counter() - t0)
        t0 = time.perf_counter()
        fb()
        bb = min(bb, time.perf_counter() - t0)
    return ba, bb


def main() -> None:
    import warmfast as wf

    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu31m")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp())
    old_s, old_g = old_module("scorer", work), old_module("generator", work)
    b = build(work, args.preset, 3, 16, "cpu", "float32")
    eng, arms = b.engine, [None, *b.engine.adapter_names]
    rows = make_rows(48, 96, 12, b.vocab, arms, ragged=True)
    score_sets = {"score_ragged": [wf.ScoreRequest(c, x, a) for c, x, a in rows],
                  "score_4_per_context": [wf.ScoreRequest(c, [t], a) for c, _, a in rows[:24] for t in (11, 12, 13, 14)]}
    rng = random.Random(0)
    gens = [wf.GenerateRequest(prompt=[rng.randrange(10, b.vocab) for _ in range(rng.randint(16, 64))],
                               adapter=arms[i % 4], max_new_tokens=rng.randint(4, 24), temperature=0.8 * (i % 2), seed=i)
            for i in range(24)]
    record = {"bench": "core_ab", "before_commit": BEFORE, "preset": args.preset,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
              "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "reps": args.reps,
              "loadavg_1m_at_start": os.getloadavg()[0]}  # a shared machine's load swings the ratios
    with torch.inference_mode():
        for name, reqs in score_sets.items():
            a, c = old_s.score(eng, reqs, 8192), eng.score(reqs)
            assert max(abs(x.logprob - y.logprob) for x, y in zip(a, c)) < 1e-3, name
            before, after = best_of(lambda: old_s.score(eng, reqs, 8192), lambda: eng.score(reqs), args.reps)
            record[name] = {"rows": len(reqs), "before_s": before, "after_s": after, "after_over_before": after / before}
            print(name, record[name], flush=True)
        a, c = old_g.generate(eng, gens, 16), eng.generate(gens, 16)
        assert [x.token_ids for x in a] == [y.token_ids for y in c]
        n, steps = sum(len(x.token_ids) for x in a), sum(eng.generate_stats.steps.values())
        before, after = best_of(lambda: old_g.generate(eng, gens, 16), lambda: eng.generate(gens, 16), args.reps)
        record["generate_b16"] = {"requests": len(gens), "tokens": n, "steps": steps,
                                  "before_tok_s": n / before, "after_tok_s": n / after,
                                  "before_ms_per_step": 1e3 * before / steps, "after_ms_per_step": 1e3 * after / steps,
                                  "after_over_before": after / before}
        print("generate_b16", record["generate_b16"], flush=True)
    out = Path(args.out) / f"core_ab_cpu_{args.preset}_{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
