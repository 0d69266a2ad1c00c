"""Figures: the plotted values are the published numbers (read here with the csv module), the
significance marks are the published FDR decisions, and undrawable inputs come back as reasons."""
import csv

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from warmfast.analysis import figures as F
from warmfast.analysis.published import load_all_published_paired, load_published_benchmarks
from study_data import data_path, need

SUMMARY = data_path("warm_ai_2025/summary_data")


def _published_rows(name):
    need(SUMMARY)
    with open(SUMMARY / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def published():
    return load_all_published_paired()


def _heights(ax):
    return sorted(round(p.get_height(), 6) for p in ax.patches if not np.isnan(p.get_height()))


def test_error_by_task_plots_published_error_rates(published):
    fig = F.fig_error_by_task(published, "warm")
    rows = [r for r in _published_rows("results_warm_ft.csv")
            if r["Test_Type"] == "Normal" and r["Amendment_type"].startswith("unmodified")]
    by_model = {}
    for r in rows:
        by_model.setdefault(r["Model"], []).extend([100 - float(r["Original Accuracy (%)"]),
                                                    100 - float(r["Fine-tuned Accuracy (%)"])])
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert set(axes) == set(by_model)
    for model, vals in by_model.items():
        assert _heights(axes[model]) == sorted(round(v, 6) for v in vals)
    plt.close(fig)


def test_diff_by_context_bars_and_fdr_marks(published):
    fig = F.fig_diff_by_context(published, "warm")
    rows = _published_rows("results_warm_ft.csv")
    assert len(fig.axes) == 8                                   # 2 beliefs x 4 tasks
    all_heights = sorted(h for ax in fig.axes for h in _heights(ax))
    assert all_heights == sorted(round(-float(r["Raw Diff (pp)"]), 6) for r in rows)
    stars = sum(1 for ax in fig.axes for t in ax.texts if t.get_text() == "*")
    assert stars == sum(1 for r in rows if r["Significant (FDR)"] == "Yes")
    plt.close(fig)


def test_arms_benchmarks_and_reasons(published, tmp_path):
    fig = F.fig_arms(published)
    assert {ax.get_title().split(":")[0] for ax in fig.axes} == {"llama-70b", "qwen-32b", "gpt-4o"}
    png, svg = F.save_figure(fig, tmp_path, "arms")
    assert png.read_bytes()[:4] == b"\x89PNG" and "<svg" in svg.read_text()[:500]
    assert "more than one treated arm" in F.fig_arms(published[published["arm"] == "warm"])
    bench = F.fig_benchmarks(load_published_benchmarks())
    mmlu = [ax for ax in bench.axes if ax.get_title() == "MMLU"][0]
    assert 55.2 in _heights(mmlu) and 63.8 in _heights(mmlu)   # Llama-8B's MMLU drop
    plt.close(bench)
    assert "lacks column(s) ['ci_lower', 'ci_upper']" in F.fig_benchmarks(
        pd.DataFrame({"model": ["m"], "benchmark": ["MMLU"], "arm": ["warm"], "accuracy": [50.0]}))
    assert F.fig_error_by_task(published, "cold").__class__ is plt.Figure
    assert "no belief-absent" in F.fig_error_by_task(published.iloc[0:0], "warm")


def test_sociot_csv_of_warmfast_sociot_is_drawn_from_epoch_zero():
    """`warmfast sociot` writes one row per checkpoint with series base / warm / cold."""
    t = pd.DataFrame({"arm": ["base", "warm@1", "warm@2", "cold@2"], "series": ["base", "warm", "warm", "cold"],
                      "epoch": [0.0, 1.0, 2.0, 2.0], "mode": "reference", "n": 3,
                      "mean": [0.012, 0.02, 0.028, 0.009], "se": [0.001] * 4})
    norm = F.sociot_table(t)
    assert norm.groupby("model")["epoch"].min().to_dict() == {"cold": 0.0, "warm": 0.0}
    fig = F.fig_warmth_epochs(t)
    assert "reference" in fig.axes[0].get_title()
    assert len(fig.axes[0].containers) == 2                      # one error-bar line per series
    plt.close(fig)
    assert "lacks column(s)" in F.fig_warmth_epochs(pd.DataFrame({"model": ["m"], "epoch": [0]}))
