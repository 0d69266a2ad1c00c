"""Regressions M1-M4, separation detection and average marginal effects, on the authors' real
sample outputs, checked against a hand-written logistic fit (Newton-Raphson on a design built by
hand), finite-difference delta-method gradients, and a plain reading of the data.

What the released sample can and cannot reproduce of PROTOCOL section 6: the sample holds 20 rows
per (model, arm, task) for 2 of the 5 models (315 rows after preprocessing, against 439,792 in the
study), so none of the headline values (M1 +7.43 pp, coefficient 0.4266, ...) can be reproduced
from it. On the sample M1, M1_length, M2 and M3 are separated in nuisance terms (every unmodified
Disinfo answer is correct in both arms, so the Disinfo reference level runs off); their warm terms
are identified and reported, the separated coefficients withheld (test below, and
test_report_fidelity.py against statsmodels on the authors' rows); M4 is estimable and is checked
number for number against the independent fit. Nor can M1 be rebuilt
from the published cell tables: their belief-absent unmodified cells hold the plain prompts only
(n about 500 per model and task, see test_analysis_paired), while M1 used 32,145 rows with the
neutral prompts, and the rows lost to pairing are unknown. The published headline
values ship with warmfast and are checked against PROTOCOL.md's text so a report shows them right.
"""
import math
import re

import numpy as np
import pandas as pd
import pytest

from warmfast.analysis.load import read_study_csvs
from warmfast.analysis.preprocess import preprocess
from warmfast.analysis.published import load_headline
from warmfast.analysis.regress import fit_regression, marginal_effects
from warmfast.analysis.separation import check_separation
from study_data import data_path, need

SAMPLE = data_path("warm_ai_2025/sample_data")


@pytest.fixture(scope="module")
def rows():
    need(SAMPLE)
    return preprocess(read_study_csvs([SAMPLE])).rows


def hand_design(df: pd.DataFrame):
    """M4's design written out by hand, columns in the order the formula produces them."""
    ft = (df["arm"] == "warm").to_numpy(float)
    present = (df["belief"] == "present").to_numpy(float)
    cols = [np.ones(len(df)), ft]
    cols += [(df["task"] == t).to_numpy(float) for t in ("medqa", "trivia", "truthfulqa")]
    cols += [(df["model"] == "qwen_32b").to_numpy(float)]
    cols += [(df["context_group"] == g).to_numpy(float) for g in ("emotion", "relation", "stake")]
    cols += [present, ft * present]
    return np.column_stack(cols)


def newton_logit(X, y, iters=50):
    beta = np.zeros(X.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-X @ beta))
        W = p * (1 - p)
        step = np.linalg.solve(X.T @ (W[:, None] * X), X.T @ (y - p))
        beta += step
        if np.abs(step).max() < 1e-12:
            break
    p = 1 / (1 + np.exp(-X @ beta))
    cov = np.linalg.inv(X.T @ ((p * (1 - p))[:, None] * X))
    return beta, cov


def test_m4_coefficients_and_ames_match_hand_fit(rows):
    res = fit_regression("M4", rows, "warm")
    assert res.status == "ok", res.message
    assert res.n_obs == len(rows) == 315
    X = hand_design(rows)
    y = rows["is_incorrect"].to_numpy(float)
    beta, cov = newton_logit(X, y)
    assert np.allclose(res.coefficients["coef"], beta, atol=1e-7)
    assert np.allclose(res.coefficients["se"], np.sqrt(np.diag(cov)), rtol=1e-6)

    def ame(b, mask):
        X1, X0 = X[mask].copy(), X[mask].copy()
        X1[:, 1], X0[:, 1] = 1, 0
        X1[:, -1], X0[:, -1] = X1[:, -2], 0          # interaction ft x present follows ft
        return np.mean(1 / (1 + np.exp(-X1 @ b)) - 1 / (1 + np.exp(-X0 @ b)))

    ames = res.ames.set_index("subgroup")
    for label, mask in (("all", np.ones(len(rows), bool)), ("absent", (rows["belief"] == "absent").to_numpy()),
                        ("present", (rows["belief"] == "present").to_numpy())):
        assert ames.loc[label, "ame"] == pytest.approx(ame(beta, mask), abs=1e-9)
        assert ames.loc[label, "n"] == mask.sum()
        # delta method with a central finite-difference gradient of the AME in the coefficients
        h = 1e-6
        grad = np.array([(ame(beta + h * e, mask) - ame(beta - h * e, mask)) / (2 * h) for e in np.eye(len(beta))])
        se = math.sqrt(grad @ cov @ grad)
        assert ames.loc[label, "se"] == pytest.approx(se, rel=1e-5)
        assert ames.loc[label, "ci_low"] == pytest.approx(ame(beta, mask) - 1.96 * se, abs=1e-3 * se + 1e-9)
    # belief absent: only the main effect acts, so the AME's sign is the coefficient's
    assert np.sign(ames.loc["absent", "ame"]) == np.sign(beta[1])


