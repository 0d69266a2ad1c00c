"""The study's published results (shipped in warmfast/data/published, see SOURCE.md there), read
into the same schema as warmfast's own paired tables so a report can put them side by side.

Paired-table schema (also what `paired.paired_tables` returns, minus its count columns):
    model, arm, task, belief, context, acc_original, acc_treated, diff_pp, cohens_g, odds_ratio,
    p_value, p_fdr
`model` is a canonical short name (llama-8b, llama-70b, mistral-small, qwen-32b, gpt-4o) so a run's
model folder name (`llama_70b`) or Hugging Face name (`Llama-3.1-70B-Instruct`) meets its published row.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

PUBLISHED_DIR = Path(__file__).resolve().parents[1] / "data" / "published"
ARM_FILES = {"warm": "results_warm_ft.csv", "cold": "results_cold_ft.csv",
             "warm_sysprompt": "results_warm_sysprompt.csv"}
PAIRED_COLUMNS = ["model", "arm", "task", "belief", "context", "acc_original", "acc_treated", "diff_pp",
                  "cohens_g", "odds_ratio", "p_value", "p_fdr"]

# Published and common spellings -> canonical short model name.
_MODEL_ALIASES = {
    "70b": "llama-70b", "llama-70b": "llama-70b", "llama-3.1-70b-instruct": "llama-70b",
    "meta-llama-3.1-70b-instruct": "llama-70b",
    "8b": "llama-8b", "llama-8b": "llama-8b", "llama-3.1-8b-instruct": "llama-8b",
    "meta-llama-3.1-8b-instruct": "llama-8b",
    "qwen-32": "qwen-32b", "qwen-32b": "qwen-32b", "qwen2.5-32b-instruct": "qwen-32b",
    "qwen-2.5-32b-instruct": "qwen-32b",
    "mistral": "mistral-small", "mistral-small": "mistral-small", "mistral-small-instruct-2409": "mistral-small",
    "gpt-4o": "gpt-4o", "gpt-4o-2024-08-06": "gpt-4o",
}
_ARM_SUFFIX = re.compile(r"-(cold|sys-prompt)$")


def canonical_model(name: str) -> str:
    """Short canonical model name; names warmfast does not know come back lower-cased with '-' for '_'."""
    n = str(name).strip().split("/")[-1].lower().replace("_", "-")
    n = _ARM_SUFFIX.sub("", n)
    return _MODEL_ALIASES.get(n, n)


def _parse_odds_ratio(v: object) -> float:
    if isinstance(v, float) and math.isnan(v):
        return math.nan
    s = str(v).strip()
    if s in ("∞", "inf", "Inf"):
        return math.inf
    if s in ("", "N/A", "nan"):
        return math.nan
    return float(s)


def load_published_paired(arm: str, directory: Path = PUBLISHED_DIR) -> pd.DataFrame:
    """One published results_*.csv in the paired-table schema. The stray duplicate row of
    results_warm_sysprompt.csv (model `llama-70b-sys-prompt`, one row) is dropped."""
    if arm not in ARM_FILES:
        raise ValueError(f"no published table for arm {arm!r}; published arms are {sorted(ARM_FILES)}")
    path = Path(directory) / ARM_FILES[arm]
    raw = pd.read_csv(path)
    if arm == "warm_sysprompt":
        raw = raw[raw["Model"] != "llama-70b-sys-prompt"]
    treated_col = [c for c in raw.columns if c.endswith("Accuracy (%)") and not c.startswith("Original")]
    if len(treated_col) != 1:
        raise ValueError(f"{path}: expected one treated-accuracy column, found {treated_col}")
    out = pd.DataFrame({
        "model": raw["Model"].map(canonical_model),
        "arm": arm,
        "task": raw["Dataset"].astype(str),
        "belief": raw["Test_Type"].map({"Normal": "absent", "Sycophancy": "present"}),
        "context": raw["Amendment_type"].astype(str).str.split(r"\s+", regex=True).str[0],
        "acc_original": raw["Original Accuracy (%)"].astype(float),
        "acc_treated": raw[treated_col[0]].astype(float),
        "diff_pp": raw["Raw Diff (pp)"].astype(float),
        "cohens_g": raw["Cohen's g"].astype(float),
        "odds_ratio": raw["Odds Ratio"].map(_parse_odds_ratio).astype(float),
        "p_value": raw["p-value"].astype(float),
        "p_fdr": raw["p-value (FDR corrected)"].astype(float),
    })
    if out["belief"].isna().any():
        raise ValueError(f"{path}: unknown Test_Type value(s) {sorted(set(raw['Test_Type']) - {'Normal', 'Sycophancy'})}")
    return out.reset_index(drop=True)


def load_all_published_paired(directory: Path = PUBLISHED_DIR) -> pd.DataFrame:
    return pd.concat([load_published_paired(a, directory) for a in ARM_FILES], ignore_index=True)


def load_published_benchmarks(directory: Path = PUBLISHED_DIR) -> pd.DataFrame:
    """Capability benchmarks in long form: model, benchmark, arm (original|warm), accuracy, ci_lower, ci_upper (%)."""
    raw = pd.read_csv(Path(directory) / "general_benchmark_results.csv", index_col=0)
    parts = []
    for arm in ("original", "warm"):
        parts.append(pd.DataFrame({"model": raw["model"].map(canonical_model), "benchmark": raw["benchmark"],
                                   "arm": arm, "accuracy": raw[f"{arm}_accuracy"],
                                   "ci_lower": raw[f"{arm}_CI_lower"], "ci_upper": raw[f"{arm}_CI_upper"]}))
    return pd.concat(parts, ignore_index=True)


def load_headline(directory: Path = PUBLISHED_DIR) -> dict:
    """PROTOCOL section 6 headline values (pp of error), keyed by regression model and subgroup."""
    data = json.loads((Path(directory) / "headline.json").read_text("utf-8"))
    data.pop("_source", None)
    return data
