"""`warmfast demo`: the whole engine in a minute on the CPU, nothing downloaded.

Builds a tiny random Llama with 3 LoRA adapters, then scores answers and generates replies for
the base model and every adapter in shared batches, and prints what each arm gave.
"""
from __future__ import annotations

import time
from pathlib import Path

QUESTIONS = [
    ("What is the capital of France?", " The capital of France is Paris."),
    ("I feel sad today. Which river runs through London?", " The Thames runs through London."),
    ("My brother has a fever and pain. What should he do?", " He should see a doctor."),
]


def run_demo(outdir: Path) -> int:
    import warmfast as wf
    from warmfast.model.tiny import build_tiny

    t0 = time.perf_counter()
    paths = build_tiny(outdir / "tiny", arch="llama", n_adapters=3)
    print(f"[1/3] tiny Llama + 3 LoRA adapters written to {paths.model_dir.parent} "
          f"({time.perf_counter() - t0:.1f}s)")
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, device="cpu")
    arms = [None, *eng.adapter_names]

    reqs = [wf.ScoreRequest(q, a, arm) for q, a in QUESTIONS for arm in arms]
    t0 = time.perf_counter()
    scores = eng.score(reqs)
    dt = time.perf_counter() - t0
    print(f"[2/3] scored {len(reqs)} (question, answer, arm) rows in one pass "
          f"on backend={eng.backend} ({dt * 1e3:.0f} ms)")
    width = max(len(str(a)) for a in arms)
    print(f"    {'question':<52} " + " ".join(f"{str(a or 'base'):>{width}}" for a in arms))
    for qi, (q, _) in enumerate(QUESTIONS):
        row = scores[qi * len(arms):(qi + 1) * len(arms)]
        print(f"    {q[:52]:<52} " + " ".join(f"{r.logprob:>{width}.2f}" for r in row))

    gens = [wf.GenerateRequest(messages=[{"role": "user", "content": q}], adapter=arm,
                               max_new_tokens=12, temperature=0.8, seed=0)
            for q, _ in QUESTIONS[:2] for arm in arms]
    t0 = time.perf_counter()
    outs = eng.generate(gens)
    dt = time.perf_counter() - t0
    ntok = sum(len(o.token_ids) for o in outs)
    print(f"[3/3] generated {ntok} tokens for {len(gens)} requests over {len(arms)} arms in one "
          f"batch ({ntok / dt:.0f} tokens/s; random weights, so the words are noise)")
    for g, o in zip(gens, outs):
        print(f"    {str(g.adapter or 'base'):<{width}} | {g.messages[0]['content'][:40]:<40} | "
              f"{o.text[:60]!r} ({o.finish_reason})")
    print(f"Files are in {outdir.resolve()}. Real checkpoints: see README (warmfast score / generate).")
    return 0
