"""The summary of a bench/gpu_check.sh run: one JSON (refreshed after every step) and one table.

Reads the run's work folder (steps.jsonl, env.json, kernel_tests.xml, kernel_bench.json and the
end-to-end records under records/) and writes the summary JSON; with --table it also prints one
table with each measure beside its goal and HF+PEFT's number. A missing file is a step that has
not run (yet): its rows say so instead of failing.

  python bench/gpu_check_summary.py WORK SUMMARY_JSON [--table]
"""
from __future__ import annotations

import glob
import json
import os
import sys
import xml.etree.ElementTree as ET

# Goals on an H100/H200, Llama-3.1-8B shape, random bf16 weights, base + 8 rank-16 adapters
# (issue 19): mixed scoring >= 45k tokens/s (3.9x HF+PEFT mixed); mixed generation, 128 + 128
# tokens, >= 8k tokens/s at batch 64 and >= 25k at batch 256.
SCORE_GOAL = 45000.0
GEN_GOALS = {64: 8000.0, 256: 25000.0}


def _load(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:  # a step killed while writing: say so, keep going
        return {"unreadable": f"{path}: {err}"}


def _latest(pattern: str) -> list[dict]:
    """The newest record per file-name prefix (the part before the time stamp)."""
    newest: dict[str, str] = {}
    for path in sorted(glob.glob(pattern)):
        newest[os.path.basename(path).rsplit("_", 1)[0]] = path
    return [r for r in (_load(p) for p in newest.values()) if r is not None]


def kernel_tests(work: str) -> dict | None:
    path = os.path.join(work, "kernel_tests.xml")
    if not os.path.exists(path):
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        return {"unreadable": f"{path}: {err}"}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["failed_names"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                              if c.find("failure") is not None or c.find("error") is not None][:20]
    return counts


def summarize(work: str) -> dict:
    steps_path = os.path.join(work, "steps.jsonl")
    steps = [json.loads(line) for line in open(steps_path) if line.strip()] if os.path.exists(steps_path) else []
    bench = _load(os.path.join(work, "kernel_bench.json"))
    records = os.path.join(work, "records")
    return {
        "env": _load(os.path.join(work, "env.json")),
        "steps": steps,
        "kernel_tests": kernel_tests(work),
        "kernel_bench": [{"name": b["name"], **b.get("extra_info", {})} for b in bench.get("benchmarks", [])]
        if isinstance(bench, dict) else None,
        "e2e_score": _latest(os.path.join(records, "e2e_score_*.json")),
        "e2e_generate": sorted(_latest(os.path.join(records, "e2e_generate_*.json")), key=lambda r: r.get("rows", 0)),
        "profile": _latest(os.path.join(records, "gpu_profile_*.json")),
    }


def table_rows(s: dict) -> list[tuple[str, str, str, str, str, str]]:
    """(measure, warmfast, goal, HF+PEFT mixed, warmfast / HF, status) per line of the table."""
    gpu = bool(s.get("env") and s["env"].get("card"))
    judge = (lambda ok: "met" if ok else "NOT met") if gpu else (lambda ok: "n/a (no GPU)")
    rows = []
    kt = s.get("kernel_tests")
    if kt is None:
        rows.append(("kernel tests on the card", "not run", "all pass", "", "", "not run"))
    elif "unreadable" in kt:
        rows.append(("kernel tests on the card", "unreadable", "all pass", "", "", kt["unreadable"][:60]))
    else:
        bad = kt["failures"] + kt["errors"]
        rows.append(("kernel tests on the card", f"{kt['tests'] - bad - kt['skipped']}/{kt['tests']} pass",
                     "all pass", "", "", "met" if bad == 0 and kt["tests"] else "NOT met"))
    sc = [r for r in s.get("e2e_score", []) if "tokens_per_s" in r]
    if not sc:
        rows.append(("mixed scoring, tokens/s", "not run", f"{SCORE_GOAL:,.0f}", "", "", "not run"))
    for r in sc:
        t = r["tokens_per_s"]
        hf = t.get("hf_peft_mixed")
        rows.append((f"mixed scoring, tokens/s ({r.get('arms_per_batch_mean')} arms/batch)", f"{t['warmfast']:,.0f}",
                     f"{SCORE_GOAL:,.0f} (3.9x HF)", f"{hf:,.0f}" if hf else "skipped",
                     f"{t['warmfast'] / hf:.2f}x" if hf else "", judge(t["warmfast"] >= SCORE_GOAL)))
    gens = s.get("e2e_generate", [])
    if not gens:
        rows.append(("mixed generation, tokens/s", "not run", "", "", "", "not run"))
    for r in gens:
        if "tokens_per_s" not in r:
            rows.append((f"generation, {r.get('rows')} requests", "skipped", "", "", "", r.get("skipped", "")))
            continue
        t, n = r["tokens_per_s"], r["rows"]
        goal = GEN_GOALS.get(n)
        hf = t.get("hf_peft_mixed")
        best = max(t["warmfast"], t.get("warmfast_cuda_graphs", 0.0))
        for name in ("warmfast", "warmfast_cuda_graphs", "warmfast_sampled"):
            if name not in t:
                continue
            label = {"warmfast": "greedy, eager", "warmfast_cuda_graphs": "greedy, CUDA graphs",
                     "warmfast_sampled": "sampled T=0.8 top-p 0.95"}[name]
            status = (judge(best >= goal) if goal and name == "warmfast" else "")
            rows.append((f"generation b{r.get('max_batch', n)} {r['prompt']}+{r['new']}, {label}", f"{t[name]:,.0f}",
                         f"{goal:,.0f}" if goal and name == "warmfast" else "",
                         f"{hf:,.0f}" if hf else "skipped", f"{t[name] / hf:.2f}x" if hf else "", status))
        if "cuda_graphs_rows_equal_eager" in r:
            eq = r["cuda_graphs_rows_equal_eager"]
            a, b = eq.split("/")
            rows.append((f"generation b{n}: graph tokens == eager", eq, "all", "", "",
                         "met" if a == b else "NOT met"))
        if r.get("errors"):
            rows.append((f"generation b{n}: errors", "; ".join(r["errors"])[:60], "none", "", "", "NOT met"))
    for prof in s.get("profile", []):  # where each phase's time goes (bench/gpu_profile.py)
        for name, ph in prof.get("phases", {}).items():
            fams = ", ".join(f"{k} {v:.0f}" for k, v in list(ph.get("families_ms", {}).items())[:4])
            per = f", {ph['ms_per_step']} ms/step" if "ms_per_step" in ph else ""
            rows.append((f"profile {name}: kernels busy {ph.get('device_busy_fraction')}{per}",
                         f"{ph.get('tokens_per_s', 0):,}", "", "", "", f"ms: {fams}"))
    for st in s.get("steps", []):
        if st.get("rc") not in (0, None) or st.get("note", "").startswith("skipped: out of time"):
            rows.append((f"step {st['step']}", f"rc={st.get('rc')}", "rc=0", "", "", st.get("note", "failed")))
    return rows


def print_table(s: dict) -> None:
    env = s.get("env") or {}
    print(f"gpu_check: card {env.get('card') or 'none (dry run on CPU)'}, torch {env.get('torch')}, "
          f"triton {env.get('triton')}, {env.get('date')}")
    head = ("measure", "warmfast", "goal", "HF+PEFT mixed", "x HF", "status")
    rows = [head, *table_rows(s)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    work, out = argv[0], argv[1]
    s = summarize(work)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(s, f, indent=2)
    os.replace(tmp, out)  # a run killed mid-write still leaves the previous summary
    if "--table" in argv:
        print_table(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
