"""A run's analysis beside the study's published results: one self-contained HTML page, a Markdown
summary, the figures as PNG + SVG and every table as CSV.

`analyse(judged)` does the statistics (preprocessing, paired tests per treated arm, regressions)
and collects, in `cannot`, each thing it could not compute and why; `write_report` renders it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from warmfast.analysis import figures as F
from warmfast.analysis import render as R
from warmfast.analysis.load import ARMS
from warmfast.analysis.paired import missing_cells, paired_tables, unpaired_counts
from warmfast.analysis.preprocess import Preprocessed, PreprocessConfig, preprocess
from warmfast.analysis.published import (PAIRED_COLUMNS, canonical_model, load_all_published_paired,
                                         load_headline, load_published_benchmarks)
from warmfast.analysis.regress import MODELS, RegressionResult, fit_regression

TREATED_ARMS = tuple(a for a in ARMS if a != "original")
CELL_KEYS = ["model", "arm", "task", "belief", "context"]


@dataclass
class Analysis:
    """Everything a report shows about one run. paired: all treated arms' cells (paired-table
    schema + counts); regressions: arm -> model name -> result; cannot: (what, why) pairs."""

    pre: Preprocessed
    arms: list[str]
    paired: pd.DataFrame
    missing: pd.DataFrame
    unpaired: pd.DataFrame
    regressions: dict[str, dict[str, RegressionResult]]
    cannot: list[tuple[str, str]] = field(default_factory=list)


def analyse(judged: pd.DataFrame, config: PreprocessConfig | None = None,
            input_notes: list[tuple[str, str]] | None = None, pool_neutral: bool = True) -> Analysis:
    """Preprocess, then paired tests and regressions for every treated arm present.
    input_notes: (what, why) from the readers (rows a run store could not supply).
    pool_neutral: see paired.paired_tables (False: the published tables' layout)."""
    if len(judged) == 0:
        raise ValueError("analyse: the inputs hold no judged rows; nothing to analyse")
    pre = preprocess(judged, config)
    rows = pre.rows
    present = set(rows["arm"])
    cannot: list[tuple[str, str]] = list(input_notes or [])
    arms = [a for a in TREATED_ARMS if a in present]
    for a in TREATED_ARMS:
        if a not in present:
            cannot.append((f"arm {a}", "no rows of this arm in the run: its paired tests, regressions and "
                                       "figures are not computed (published values are shown alone)"))
    if "original" not in present:
        cannot.append(("all paired tests and regressions",
                       "no rows of the original arm, the reference every comparison needs"))
        arms = []
    models = sorted(rows["model"].unique())
    if len(models) == 1:
        cannot.append(("model comparison", f"the run has a single model ({models[0]}): regressions omit the "
                                           "model fixed effect and no model is compared with another"))
    tables, missing, unpaired, regs = [], [], [], {}
    for arm in arms:
        t = paired_tables(rows, arm, pool_neutral=pool_neutral)
        tables.append(t)
        missing.append(missing_cells(t, rows, arm))
        unpaired.append(unpaired_counts(rows, arm))
        regs[arm] = {name: fit_regression(name, rows, arm) for name in MODELS}
        for name, r in regs[arm].items():
            if r.status != "ok":
                cannot.append((f"{name} ({arm} vs original)", r.message))
            for note in r.notes:
                cannot.append((f"{name} ({arm} vs original), adjusted", note))
    paired = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=PAIRED_COLUMNS)
    miss = pd.concat(missing, ignore_index=True) if missing else pd.DataFrame(columns=CELL_KEYS + ["reason"])
    unp = pd.concat(unpaired, ignore_index=True) if unpaired else pd.DataFrame()
    if len(miss):
        for reason, n in miss["reason"].str.replace(r"\d+", "N", regex=True).value_counts().items():
            cannot.append((f"{n} paired-test cell(s)", reason))
    if len(unp) and (unp["unpaired_original"] + unp["unpaired_treated"]).sum():
        n = int((unp["unpaired_original"] + unp["unpaired_treated"]).sum())
        cannot.append(("paired tests, some rows", f"{n} row(s) found no partner in the other arm (same question, "
                                                  "context and prompt type) and are left out of the paired tests"))
    return Analysis(pre, arms, paired, miss, unp, regs, cannot)


