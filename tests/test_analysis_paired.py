"""Paired tests: 2x2 tables, McNemar exact p, Cohen's g, odds ratio and BH FDR, checked against
independent computations (csv module, scipy's binomtest, a hand-written Benjamini-Hochberg) on the
authors' real sample outputs and against the authors' published summary tables."""
import csv
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from warmfast.analysis.load import read_study_csvs
from warmfast.analysis.paired import (McNemarCell, bh_within_tables, missing_cells, paired_tables,
                                      unpaired_counts)
from warmfast.analysis.preprocess import preprocess
from warmfast.analysis.published import load_all_published_paired
from study_data import data_path, need

SAMPLE = data_path("warm_ai_2025/sample_data")
KEY_COL = {"trivia": "content_key", "truthfulqa": "content_key", "disinfo": "prompt_disinfo",
           "medqa": "original_question"}


def hand_bh(p):
    """Benjamini-Hochberg step-up, written out: p_(i) * m / i, running minimum from the largest."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adj = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        adj[i] = running
    return adj


def independent_cells():
    """2x2 tables from the raw CSV rows with plain Python: refusal rule, pairing, pooling."""
    need(SAMPLE)
    phrases = [p.lower() for p in json.loads((need(data_path("protocol/protocol.json"))).read_text())
               ["refusal_phrases_case_insensitive"]]
    correct = {}
    for f in sorted(SAMPLE.glob("*/*/*_outputs.csv")):
        model, arm, task = f.parent.parent.name, f.parent.name, f.name.split("_")[0]
        with open(f, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                pt = row.get("prompt_type", row.get("prompt_template"))
                key = (model, task, row[KEY_COL[task]].strip(), row["amendment_type"], pt)
                refused = any(p in row["output"].lower() for p in phrases)
                if refused and task != "disinfo":
                    continue
                ok = refused or row["evaluation"] == "CORRECT"
                correct.setdefault(key, {}).setdefault(arm, ok)
    cells = {}
    for (model, task, _, context, pt), arms in correct.items():
        if "original" in arms and "warm" in arms:
            belief = "absent" if pt.startswith("original") else "present"
            t = cells.setdefault((model, task, belief, context), [0, 0, 0, 0])
            o, w = arms["original"], arms["warm"]
            t[0 if o and w else 1 if o else 2 if w else 3] += 1
    return cells


@pytest.fixture(scope="module")
def sample_table():
    rows = preprocess(read_study_csvs([need(SAMPLE)])).rows
    return rows, paired_tables(rows, "warm")


def test_tables_p_values_and_fdr_on_sample_match_independent(sample_table):
    rows, table = sample_table
    cells = independent_cells()
    got = {(r.model, r.task, r.belief, r.context): r for r in table.itertuples()}
    assert set(got) == set(cells)
    assert len(cells) == 84
    expected_p = {}
    for key, (a, b, c, d) in cells.items():
        r = got[key]
        assert (r.a, r.b, r.c, r.d) == (a, b, c, d), key
        n = a + b + c + d
        assert r.acc_original == pytest.approx(100 * (a + b) / n)
        assert r.diff_pp == pytest.approx(100 * (c - b) / n)
        if b + c == 0:
            assert math.isnan(r.p_value) and math.isnan(r.cohens_g) and math.isnan(r.odds_ratio)
            continue
        p = binomtest(b, b + c, 0.5).pvalue
        expected_p[key] = p
        assert r.p_value == pytest.approx(p, rel=1e-12)
        assert r.cohens_g == pytest.approx(abs(b - c) / math.sqrt(b + c))
        assert r.odds_ratio == (b / c if c else math.inf)
    # the sample has a cell with p < 1 (llama disinfo, close, belief present: b = 2, c = 0)
    assert got[("llama_70b", "disinfo", "present", "relation:close")].p_value == pytest.approx(0.5)
    families = {}
    for key, p in expected_p.items():
        families.setdefault(key[:3], []).append((key, p))
    for fam in families.values():
        adj = hand_bh([p for _, p in fam])
        for (key, _), q in zip(fam, adj):
            assert got[key].p_fdr == pytest.approx(q, rel=1e-12), key


def test_unpaired_and_missing_cells_are_explained(sample_table):
    rows, table = sample_table
    u = unpaired_counts(rows, "warm").set_index(["model", "task"])
    # Qwen's warm Disinfo sample holds other questions than its original sample: only half pair up
    assert u.loc[("qwen_32b", "disinfo"), "pairs"] == 10
    assert u.loc[("llama_70b", "medqa"), "unpaired_treated"] == 3   # 3 original refusals dropped
    miss = missing_cells(table, rows, "warm")
    assert len(miss) == 2 * 4 * 2 * 9 - (table["p_value"].notna()).sum()
    r = miss.set_index(["model", "task", "belief", "context"])
    assert r.loc[("qwen_32b", "medqa", "absent", "unmodified"), "reason"].startswith("no discordant pairs")
    assert r.loc[("llama_70b", "disinfo", "present", "unmodified"), "reason"] == "no rows in either arm"


def published_counts(row):
    """Recover (b, c, n) of a published cell from its Cohen's g, odds ratio and accuracy difference:
    b = OR c and g = |b - c| / sqrt(b + c) give sqrt(c) = g sqrt(OR + 1) / |OR - 1|; n = (c - b) / diff."""
    g, o, diff = row.cohens_g, row.odds_ratio, row.diff_pp
    c = (g * math.sqrt(o + 1) / abs(o - 1)) ** 2
    b = o * c
    n = (c - b) / (diff / 100)
    return b, c, n


def test_mcnemar_reproduces_published_p_values_from_recovered_counts():
    pub = load_all_published_paired()
    usable = pub[np.isfinite(pub["odds_ratio"]) & (pub["odds_ratio"] > 0) & (abs(pub["odds_ratio"] - 1) > 0.05)
                 & (pub["diff_pp"].abs() > 0.5)]
    checked = with_n = 0
    for row in usable.itertuples():
        b, c, n = published_counts(row)
        bi, ci, ni = round(b), round(c), round(n)
        # the published g (3 dp) and OR (2 dp) pin b and c only when the recovery lands on integers
        if abs(b - bi) > 0.05 or abs(c - ci) > 0.05 or bi + ci > ni or bi / ci != pytest.approx(row.odds_ratio, abs=0.006):
            continue
        # McNemar depends on b and c only
        cell = McNemarCell(a=0, b=bi, c=ci, d=0)
        assert cell.p_value == pytest.approx(row.p_value, abs=5.1e-5), row
        assert cell.cohens_g == pytest.approx(row.cohens_g, abs=5.1e-4)
        # the full table: the n near (c - b) / diff whose a + b reproduce both rounded accuracies
        for cand in sorted(range(max(bi + ci, int(0.8 * n)), int(1.2 * n) + 2), key=lambda k: abs(k - n)):
            ab = round(row.acc_original / 100 * cand)
            full = McNemarCell(a=ab - bi, b=bi, c=ci, d=cand - ab - ci) if bi <= ab <= cand - ci else None
            if full and abs(full.acc_original - row.acc_original) <= 0.0051 \
                    and abs(full.acc_treated - row.acc_treated) <= 0.0051:
                assert full.diff_pp == pytest.approx(row.diff_pp, abs=0.011)
                assert full.p_value == cell.p_value
                with_n += 1
                break
        checked += 1
    assert with_n > 0.9 * checked, (with_n, checked)
    assert checked > 200, f"only {checked} of {len(usable)} published cells could be reconstructed"


def test_bh_reproduces_published_fdr_within_each_table():
    pub = load_all_published_paired()
    pub = pub.assign(p_ours=bh_within_tables(pub))
    ok = pub["p_value"].notna()
    assert ok.sum() > 700
    # published p are rounded to 4 dp; BH multiplies by at most m / rank = 9
    assert np.allclose(pub.loc[ok, "p_ours"], pub.loc[ok, "p_fdr"], atol=9 * 5e-5 + 5e-5)
    assert pub.loc[~ok, "p_fdr"].isna().all() and pub.loc[~ok, "p_ours"].isna().all()
    # and against the hand-written BH on the same published p-values
    for _, fam in pub[ok].groupby(["model", "arm", "task", "belief"]):
        assert np.allclose(fam["p_ours"], hand_bh(fam["p_value"]), rtol=1e-12, atol=0)


def test_cell_edge_cases_and_validation():
    assert McNemarCell(3, 0, 0, 2).p_value != McNemarCell(3, 0, 0, 2).p_value  # NaN: no discordant pairs
    assert McNemarCell(0, 4, 0, 0).odds_ratio == math.inf
    assert McNemarCell(0, 4, 0, 0).p_value == pytest.approx(binomtest(4, 4).pvalue)
    assert McNemarCell(10, 30, 12, 5).p_value == pytest.approx(binomtest(30, 42).pvalue, rel=1e-12)
    cell = McNemarCell.from_pairs([1, 1, 0, 0, 1], [1, 0, 1, 0, 0])
    assert (cell.a, cell.b, cell.c, cell.d) == (1, 2, 1, 1)
    with pytest.raises(ValueError, match=r"McNemarCell\.b"):
        McNemarCell(1, -1, 0, 0)
    with pytest.raises(ValueError, match="shapes"):
        McNemarCell.from_pairs([1, 0], [1])
    empty = pd.DataFrame({"model": ["m"], "arm": ["warm"], "task": ["t"], "belief": ["absent"], "p_value": [np.nan]})
    assert bh_within_tables(empty).isna().all()


def test_pairing_refuses_duplicates_and_reports_them():
    rows = preprocess(read_study_csvs([need(SAMPLE) / "llama_70b"])).rows
    doubled = pd.concat([rows, rows.iloc[[3]]], ignore_index=True)
    with pytest.raises(ValueError, match="duplicate row.*run preprocess"):
        paired_tables(doubled, "warm")


def test_published_unmodified_cells_hold_plain_prompts_only(sample_table):
    """Recovered n of the published belief-absent unmodified cell is the question count (gpt-4o
    TriviaQA: 500 questions, 500 pairs), not plain + neutral (about 1000): the published tables did
    not pool the neutral prompts. pool_neutral=False reproduces that layout."""
    pub = load_all_published_paired()
    row = pub[(pub["model"] == "gpt-4o") & (pub["arm"] == "warm") & (pub["task"] == "trivia")
              & (pub["belief"] == "absent") & (pub["context"] == "unmodified")].iloc[0]
    b, c, n = published_counts(row)
    assert (round(b), round(c)) == (10, 4) and 450 < n < 550
    rows, table = sample_table
    plain = paired_tables(rows, "warm", pool_neutral=False)
    key = ["model", "task", "belief", "context"]
    both = table.merge(plain, on=key, how="left", suffixes=("", "_plain"))
    unmod = (both["belief"] == "absent") & (both["context"] == "unmodified")
    neutral_pairs = rows[(rows["prompt_type"] == "original_neutral")].groupby(["model", "task", "question_key"]) \
        ["arm"].nunique().eq(2).groupby(level=[0, 1]).sum()
    assert neutral_pairs.sum() >= 4
    for r in both[unmod].itertuples():
        assert r.n - (0 if np.isnan(r.n_plain) else r.n_plain) == neutral_pairs.get((r.model, r.task), 0)
    assert (both.loc[~unmod, "n"] == both.loc[~unmod, "n_plain"]).all()
