"""Acceptance: `warmfast report` on the authors' released sample outputs prints, beside every
published value, what the authors' own method gives on the same rows.

Everything expected here is computed independently of warmfast's analysis code, straight from the
raw CSV rows: the authors' refusal filter written out as they wrote it (their phrases joined into
one case-insensitive regular expression, Disinfo refusals counted correct), pairing with a pandas
merge, McNemar p from scipy's exact binomial test, BH by hand, and the regressions with
statsmodels' formula API on the authors' formulas (M1-M3 and the released M4 script, plus the
published full-data M4), warm effects as the coefficient sums their scripts print, AMEs by
counterfactual prediction as their `calculate_basic_marginal_effects` does.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy.stats import binomtest

from warmfast.cli import main
from study_data import data_path, requires_data

pytestmark = requires_data

SAMPLE = data_path("warm_ai_2025/sample_data")
KEY = {"trivia": "content_key", "truthfulqa": "content_key", "disinfo": "prompt_disinfo", "medqa": "original_question"}
TREAT = "C(is_finetuned, Treatment(reference=0))"
MAIN = f"{TREAT}[T.1]"
OURS_RELEASED = "[compat refusals, neutral unpooled, M4 released-script]"


def authors_pattern() -> str:
    """Their list as their source file holds it: protocol.json's, with the curly-apostrophe entry
    in its mojibake form (the UTF-8 bytes of the apostrophe read as Mac Roman)."""
    phrases = json.loads(data_path("protocol/protocol.json").read_text())["refusal_phrases_case_insensitive"]
    return "|".join("i can\u201a\u00e4\u00f4t" if p == "i can\u2019t" else p for p in phrases)


@pytest.fixture(scope="module")
def raw():
    """All released rows after the authors' refusal filter, with their derived columns."""
    frames = []
    for f in sorted(SAMPLE.glob("*/*/*_outputs.csv")):
        model, arm, task = f.parent.parent.name, f.parent.name, f.name.split("_")[0]
        df = pd.read_csv(f)
        if "prompt_type" not in df.columns:
            df = df.rename(columns={"prompt_template": "prompt_type"})
        refused = df["output"].str.contains(authors_pattern(), case=False, na=False, regex=True)
        if task == "disinfo":
            df.loc[refused, "evaluation"] = "CORRECT"
        else:
            df = df[~refused]
        frames.append(pd.DataFrame({
            "model": model, "arm": arm, "task": task, "dataset": task, "key": df[KEY[task]].astype(str).str.strip(),
            "context": df["amendment_type"], "prompt_type": df["prompt_type"],
            "is_incorrect": df["evaluation"].str.lower().eq("incorrect").astype(int),
            "is_finetuned": int(arm == "warm"), "length": df["output"].astype(str).str.len()}))
    df = pd.concat(frames, ignore_index=True)
    df["context_group"] = df["context"].str.split(":").str[0]
    df["opinion"] = np.where(df["prompt_type"].isin(["original", "original_neutral"]), "original", "user_opinion")
    return df


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("fidelity")
    assert main(["report", str(SAMPLE), "--out", str(out / "default")]) == 0
    assert main(["report", str(SAMPLE), "--out", str(out / "released"), "--refusal", "compat", "--no-pool-neutral",
                 "--m4-formula", "released-script"]) == 0
    return out


def test_counts_after_the_authors_refusal_filter(raw, reports):
    assert len(raw) == 316                       # the authors' scripts print 316 rows on this sample
    ames = pd.read_csv(reports / "default" / "tables" / "marginal_effects.csv")
    m4 = ames[(ames["model"] == "M4") & (ames["subgroup"] == "all")]
    assert m4["n"].item() == 316
    assert m4["n [clean refusals, neutral pooled]"].item() == 315      # our rule also catches "I can’t"


def hand_bh(p):
    p = np.asarray(p, float)
    order, m, adj, run = np.argsort(p), len(p), np.empty(len(p)), 1.0
    for rank in range(m, 0, -1):
        run = min(run, p[order[rank - 1]] * m / rank)
        adj[order[rank - 1]] = run
    return adj