def side_by_side(paired: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Run cells joined to the published cell of the same (canonical model, arm, task, belief, context)."""
    run = paired.assign(model_key=paired["model"].map(canonical_model))
    pub = published.rename(columns={"model": "model_key"})
    cols = ["acc_original", "acc_treated", "diff_pp", "p_value", "p_fdr"]
    out = run[["model", "model_key", "arm", "task", "belief", "context", "n"] + cols].merge(
        pub[["model_key", "arm", "task", "belief", "context"] + cols], how="left",
        on=["model_key", "arm", "task", "belief", "context"], suffixes=("", " (published)"))
    order = ["model", "arm", "task", "belief", "context", "n"]
    for c in cols:
        order += [c, f"{c} (published)"]
    return out[order]


def ame_table(analysis: Analysis, headline: dict) -> pd.DataFrame:
    """AMEs in percentage points with 95% CIs, beside the published headline value where one exists."""
    recs = []
    for arm, regs in analysis.regressions.items():
        for name, r in regs.items():
            if r.status != "ok":
                recs.append(dict(arm=arm, model=name, subgroup="—", n=r.n_obs, ame_pp=np.nan, ci_low_pp=np.nan,
                                 ci_high_pp=np.nan, p=np.nan, published_pp=np.nan, status=r.status))
                continue
            for a in r.ames.itertuples():
                key = "overall" if a.subgroup == "all" else a.subgroup
                pub = headline.get("per_task" if name == "M1" and a.subgroup_var == "dataset" else name, {}).get(key)
                recs.append(dict(arm=arm, model=name, subgroup=a.subgroup, n=a.n, ame_pp=100 * a.ame,
                                 ci_low_pp=100 * a.ci_low, ci_high_pp=100 * a.ci_high, p=a.p,
                                 published_pp=pub if arm == "warm" and pub is not None else np.nan, status="ok"))
    return pd.DataFrame(recs, columns=["arm", "model", "subgroup", "n", "ame_pp", "ci_low_pp", "ci_high_pp",
                                       "p", "published_pp", "status"])


def _figure_pairs(analysis: Analysis, published: pd.DataFrame, bench_run, bench_pub, sociot, out: Path) -> list[dict]:
    """(caption, run figure, published figure) rows, each figure saved as PNG + SVG."""
    run = analysis.paired
    specs = [
        ("error_by_task", "Error rate, original vs warm (no belief, unmodified)",
         lambda t: F.fig_error_by_task(t, "warm")),
        ("diff_by_context", "Warm minus original error by context, without and with user beliefs",
         lambda t: F.fig_diff_by_context(t, "warm")),
        ("arms", "Cold fine-tuning and warm system prompt beside warm", F.fig_arms),
    ]
    blocks = []
    for name, caption, fn in specs:
        items = []
        for who, table in (("this run", run), ("published", published)):
            fig = fn(table) if len(table) else "the run has no paired cells"
            items.append(_save(fig, out, f"{name}_{who.replace(' ', '_')}", f"{caption}: {who}"))
        blocks.append(R.figures(items))
    items = [_save(F.fig_warmth_epochs(sociot), out, "warmth_epochs_this_run", "Warmth over epochs: this run"),
             {"caption": "Warmth over epochs: published",
              "reason": "the published summary_data holds no per-checkpoint SocioT scores"}]
    blocks.append(R.figures(items))
    items = [_save(F.fig_benchmarks(bench_run), out, "benchmarks_this_run", "Capability benchmarks: this run"),
             _save(F.fig_benchmarks(bench_pub), out, "benchmarks_published", "Capability benchmarks: published")]
    blocks.append(R.figures(items))
    return blocks


def _save(fig, out: Path, name: str, caption: str) -> dict:
    if isinstance(fig, str):
        return {"caption": caption, "reason": fig}
    png, _ = F.save_figure(fig, out / "figures", name)
    return {"caption": caption, "src": R.png_data_uri(png)}


def write_report(analysis: Analysis, out_dir: str | Path, sources: list[str], *,
                 sociot: pd.DataFrame | None = None, benchmarks: pd.DataFrame | None = None,
                 title: str = "warmfast report: warmth study") -> dict[str, Path]:
    """Write report.html, summary.md, figures/*.png|svg and tables/*.csv into out_dir."""
    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    published = load_all_published_paired()
    bench_pub = load_published_benchmarks()
    headline = load_headline()
    cannot = list(analysis.cannot)
    if sociot is None:
        cannot.append(("warmth over epochs", "no SocioT scores per checkpoint were given (--sociot CSV with "
                                             "model, epoch, warmth, se)"))
    if benchmarks is None:
        cannot.append(("capability benchmarks", "no benchmark results were given (--benchmarks CSV with model, "
                                                "benchmark, arm, accuracy, ci_lower, ci_upper)"))
    run_models = sorted(analysis.pre.rows["model"].unique())
    unmatched = [m for m in run_models if canonical_model(m) not in set(published["model"])]
    if unmatched:
        cannot.append(("published comparison", f"model(s) {unmatched} have no published counterpart; "
                                               "their published columns are empty"))

    steps = analysis.pre.step_totals()
    ames = ame_table(analysis, headline)
    lengths = analysis.pre.rows.groupby("arm")["response_length"].agg(["size", "mean"]).reset_index() \
        .rename(columns={"size": "answers", "mean": "mean_chars"})
    lengths["published_mean_chars"] = lengths["arm"].map(headline["response_length_chars"])
    sbs = side_by_side(analysis.paired, published) if len(analysis.paired) else pd.DataFrame()
    tables = {"preprocessing_steps": analysis.pre.steps, "paired_tests": analysis.paired,
              "missing_cells": analysis.missing, "unpaired_rows": analysis.unpaired,
              "marginal_effects": ames, "run_vs_published": sbs, "response_length": lengths}
    for arm, regs in analysis.regressions.items():
        for name, r in regs.items():
            if r.status == "ok":
                tables[f"coefficients_{arm}_{name}"] = r.coefficients
    for name, df in tables.items():
        df.to_csv(out / "tables" / f"{name}.csv", index=False)

    sections = [
        {"id": "preprocessing", "title": "1. Preprocessing", "blocks": [
            R.text("De-duplication on (question, context, prompt type), then refusals (dropped; on Disinfo "
                   "counted correct), then pooling of prompt types into belief absent / present."),
            R.table(steps), R.table(analysis.pre.steps, details="per model, arm and task")]},
        {"id": "regressions", "title": "2. Regressions: average marginal effects (pp of error)", "blocks": [
            R.text("Binomial GLM, logit link; AME by counterfactual prediction with delta-method 95% CIs. "
                   "`published_pp`: the study's value (warm vs original, all 10 model versions)."),
            R.table(ames),
            R.text("Response length in characters per arm (published: mean over all analysed answers of "
                   "the study, original vs warm)."), R.table(lengths)] + [R.table(pd.DataFrame([{"arm": arm, "model": n, "status": r.status, "n": r.n_obs,
                                                     "formula": r.formula, "message": r.message}
                                                    for arm, regs in analysis.regressions.items()
                                                    for n, r in regs.items()]), details="formulas and status")]
         + [R.table(r.coefficients, details=f"coefficients of {n} ({arm} vs original, log-odds)")
            for arm, regs in analysis.regressions.items() for n, r in regs.items() if r.status == "ok"]},
        {"id": "figures", "title": "3. Figures: this run (left) and the published study (right)",
         "blocks": _figure_pairs(analysis, published, benchmarks, bench_pub, sociot, out)},
        {"id": "paired", "title": "4. Paired tests beside the published cells", "blocks": [
            R.text("McNemar exact per (model, arm, task, belief, context); BH FDR within each model x task x "
                   "belief table. Accuracies in %, differences treated - original in pp. Published p-values "
                   "are rounded to 4 decimals (0 means below 0.00005).")]
         + ([R.table(sbs)] if len(sbs) else [R.text("No paired cells in this run.", "missing")])},
        {"id": "published", "title": "5. Published tables", "blocks": [
            R.table(published[published["arm"] == a], details=f"published: {a} vs original")
            for a in ("warm", "cold", "warm_sysprompt")] + [R.table(bench_pub, details="published benchmarks")]},
        {"id": "cannot", "title": "6. What could not be computed, and why", "blocks": [
            R.bullet_list([f"{what}: {why}" for what, why in cannot] or ["Everything was computed."], "missing"),
            R.table(analysis.missing, details=f"all {len(analysis.missing)} cells without a test")]},
    ]
    html_path = out / "report.html"
    html_path.write_text(R.render_html(title, sources, sections), encoding="utf-8")
    md_path = out / "summary.md"
    md_path.write_text(_summary_md(title, sources, steps, ames, lengths, analysis, sbs, cannot), encoding="utf-8")
    return {"html": html_path, "markdown": md_path, "tables": out / "tables", "figures": out / "figures"}


def _summary_md(title, sources, steps, ames, lengths, analysis: Analysis, sbs: pd.DataFrame, cannot) -> str:
    parts = [f"# {title}\n", f"Inputs: {', '.join(sources)}\n",
             "## Preprocessing\n", R.table_md(steps),
             "## Average marginal effects (pp of error, 95% CI) beside the published values\n", R.table_md(ames),
             "## Response length (characters)\n", R.table_md(lengths)]
    if len(analysis.paired):
        counts = analysis.paired.assign(sig=analysis.paired["p_fdr"] < 0.05).groupby(["model", "arm", "task", "belief"]) \
            .agg(cells=("context", "size"), pairs=("n", "sum"), mean_diff_pp=("diff_pp", "mean"),
                 significant_fdr=("sig", "sum")).reset_index()
        parts += ["## Paired tests (summary per table; full tables in tables/paired_tests.csv)\n", R.table_md(counts)]
        unmod = sbs[sbs["context"] == "unmodified"]
        parts += ["## Unmodified context, run beside published\n", R.table_md(unmod)]
    parts += ["## What could not be computed, and why\n",
              "\n".join(f"- {what}: {why}" for what, why in cannot) or "Everything was computed."]
    return "\n".join(parts) + "\n"
