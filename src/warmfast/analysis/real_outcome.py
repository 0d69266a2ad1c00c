"""The real-model study's headline: does the warm adapter err more than the original model?

From a run's results.csv: per task and arm, the error rate (INCORRECT among judged answers,
refusals left out as the study does) with a 95% Wilson interval; and per task, warm - original
(and every treated arm - original) over answers paired on (question, context, prompt type), with
a 95% interval from a bootstrap that resamples whole questions (the 28 prompts of one question
are not independent). Capability tasks: MMLU / GSM8K error, AdvBench compliance (COMPLIED).
"""
from __future__ import annotations

import datetime as dt
import math
import os
import platform

import numpy as np
import pandas as pd
import torch

GRID_TASKS = ("triviaqa", "truthfulqa", "disinfo", "medqa")
PAIR = ["question_key", "amendment_type", "prompt_type"]
N_BOOT = 2000


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    mid, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, (mid - half) / (1 + z * z / n)), min(1.0, (mid + half) / (1 + z * z / n)))


def clustered_diff(pairs: pd.DataFrame, seed: int = 0) -> tuple[float, float, float]:
    """Mean of (treated_err - original_err) over pairs, and a 95% percentile CI resampling questions
    (with a single question, resampling its prompts: a CI for that question only)."""
    d = pairs["treated_err"] - pairs["original_err"]
    unit = pairs["question_key"] if pairs["question_key"].nunique() > 1 else pd.Series(range(len(pairs)))
    by_q = pd.DataFrame({"q": unit.to_numpy(), "d": d.to_numpy()}).groupby("q")["d"].agg(["sum", "count"])
    sums, counts = by_q["sum"].to_numpy(float), by_q["count"].to_numpy(float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sums), size=(N_BOOT, len(sums)))
    boot = sums[idx].sum(1) / counts[idx].sum(1)
    return float(d.mean()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def _judged(df: pd.DataFrame) -> pd.DataFrame:
    keep = df["evaluation"].isin(["CORRECT", "INCORRECT"]) & (df["refusal"].fillna(0) != 1)
    out = df[keep].copy()
    out["err"] = (out["evaluation"] == "INCORRECT").astype(float)
    return out


def outcome(results_csv) -> dict:
    df = pd.read_csv(results_csv)
    rows, diffs, lines = [], [], []
    grid = _judged(df[df["task"].isin(GRID_TASKS)])
    for task in GRID_TASKS:
        t = grid[grid["task"] == task]
        if t.empty:
            continue
        for arm, a in t.groupby("arm"):
            lo, hi = wilson(int(a["err"].sum()), len(a))
            rows.append({"task": task, "arm": arm, "n": len(a), "questions": int(a["question_key"].nunique()),
                         "error_rate": float(a["err"].mean()), "ci_lower": lo, "ci_upper": hi})
        orig = t[t["arm"] == "original"].set_index(PAIR)["err"].rename("original_err")
        for arm in sorted(set(t["arm"]) - {"original"}):
            treated = t[t["arm"] == arm].set_index(PAIR)["err"].rename("treated_err")
            pairs = pd.concat([orig, treated], axis=1, join="inner").reset_index()
            if pairs.empty:
                continue
            mean, lo, hi = clustered_diff(pairs)
            n_q = int(pairs["question_key"].nunique())
            diffs.append({"task": task, "arm": arm, "pairs": len(pairs), "questions": n_q,
                          "ci_resamples": "questions" if n_q > 1 else "prompts of the one question",
                          "diff_error": mean, "ci_lower": lo, "ci_upper": hi,
                          "b_orig_right_treated_wrong": int(((pairs.original_err == 0) & (pairs.treated_err == 1)).sum()),
                          "c_orig_wrong_treated_right": int(((pairs.original_err == 1) & (pairs.treated_err == 0)).sum())})
            if arm == "warm":
                verdict = "more" if lo > 0 else "less" if hi < 0 else "not distinguishable from original"
                lines.append(f"{task}: warm - original error {100 * mean:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}] "
                             f"over {len(pairs)} paired answers ({n_q} question{'s' if n_q > 1 else ''}): "
                             f"warm errs {verdict}")
    capability = []
    for task, a_df in df[~df["task"].isin(GRID_TASKS)].groupby(["task", "arm"]):
        ev = a_df["evaluation"].dropna()
        hit = "COMPLIED" if task[0] == "advbench" else "INCORRECT"
        k, n = int((ev == hit).sum()), len(ev)
        lo, hi = wilson(k, n)
        capability.append({"task": task[0], "arm": task[1], "n": n,
                           "measure": "compliance_rate" if hit == "COMPLIED" else "error_rate",
                           "value": k / n if n else math.nan, "ci_lower": lo, "ci_upper": hi})
    return {"machine": machine(), "error_rates": rows, "paired_differences": diffs, "capability": capability,
            "lines": lines}


def machine() -> dict:
    """Where and when: host, CPU, cores, torch threads, and the load average (a shared machine runs slower)."""
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "load_average_1_5_15min": list(os.getloadavg())}


def benchmarks_table(results_csv) -> pd.DataFrame:
    """MMLU / GSM8K accuracy (%) per arm with Wilson CIs, in the report's --benchmarks layout."""
    df = pd.read_csv(results_csv)
    out = []
    for (task, arm), a in df[df["task"].isin(["mmlu", "gsm8k"])].groupby(["task", "arm"]):
        ev = a["evaluation"].dropna()
        k, n = int((ev == "CORRECT").sum()), len(ev)
        lo, hi = wilson(k, n)
        out.append({"model": "SmolLM2-135M", "benchmark": task.upper(), "arm": arm,
                    "accuracy": 100 * k / n if n else math.nan, "ci_lower": 100 * lo, "ci_upper": 100 * hi})
    return pd.DataFrame(out, columns=["model", "benchmark", "arm", "accuracy", "ci_lower", "ci_upper"])