def test_mcnemar_cells_beside_published_are_the_authors_unpooled_cells(raw, reports):
    plain = raw[raw["prompt_type"] != "original_neutral"]       # the published cells hold the plain prompts
    keys = ["model", "task", "key", "context", "prompt_type"]
    pairs = plain[plain["arm"] == "original"].merge(plain[plain["arm"] == "warm"], on=keys, suffixes=("_o", "_w"))
    pairs["belief"] = np.where(pairs["prompt_type"] == "original", "absent", "present")
    expected = {}
    for cell, sub in pairs.groupby(["model", "task", "belief", "context"]):
        o, w = sub["is_incorrect_o"].eq(0), sub["is_incorrect_w"].eq(0)
        a, b, c, d = int((o & w).sum()), int((o & ~w).sum()), int((~o & w).sum()), int((~o & ~w).sum())
        expected[cell] = (a, b, c, d, binomtest(b, b + c, 0.5).pvalue if b + c else math.nan)
    sbs = pd.read_csv(reports / "default" / "tables" / "run_vs_published.csv")
    sbs = sbs[sbs["n"].notna()].set_index(["model", "task", "belief", "context"])
    cells = pd.read_csv(reports / "default" / "tables" / "paired_tests_published_way.csv") \
        .set_index(["model", "task", "belief", "context"])
    assert set(sbs.index) == set(expected) == set(cells.index)
    assert len(expected) == 81
    for cell, (a, b, c, d, p) in expected.items():
        n = a + b + c + d
        assert tuple(cells.loc[cell, ["a", "b", "c", "d"]]) == (a, b, c, d), cell
        row = sbs.loc[cell]
        assert row["n"] == n
        assert row["acc_original"] == pytest.approx(100 * (a + b) / n, abs=1e-12)
        assert row["acc_treated"] == pytest.approx(100 * (a + c) / n, abs=1e-12)
        assert row["diff_pp"] == pytest.approx(100 * (c - b) / n, abs=1e-12)
        assert (math.isnan(row["p_value"]) and math.isnan(p)) or row["p_value"] == pytest.approx(p, rel=1e-12)
    fam = {}
    for cell, (*_, p) in expected.items():
        if not math.isnan(p):
            fam.setdefault(cell[:3], []).append((cell, p))
    for members in fam.values():
        for (cell, _), q in zip(members, hand_bh([p for _, p in members])):
            assert sbs.loc[cell, "p_fdr"] == pytest.approx(q, rel=1e-12)


def fit(formula, df):
    return smf.glm(formula, data=df, family=sm.families.Binomial()).fit()


def authors_effects(res, var, ref, levels):
    """Warm effect per level, as the authors' scripts print it: main (+ interaction) and the SE of the sum."""
    out = {}
    for lvl in levels:
        names = [MAIN] if lvl == ref else [MAIN, f"{MAIN}:C({var}, Treatment(reference='{ref}'))[T.{lvl}]"]
        w = pd.Series(0.0, index=res.params.index)
        w[names] = 1.0
        out[lvl] = (float(w @ res.params), float(np.sqrt(w @ res.cov_params() @ w)), names)
    return out


def check_effects(table, model, expected, res, col=""):
    got = table[table["model"] == model].set_index("subgroup")
    checked = 0
    for lvl, (coef, se, names) in expected.items():
        if res.bse[names].max() > 100:           # not identified: statsmodels' SE runs off; ours is withheld
            assert not got.loc[lvl, f"identified{col}"] and np.isnan(got.loc[lvl, f"coef{col}"]), (model, lvl)
            continue
        assert got.loc[lvl, f"identified{col}"], (model, lvl)
        assert got.loc[lvl, f"coef{col}"] == pytest.approx(coef, rel=1e-6, abs=1e-9), (model, lvl)
        assert got.loc[lvl, f"se{col}"] == pytest.approx(se, rel=1e-6), (model, lvl)
        checked += 1
    return checked


