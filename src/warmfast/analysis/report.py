"""A run's analysis beside the study's published results: one self-contained HTML page, a Markdown
summary, the figures as PNG + SVG and every table as CSV.

`analyse(judged)` does the statistics (preprocessing, paired tests per treated arm, regressions)
and collects, in `cannot`, each thing it could not compute and why; `write_report` renders it.

Like with like: every figure printed beside a published value is computed the way the published
one was (PUBLISHED_WAY: the authors' compat refusal rule, neutral prompts not pooled into the
paired cells, the published M4 formula), whatever the report's own settings. When the settings
differ (the defaults do: clean refusals, pooled neutral prompts), the run's figures under them
appear as separate columns labelled with the settings, never under the published value's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
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
from warmfast.analysis.settings import PUBLISHED_WAY, ReportSettings, methods_text

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
    settings: ReportSettings = field(default_factory=ReportSettings)
    compare: "Analysis | None" = None     # the PUBLISHED_WAY analysis; None: this one is it

    @property
    def published_way(self) -> "Analysis":
        """The analysis whose figures sit beside published values."""
        return self if self.compare is None else self.compare


def analyse(judged: pd.DataFrame, config: PreprocessConfig | None = None,
            input_notes: list[tuple[str, str]] | None = None, pool_neutral: bool | None = None,
            settings: ReportSettings | None = None) -> Analysis:
    """Preprocess, then paired tests and regressions for every treated arm present, under
    `settings` (default ReportSettings(); `pool_neutral`, when given, overrides its pooling), and
    again under PUBLISHED_WAY when the settings differ (Analysis.compare).
    config: the refusal phrase list and policy (its `refusal` field is set from the settings).
    input_notes: (what, why) from the readers (rows a run store could not supply)."""
    settings = settings or ReportSettings()
    if pool_neutral is not None:
        settings = replace(settings, pool_neutral=pool_neutral)
    config = replace(config or PreprocessConfig(), refusal=settings.refusal)
    main = _analyse_one(judged, config, input_notes, settings)
    if settings != PUBLISHED_WAY:
        main.compare = _analyse_one(judged, replace(config, refusal=PUBLISHED_WAY.refusal), input_notes,
                                    PUBLISHED_WAY)
    return main


def _analyse_one(judged: pd.DataFrame, config: PreprocessConfig, input_notes, settings: ReportSettings) -> Analysis:
    pool_neutral = settings.pool_neutral
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
        regs[arm] = {name: fit_regression(name, rows, arm, m4=settings.m4) for name in MODELS}
        for name, r in regs[arm].items():
            if r.status != "ok":
                cannot.append((f"{name} ({arm} vs original)", r.message))
            for note in r.notes:
                kind = "separated terms withheld" if note.startswith("separation") else "adjusted"
                cannot.append((f"{name} ({arm} vs original), {kind}", note))
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
    return Analysis(pre, arms, paired, miss, unp, regs, cannot, settings)


SBS_COLUMNS = ["acc_original", "acc_treated", "diff_pp", "p_value", "p_fdr"]


def side_by_side(paired: pd.DataFrame, published: pd.DataFrame, ours: pd.DataFrame | None = None,
                 label: str = "") -> pd.DataFrame:
    """Run cells joined to the published cell of the same (canonical model, arm, task, belief,
    context). `paired` must be computed the published way (PUBLISHED_WAY); `ours`, when given, is
    the run under other settings, added as columns "<name> [label]" (n included)."""
    run = paired.assign(model_key=paired["model"].map(canonical_model))
    pub = published.rename(columns={"model": "model_key"})
    cols = SBS_COLUMNS
    keys = ["model", "arm", "task", "belief", "context"]
    out = run[["model", "model_key", "arm", "task", "belief", "context", "n"] + cols].merge(
        pub[["model_key", "arm", "task", "belief", "context"] + cols], how="left",
        on=["model_key", "arm", "task", "belief", "context"], suffixes=("", " (published)"))
    order = keys + ["n"]
    for c in cols:
        order += [c, f"{c} (published)"]
    if ours is not None:
        extra = ours[keys + ["n"] + cols].rename(columns={c: f"{c} [{label}]" for c in ["n"] + cols})
        out = out.merge(extra, how="outer", on=keys)
        order += [f"{c} [{label}]" for c in ["n"] + cols]
    return out[order]


def ame_table(analysis: Analysis, headline: dict) -> pd.DataFrame:
    """AMEs in percentage points with 95% CIs, computed the published way (analysis.published_way),
    beside the published headline value where one exists; the run under the report's own settings
    (when they differ) in columns "<name> [label]"."""
    base = _ame_rows(analysis.published_way, headline)
    if analysis.compare is None:
        return base
    label = analysis.settings.label()
    ours = _ame_rows(analysis, headline).drop(columns=["published_pp"])
    keys = ["arm", "model", "subgroup"]
    ours = ours.rename(columns={c: f"{c} [{label}]" for c in ours.columns if c not in keys})
    return base.merge(ours, how="outer", on=keys)


def _ame_rows(analysis: Analysis, headline: dict) -> pd.DataFrame:
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
                                 published_pp=pub if arm == "warm" and pub is not None else np.nan,
                                 status="ok" if a.identified else "not identified (separation)"))
    return pd.DataFrame(recs, columns=["arm", "model", "subgroup", "n", "ame_pp", "ci_low_pp", "ci_high_pp",
                                       "p", "published_pp", "status"])


def warm_effect_table(analysis: Analysis) -> pd.DataFrame:
    """The log-odds warm effect per model and subgroup level (regress.warm_effects, what the
    authors' scripts print), the published way; the report's own settings in labelled columns."""
    def rows(a: Analysis) -> pd.DataFrame:
        parts = [r.warm_effects.assign(arm=arm, model=name) for arm, regs in a.regressions.items()
                 for name, r in regs.items() if r.status == "ok"]
        cols = ["arm", "model", "subgroup", "coef", "se", "p", "identified"]
        return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
    base = rows(analysis.published_way)
    if analysis.compare is None:
        return base
    label = analysis.settings.label()
    ours = rows(analysis).rename(columns={c: f"{c} [{label}]" for c in ("coef", "se", "p", "identified")})
    return base.merge(ours, how="outer", on=["arm", "model", "subgroup"])


def _figure_pairs(analysis: Analysis, published: pd.DataFrame, bench_run, bench_pub, sociot, out: Path) -> list[dict]:
    """(caption, run figure, published figure) rows, each figure saved as PNG + SVG. The run's
    figures are drawn from the cells computed the published way (they sit beside published ones)."""
    run = analysis.published_way.paired
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
                 title: str = "warmfast report: warmth study", warnings: list[str] | None = None) -> dict[str, Path]:
    """Write report.html, summary.md, figures/*.png|svg and tables/*.csv into out_dir.
    warnings: lines shown at the top of both files (e.g. the subject model judged itself)."""
    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    published = load_all_published_paired()
    bench_pub = load_published_benchmarks()
    headline = load_headline()
    pw = analysis.published_way
    cannot = list(analysis.cannot)
    if analysis.compare is not None:
        cannot += [(f"{what} [published way: {PUBLISHED_WAY.label()}]", why) for what, why in analysis.compare.cannot
                   if (what, why) not in analysis.cannot]
    header = [f"Settings: {line}" for line in analysis.settings.lines()]
    header.append(f"Figures beside published values are computed the published way: {PUBLISHED_WAY.label()}.")
    header = [f"WARNING: {w}" for w in (warnings or [])] + header
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
    effects = warm_effect_table(analysis)
    lengths = pw.pre.rows.groupby("arm")["response_length"].agg(["size", "mean"]).reset_index() \
        .rename(columns={"size": "answers", "mean": "mean_chars"})
    lengths["published_mean_chars"] = lengths["arm"].map(headline["response_length_chars"])
    ours = analysis.paired if analysis.compare is not None else None
    sbs = side_by_side(pw.paired, published, ours, analysis.settings.label()) if len(pw.paired) else pd.DataFrame()
    tables = {"preprocessing_steps": analysis.pre.steps, "paired_tests": analysis.paired,
              "missing_cells": analysis.missing, "unpaired_rows": analysis.unpaired,
              "marginal_effects": ames, "warm_effects_logodds": effects, "run_vs_published": sbs,
              "response_length": lengths}
    if analysis.compare is not None:
        tables["paired_tests_published_way"] = pw.paired
    for arm, regs in analysis.regressions.items():
        for name, r in regs.items():
            if r.status == "ok":
                tables[f"coefficients_{arm}_{name}"] = r.coefficients
    for name, df in tables.items():
        df.to_csv(out / "tables" / f"{name}.csv", index=False)

    sections = [
        {"id": "methods", "title": "0. Settings and methods", "blocks": [
            R.bullet_list(header), R.bullet_list(_methods(analysis))]},
        {"id": "preprocessing", "title": "1. Preprocessing", "blocks": [
            R.text(f"Under this report's settings ({analysis.settings.label()}): de-duplication on (question, "
                   "context, prompt type), then refusals (dropped; on Disinfo counted correct), then answers the "
                   "judge could not grade (left out, counted), then pooling of prompt types into belief absent / "
                   "present."),
            R.table(steps), R.table(analysis.pre.steps, details="per model, arm and task")]
         + ([R.text(f"The same steps the published way ({PUBLISHED_WAY.label()}):"), R.table(pw.pre.step_totals())]
            if analysis.compare is not None else [])},
        {"id": "regressions", "title": "2. Regressions: average marginal effects (pp of error)", "blocks": [
            R.text("Binomial GLM, logit link; AME by counterfactual prediction with delta-method 95% CIs, "
                   f"computed the published way ({PUBLISHED_WAY.label()}). `published_pp`: the study's value "
                   "(warm vs original, all 10 model versions). Rows 'not identified (separation)' are withheld "
                   "(section 6 says which levels are separated)."),
            R.table(ames),
            R.text("Warm effect in log-odds per model and level (main coefficient, plus the interaction for a "
                   "non-reference level; SE of the sum from the covariance), as the authors' scripts print it."),
            R.table(effects),
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
        {"id": "cannot", "title": "6. What could not be computed, and why (and what was withheld)", "blocks": [
            R.bullet_list([f"{what}: {why}" for what, why in cannot] or ["Everything was computed."], "missing"),
            R.table(analysis.missing, details=f"all {len(analysis.missing)} cells without a test")]},
    ]
    html_path = out / "report.html"
    html_path.write_text(R.render_html(title, sources, sections, header), encoding="utf-8")
    md_path = out / "summary.md"
    md_path.write_text(_summary_md(title, sources, header, steps, ames, lengths, analysis, sbs, cannot),
                       encoding="utf-8")
    return {"html": html_path, "markdown": md_path, "tables": out / "tables", "figures": out / "figures"}


def _summary_md(title, sources, header, steps, ames, lengths, analysis: Analysis, sbs: pd.DataFrame, cannot) -> str:
    parts = [f"# {title}\n", f"Inputs: {', '.join(sources)}\n", "\n".join(f"- {h}" for h in header) + "\n",
             "## Methods\n", "\n".join(f"- {m}" for m in _methods(analysis)) + "\n",
             "## Preprocessing\n", R.table_md(steps)]
    if analysis.compare is not None:
        parts += [f"The same steps the published way ({PUBLISHED_WAY.label()}):\n",
                  R.table_md(analysis.compare.pre.step_totals())]
    parts += ["## Average marginal effects (pp of error, 95% CI) beside the published values\n", R.table_md(ames),
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


def _methods(analysis: Analysis) -> list[str]:
    return methods_text(analysis.settings, analysis.published_way.pre.config.rule().describe(),
                        analysis.compare is not None)
