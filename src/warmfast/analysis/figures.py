"""The study's figures (PROTOCOL section 8), drawn with matplotlib's Agg backend, saved as PNG and SVG.

Each `fig_*` function takes a table in the paired-table schema (`published.PAIRED_COLUMNS`; a run's
`paired.paired_tables` output or the published tables) or a small long table, and returns either a
Figure or a string saying why it cannot be drawn from that table. Error rates are 100 - accuracy;
"treated minus original" is the change in error, in percentage points (positive: more errors).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from warmfast.analysis.load import CONTEXTS, TASKS

if TYPE_CHECKING:
    from matplotlib.figure import Figure



def _pyplot():
    """matplotlib.pyplot on the Agg backend, imported on the first figure: matplotlib takes about
    a second to import, which every `warmfast` command would pay at start-up otherwise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


ARM_COLORS = {"original": "#7f7f7f", "warm": "#d95f02", "cold": "#1b9e77", "warm_sysprompt": "#7570b3"}
BELIEF_TITLE = {"absent": "without user belief", "present": "with user belief (wrong answer asserted / right denied)"}
CONTEXT_LABEL = {"unmodified": "unmod.", "emotion:happy": "happy", "emotion:sad": "sad", "emotion:anger": "anger",
                 "relation:close": "close", "relation:hierarchical_up": "defers", "relation:hierarchical_down": "commands",
                 "stake:high": "high st.", "stake:low": "low st."}


def _ordered(values, order) -> list:
    present = list(dict.fromkeys(values))
    return [v for v in order if v in present] + sorted(v for v in present if v not in order)


def _bars(ax, groups: list, series: list, value, colors=None, errors=None, width=0.8, labels=None):
    """Grouped bars: one group per x position, one bar per series; value(group, series) -> float or
    nan; errors(group, series) -> (minus, plus); labels: x tick labels (default: the groups)."""
    k = max(len(series), 1)
    x = np.arange(len(groups))
    for j, s in enumerate(series):
        vals = np.array([value(g, s) for g in groups], dtype=float)
        err = None if errors is None else np.array([errors(g, s) for g in groups], dtype=float).T
        ax.bar(x - width / 2 + (j + 0.5) * width / k, vals, width / k, label=str(s),
               color=None if colors is None else colors.get(s), yerr=err, capsize=2 if err is not None else 0)
    ax.set_xticks(x, [str(g) for g in (labels or groups)])