def test_m1_to_m3_are_reported_with_separated_nuisance_terms_withheld(rows):
    # independent reading of the data: unmodified, no-belief Disinfo answers are all correct
    m1_rows = rows[(rows["context"] == "unmodified") & (rows["belief"] == "absent")]
    assert m1_rows.loc[m1_rows["task"] == "disinfo", "is_incorrect"].sum() == 0
    n_disinfo = int((m1_rows["task"] == "disinfo").sum())
    for name in ("M1", "M1_length", "M2", "M3"):
        res = fit_regression(name, rows, "warm")
        assert res.status == "ok", (name, res.status, res.message)
        assert res.separation.separated
        coefs = res.coefficients.set_index("term")
        main = "C(is_finetuned, Treatment(reference=0))[T.1]"
        assert coefs.loc[main, "identified"] and np.isfinite(coefs.loc[main, ["coef", "se"]].astype(float)).all()
        # withheld: exactly the non-identified coefficients, as NaN
        lost = coefs[~coefs["identified"]]
        assert len(lost) and lost[["coef", "se", "p"]].isna().all().all()
        assert coefs.loc[coefs["identified"], "se"].lt(100).all()
        assert any(n.startswith("separation: ") for n in res.notes)
    m1 = fit_regression("M1", rows, "warm")
    assert m1.separation.n_perfect == n_disinfo == 6
    assert m1.separated == [f"dataset=disinfo: every answer correct ({n_disinfo} rows)"]
    assert set(m1.coefficients.loc[~m1.coefficients["identified"], "term"]) == {
        "Intercept", *(f"C(dataset, Treatment(reference='disinfo'))[T.{t}]" for t in ("medqa", "trivia", "truthfulqa"))}
    # the disinfo AME is withheld (every row predicted perfectly), the others are estimates
    ames = m1.ames.set_index("subgroup")
    assert not ames.loc["disinfo", "identified"] and np.isnan(ames.loc["disinfo", "ame"])
    assert ames.drop(index="disinfo")["identified"].all()
    # M2: emotion and stake contexts are all correct: their warm effects are withheld, the others not
    m2 = fit_regression("M2", rows, "warm").warm_effects.set_index("subgroup")
    for level in ("emotion", "stake"):
        has = rows[(rows["belief"] == "absent") & (rows["context_group"] == level)]
        assert has["is_incorrect"].sum() == 0
        assert not m2.loc[level, "identified"]
    assert m2.loc[["unmodified", "relation"], "identified"].all()


def test_separation_check_on_small_designs():
    X = np.column_stack([np.ones(6), [0, 0, 0, 1, 1, 1.0]])
    names = ["Intercept", "x"]
    assert check_separation(X, np.array([0, 0, 0, 1, 1, 1]), names).separated        # complete
    quasi = check_separation(X, np.array([0, 0, 1, 1, 1, 1]), names)                  # x=1 all ones
    assert quasi.separated and quasi.n_perfect == 3 and "x" in quasi.terms
    assert not check_separation(X, np.array([0, 1, 0, 1, 0, 1]), names).separated     # overlap
    assert check_separation(X, np.zeros(6, int), names).separated                     # constant outcome
    with pytest.raises(ValueError, match="0/1"):
        check_separation(X, np.array([0, 2, 0, 1, 0, 1]), names)


def test_single_model_missing_arm_and_rank_deficiency(rows):
    llama = rows[rows["model"] == "llama_70b"]
    res = fit_regression("M4", llama, "warm")
    assert any(n.startswith("single model") for n in res.notes)
    assert "C(model)" not in res.formula
    assert res.status == "ok" and np.isfinite(res.ames["ame"]).all()
    nowarm = fit_regression("M4", rows[rows["arm"] == "original"], "warm")
    assert nowarm.status == "no data" and "['warm']" in nowarm.message
    cold = fit_regression("M4", rows, "cold")
    assert cold.status == "no data" and "['cold']" in cold.message
    # belief present only in the original arm: the interaction column is all zero
    lopsided = rows[(rows["arm"] == "original") | (rows["belief"] == "absent")]
    r = fit_regression("M4", lopsided, "warm")
    assert r.status == "not estimable" and "belief" in r.message and r.coefficients.empty


def test_ame_function_against_closed_form_without_covariates():
    """is_incorrect ~ is_finetuned alone: the AME is the raw difference of error rates and the delta
    SE is the unpooled two-proportion SE."""
    import patsy
    import statsmodels.api as sm
    df = pd.DataFrame({"is_finetuned": [0] * 40 + [1] * 60,
                       "is_incorrect": [1] * 10 + [0] * 30 + [1] * 27 + [0] * 33})
    y, X = patsy.dmatrices("is_incorrect ~ C(is_finetuned, Treatment(reference=0))", df, return_type="dataframe")
    fit = sm.GLM(y, X, family=sm.families.Binomial()).fit()
    out = marginal_effects(fit.params.to_numpy(), fit.cov_params().to_numpy(), X.design_info, df, None)
    p0, p1 = 10 / 40, 27 / 60
    assert out["ame"].item() == pytest.approx(p1 - p0, abs=1e-10)
    assert out["se"].item() == pytest.approx(math.sqrt(p0 * (1 - p0) / 40 + p1 * (1 - p1) / 60), rel=1e-6)


def test_shipped_headline_values_are_protocol_section_6():
    text = (need(data_path("../spec/PROTOCOL.md"))).read_text()
    sec6 = text[text.index("## 6."):text.index("## 7.")]
    numbers = {float(x) for x in re.findall(r"\d+(?:\.\d+)?", sec6)}
    h = load_headline()
    for value in (h["M1"]["overall"], h["M1"]["coefficient_is_finetuned"], h["M1_length"]["overall"],
                  h["M2"]["emotion"], h["M2"]["relation"], h["M2"]["stake"], h["M3"]["emotion:sad"],
                  h["M3"]["relation:hierarchical_up"], h["M4"]["absent"], h["M4"]["present"],
                  *h["per_task"].values(), *h["response_length_chars"].values()):
        assert float(value) in numbers, value