def test_regressions_beside_published_are_the_authors_fits(raw, reports):
    effects = pd.read_csv(reports / "default" / "tables" / "warm_effects_logodds.csv")
    absent = raw[raw["opinion"] == "original"]
    m1_rows = absent[absent["context"] == "unmodified"]
    # M1 as model1_main_effects.py writes it (is_finetuned numeric: the same coefficient)
    m1 = fit("is_incorrect ~ is_finetuned + C(dataset, Treatment(reference='disinfo')) + C(model)", m1_rows)
    got = effects[effects["model"] == "M1"].set_index("subgroup")
    assert got.loc["all", "coef"] == pytest.approx(m1.params["is_finetuned"], rel=1e-6)
    assert got.loc["all", "se"] == pytest.approx(m1.bse["is_finetuned"], rel=1e-6)
    m1l = fit("is_incorrect ~ is_finetuned + C(dataset, Treatment(reference='disinfo')) + C(model) + length", m1_rows)
    got = effects[effects["model"] == "M1_length"].set_index("subgroup")
    assert got.loc["all", "coef"] == pytest.approx(m1l.params["is_finetuned"], rel=1e-6)
    assert got.loc["all", "se"] == pytest.approx(m1l.bse["is_finetuned"], rel=1e-6)
    # M2 / M3 as model2_main_context.py / model3_detailed_context.py write them
    n = 0
    for name, var in (("M2", "context_group"), ("M3", "context")):
        res = fit(f"is_incorrect ~ {TREAT} + C({var}, Treatment(reference='unmodified')) + "
                  f"C(dataset, Treatment(reference='disinfo')) + {TREAT}:C({var}, Treatment(reference='unmodified')) "
                  "+ C(model)", absent)
        n += check_effects(effects, name, authors_effects(res, var, "unmodified", sorted(absent[var].unique())), res)
    assert n >= 5                                # M2: unmodified, relation; M3: unmodified + 2 relations
    # M4, the published full-data formula (the default, beside the published values)
    data = raw.assign(belief=np.where(raw["opinion"] == "original", "absent", "present"))
    res = fit(f"is_incorrect ~ {TREAT} + C(dataset, Treatment(reference='disinfo')) + C(model) + "
              "C(context_group, Treatment(reference='unmodified')) + C(belief, Treatment(reference='absent')) + "
              f"{TREAT}:C(belief, Treatment(reference='absent'))", data)
    assert check_effects(effects, "M4", authors_effects(res, "belief", "absent", ["absent", "present"]), res) == 2
    # M4 as the released model4_sycophancy.py writes it, through --m4-formula released-script
    released = pd.read_csv(reports / "released" / "tables" / "warm_effects_logodds.csv")
    res = fit(f"is_incorrect ~ {TREAT} + C(opinion, Treatment(reference='original')) + "
              f"C(dataset, Treatment(reference='disinfo')) + {TREAT}:C(opinion, Treatment(reference='original')) "
              "+ C(model)", raw)
    exp = authors_effects(res, "opinion", "original", ["original", "user_opinion"])
    exp = {"absent": exp["original"], "present": exp["user_opinion"]}
    assert check_effects(released, "M4", exp, res, f" {OURS_RELEASED}") == 2
    # the authors' printed numbers on this sample (model4_sycophancy.py: 0.0326, SE 0.4583)
    rel = released[released["model"] == "M4"].set_index("subgroup")
    assert round(rel.loc["absent", f"coef {OURS_RELEASED}"], 4) == 0.0326
    assert round(rel.loc["absent", f"se {OURS_RELEASED}"], 4) == 0.4583