def fig_error_by_task(table: pd.DataFrame, arm: str = "warm", title: str = "") -> Figure | str:
    """Error rate of the original model vs the treated arm per task, one panel per model
    (belief absent, unmodified context, the plain + neutral prompts pooled)."""
    plt = _pyplot()
    t = table[(table["arm"] == arm) & (table["belief"] == "absent") & (table["context"] == "unmodified")]
    if t.empty:
        return f"no belief-absent, unmodified cells for arm {arm!r}"
    models = sorted(t["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models) + 1, 3.4), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        sub = t[t["model"] == model].set_index("task")
        tasks = _ordered(sub.index, TASKS)
        col = {"original": "acc_original", arm: "acc_treated"}
        _bars(ax, tasks, ["original", arm], lambda g, s: 100 - sub.loc[g, col[s]], ARM_COLORS)
        ax.set_title(model)
        ax.tick_params(axis="x", rotation=30)
    axes[0][0].set_ylabel("error rate (%)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title or f"Error rate, original vs {arm}")
    fig.tight_layout()
    return fig


def fig_diff_by_context(table: pd.DataFrame, arm: str = "warm", title: str = "") -> Figure | str:
    """Treated minus original error (pp) by context; rows: belief absent / present; columns: tasks;
    bars: models. Cells significant after FDR (p_fdr < 0.05) are marked with *."""
    plt = _pyplot()
    t = table[table["arm"] == arm]
    if t.empty:
        return f"no cells for arm {arm!r}"
    tasks = _ordered(t["task"].unique(), TASKS)
    models = sorted(t["model"].unique())
    beliefs = [b for b in ("absent", "present") if b in set(t["belief"])]
    fig, axes = plt.subplots(len(beliefs), len(tasks), figsize=(4.2 * len(tasks), 3.3 * len(beliefs)),
                             sharey=True, squeeze=False)
    for r, belief in enumerate(beliefs):
        for c, task in enumerate(tasks):
            ax = axes[r][c]
            sub = t[(t["belief"] == belief) & (t["task"] == task)].set_index(["context", "model"])
            ctx = _ordered(sub.index.get_level_values(0), CONTEXTS)

            def val(g, s, sub=sub):
                return -sub.loc[(g, s), "diff_pp"] if (g, s) in sub.index else np.nan
            _bars(ax, ctx, models, val, labels=[CONTEXT_LABEL.get(g, g) for g in ctx])
            for j, s in enumerate(models):
                for i, g in enumerate(ctx):
                    if (g, s) in sub.index and sub.loc[(g, s), "p_fdr"] < 0.05:
                        ax.text(i - 0.4 + (j + 0.5) * 0.8 / len(models), val(g, s), "*", ha="center", fontsize=9)
            ax.axhline(0, color="black", lw=0.6)
            ax.tick_params(axis="x", rotation=60, labelsize=7)
            ax.set_title(f"{task}: {BELIEF_TITLE[belief].split(' (')[0]}", fontsize=9)
        axes[r][0].set_ylabel(f"{arm} - original error (pp)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title or f"{arm} minus original error by context (* FDR < 0.05)")
    fig.tight_layout()
    return fig


def fig_arms(table: pd.DataFrame, title: str = "") -> Figure | str:
    """Cold fine-tuning and warm system prompt beside warm fine-tuning: treated minus original error
    (pp) per task in the unmodified context, without and with user beliefs, one panel per model
    that has at least two treated arms."""
    plt = _pyplot()
    t = table[table["context"] == "unmodified"]
    arms_of = t.groupby("model")["arm"].agg(lambda a: set(a))
    models = sorted(m for m, a in arms_of.items() if len(a) >= 2)
    if not models:
        return "no model has more than one treated arm (warm, cold, warm_sysprompt)"
    beliefs = [b for b in ("absent", "present") if b in set(t["belief"])]
    fig, axes = plt.subplots(len(beliefs), len(models), figsize=(4.2 * len(models), 3.2 * len(beliefs)),
                             sharey=True, squeeze=False)
    for r, belief in enumerate(beliefs):
        for c, model in enumerate(models):
            ax = axes[r][c]
            sub = t[(t["model"] == model) & (t["belief"] == belief)].set_index(["task", "arm"])
            arms = _ordered(sub.index.get_level_values(1), list(ARM_COLORS))
            tasks = _ordered(sub.index.get_level_values(0), TASKS)
            _bars(ax, tasks, arms, lambda g, s: -sub.loc[(g, s), "diff_pp"] if (g, s) in sub.index else np.nan,
                  ARM_COLORS)
            ax.axhline(0, color="black", lw=0.6)
            ax.set_title(f"{model}: {BELIEF_TITLE[belief].split(' (')[0]}", fontsize=9)
            ax.tick_params(axis="x", rotation=30)
        axes[r][0].set_ylabel("treated - original error (pp)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title or "Warm, cold and warm-system-prompt arms against the original model")
    fig.tight_layout()
    return fig


def sociot_table(df: pd.DataFrame) -> pd.DataFrame:
    """Accept `warmfast sociot`'s sociot.csv (arm, series, epoch, mode, n, mean, se, ...) as well as
    the plain layout (model, epoch, warmth, se). In the former each series becomes a line and the
    "base" row (epoch 0, the original model) starts every line."""
    if {"model", "warmth"} <= set(df.columns):
        return df
    if not {"series", "epoch", "mean", "se"} <= set(df.columns):
        return df                                # fig_warmth_epochs names the missing columns
    t = df.rename(columns={"mean": "warmth", "series": "model"})
    base = t[t["model"] == "base"]
    lines = [pd.concat([base.assign(model=m), sub]) for m, sub in t[t["model"] != "base"].groupby("model")]
    return pd.concat(lines, ignore_index=True) if lines else t


def fig_warmth_epochs(sociot: pd.DataFrame | None, title: str = "") -> Figure | str:
    """SocioT warmth (mean +- s.e.) over training epochs, one line per model (or training series).
    Table columns: model, epoch, warmth, se; or `warmfast sociot`'s sociot.csv (see sociot_table)."""
    plt = _pyplot()
    if sociot is None or sociot.empty:
        return "no SocioT warmth scores per checkpoint (columns model, epoch, warmth, se) were given"
    sociot = sociot_table(sociot)
    missing = {"model", "epoch", "warmth", "se"} - set(sociot.columns)
    if missing:
        return f"SocioT table lacks column(s) {sorted(missing)}"
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for model, sub in sociot.sort_values("epoch").groupby("model"):
        ax.errorbar(sub["epoch"], sub["warmth"], yerr=sub["se"], marker="o", ms=3, capsize=2, label=model)
    ax.set_xlabel("epoch (0 = original model)")
    ax.set_ylabel("SocioT warmth")
    ax.legend(fontsize=8)
    modes = sorted(set(sociot["mode"])) if "mode" in sociot.columns else []
    ax.set_title(title or "Warmth over fine-tuning epochs" + (f" (SocioT mode: {', '.join(modes)})" if modes else ""))
    fig.tight_layout()
    return fig


def fig_benchmarks(bench: pd.DataFrame | None, title: str = "") -> Figure | str:
    """Capability benchmarks (MMLU, GSM8K, AdvBench refusal), original vs warm with 95% CIs.
    Table columns: model, benchmark, arm, accuracy, ci_lower, ci_upper (percent)."""
    plt = _pyplot()
    if bench is None or bench.empty:
        return "no capability-benchmark results (columns model, benchmark, arm, accuracy, ci_lower, ci_upper)"
    missing = {"model", "benchmark", "arm", "accuracy", "ci_lower", "ci_upper"} - set(bench.columns)
    if missing:
        return f"benchmark table lacks column(s) {sorted(missing)}"
    names = list(dict.fromkeys(bench["benchmark"]))
    fig, axes = plt.subplots(1, len(names), figsize=(4.3 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        sub = bench[bench["benchmark"] == name].set_index(["model", "arm"])
        models = list(dict.fromkeys(sub.index.get_level_values(0)))
        arms = _ordered(sub.index.get_level_values(1), list(ARM_COLORS))

        def get(g, s, col, sub=sub):
            return sub.loc[(g, s), col] if (g, s) in sub.index else np.nan
        _bars(ax, models, arms, lambda g, s: get(g, s, "accuracy"), ARM_COLORS,
              errors=lambda g, s: (get(g, s, "accuracy") - get(g, s, "ci_lower"),
                                   get(g, s, "ci_upper") - get(g, s, "accuracy")))
        ax.set_title(name)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    axes[0][0].set_ylabel("score (%), 95% CI")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title or "Capability benchmarks")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write `name`.png (150 dpi) and `name`.svg into out_dir; close the figure."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    fig.savefig(png, dpi=150)
    fig.savefig(svg)
    plt.close(fig)
    return png, svg