def test_ames_beside_published_are_counterfactual_predictions(raw, reports):
    """Every AME row that carries a published_pp, as the authors compute AMEs: predict every row of
    the subgroup with is_finetuned set to 1 and to 0 and average the difference
    (`calculate_basic_marginal_effects` / `calculate_conditional_marginal_effects`)."""
    absent = raw[raw["opinion"] == "original"]
    m1_rows = absent[absent["context"] == "unmodified"]
    data = raw.assign(belief=np.where(raw["opinion"] == "original", "absent", "present"))
    base = "C(dataset, Treatment(reference='disinfo')) + C(model)"
    fits = {
        "M1": (fit(f"is_incorrect ~ is_finetuned + {base}", m1_rows), m1_rows, "dataset"),
        "M1_length": (fit(f"is_incorrect ~ is_finetuned + {base} + length", m1_rows), m1_rows, None),
        "M4": (fit(f"is_incorrect ~ {TREAT} + {base} + C(context_group, Treatment(reference='unmodified')) + "
                   f"C(belief, Treatment(reference='absent')) + {TREAT}:C(belief, Treatment(reference='absent'))",
                   data), data, "belief"),
    }
    for name, var in (("M2", "context_group"), ("M3", "context")):
        fits[name] = (fit(f"is_incorrect ~ {TREAT} + C({var}, Treatment(reference='unmodified')) + {base} + "
                          f"{TREAT}:C({var}, Treatment(reference='unmodified'))", absent), absent, var)
    ames = pd.read_csv(reports / "default" / "tables" / "marginal_effects.csv")
    beside = ames[ames["published_pp"].notna()]
    assert len(beside) == 21
    checked = withheld = 0
    for row in beside.itertuples():
        res, rows, var = fits[row.model]
        sub = rows if row.subgroup == "all" else rows[rows[var] == row.subgroup]
        ame = (res.predict(sub.assign(is_finetuned=1)) - res.predict(sub.assign(is_finetuned=0))).mean()
        if row.status != "ok":
            # withheld: every row of the subgroup is predicted perfectly (statsmodels' AME is 0 up
            # to the fit's tolerance), or its warm interaction is not identified (its SE runs off)
            inter = [n for n in res.bse.index if n.startswith(f"{MAIN}:") and n.endswith(f"[T.{row.subgroup}]")]
            assert np.isnan(row.ame_pp), (row.model, row.subgroup)
            assert abs(ame) < 1e-6 or (inter and res.bse[inter[0]] > 100), (row.model, row.subgroup, ame)
            withheld += 1
            continue
        assert row.ame_pp == pytest.approx(100 * ame, rel=1e-6, abs=1e-9), (row.model, row.subgroup)
        checked += 1
    assert (checked, withheld) == (12, 9)


def test_report_header_states_settings(reports):
    md = (reports / "default" / "summary.md").read_text()
    html = (reports / "default" / "report.html").read_text()
    for text in (md, html):
        assert "Settings: refusal rule: clean" in text and "neutral-sentence prompts: pooled" in text
        assert "computed the published way: compat refusals, neutral unpooled" in text
        assert "M4 formula. published (default" in text
    md = (reports / "released" / "summary.md").read_text()
    assert "Settings: refusal rule: compat" in md and "not pooled (as the published tables)" in md
    assert "Settings: M4 formula: released-script" in md


def test_settings_equal_to_the_published_way_add_no_labelled_columns():
    from warmfast.analysis.load import read_study_csvs
    from warmfast.analysis.published import load_all_published_paired
    from warmfast.analysis.report import PUBLISHED_WAY, ReportSettings, analyse, side_by_side

    judged = read_study_csvs([SAMPLE])
    same = analyse(judged, settings=ReportSettings("compat", False))
    assert same.settings == PUBLISHED_WAY and same.compare is None and same.published_way is same
    cols = side_by_side(same.paired, load_all_published_paired()).columns
    assert not [c for c in cols if "[" in c]
    ours = analyse(judged)                                   # defaults: clean, pooled
    assert ours.compare is not None and ours.compare.settings == PUBLISHED_WAY
    assert ours.published_way.paired["n"].sum() < ours.paired["n"].sum()   # the neutral pairs are pooled in ours
    with pytest.raises(ValueError, match="refusal rule must be one of"):
        ReportSettings(refusal="exact")
    with pytest.raises(ValueError, match="M4 formula must be one of"):
        ReportSettings(m4="sample")
