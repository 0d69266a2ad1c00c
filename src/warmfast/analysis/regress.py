"""The study's fixed-effects logistic regressions M1-M4 and their average marginal effects.

All models are binomial GLMs with logit link on is_incorrect (PROTOCOL section 6), fitted on the
rows of the original arm (is_finetuned = 0) and one treated arm (is_finetuned = 1):

    M1         unmodified context, belief absent:  C(is_finetuned) + C(dataset, ref disinfo) + C(model)
    M1_length  M1 + response_length (characters)
    M2         belief absent:  M1 + C(context_group, ref unmodified) + C(is_finetuned):C(context_group)
    M3         belief absent:  M1 + C(context, ref unmodified) + C(is_finetuned):C(context)
    M4         all rows:       M1 + C(context_group) + C(belief, ref absent) + C(is_finetuned):C(belief)

Reported effects are average marginal effects (AME) by counterfactual prediction: predict
P(incorrect) for every row of a subgroup with is_finetuned set to 1 and to 0 and average the
difference. Their standard errors come from the delta method: with p1, p0 the two predictions,
X1, X0 the two design matrices and V the coefficient covariance,
    grad = mean_i [p1_i (1 - p1_i) X1_i - p0_i (1 - p0_i) X0_i],   se = sqrt(grad' V grad).

Before fitting, a model is checked for rank deficiency (a term with no variation in the data) and
for separation (`separation.py`); either one stops the model with a message instead of printing
coefficients that mean nothing. A fixed effect with a single level (one model, one task) is
dropped with a note.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import patsy
import scipy.linalg
import statsmodels.api as sm
from scipy.stats import norm

from warmfast.analysis.separation import SeparationCheck, check_separation

TREAT = "C(is_finetuned, Treatment(reference=0))"
MODELS = ("M1", "M1_length", "M2", "M3", "M4")
# model -> (row filter, subgroup variable for AMEs or None, extra terms)
_SPECS = {
    "M1": ("unmodified_absent", "dataset", []),
    "M1_length": ("unmodified_absent", None, ["response_length"]),
    "M2": ("absent", "context_group", ["C(context_group, Treatment(reference='unmodified'))",
                                      f"{TREAT}:C(context_group, Treatment(reference='unmodified'))"]),
    "M3": ("absent", "context", ["C(context, Treatment(reference='unmodified'))",
                                f"{TREAT}:C(context, Treatment(reference='unmodified'))"]),
    "M4": ("all", "belief", ["C(context_group, Treatment(reference='unmodified'))",
                            "C(belief, Treatment(reference='absent'))",
                            f"{TREAT}:C(belief, Treatment(reference='absent'))"]),
}


@dataclass
class RegressionResult:
    """status: "ok", "separation", "not estimable" or "no data"; message says why when not ok.
    notes: choices forced by the data (dropped fixed effects, another reference level).
    coefficients: term, coef, se, p (empty unless ok). ames: subgroup_var, subgroup, n, ame, se,
    ci_low, ci_high, p, in probability units (x100 for percentage points)."""

    name: str
    arm: str
    formula: str
    n_obs: int
    status: str
    message: str = ""
    notes: list[str] = field(default_factory=list)
    coefficients: pd.DataFrame = field(default_factory=pd.DataFrame)
    ames: pd.DataFrame = field(default_factory=pd.DataFrame)
    separation: SeparationCheck | None = None

    def __post_init__(self):
        if self.status not in ("ok", "separation", "not estimable", "no data"):
            raise ValueError(f"RegressionResult.status {self.status!r} is not a known status")


def regression_frame(rows: pd.DataFrame, treated_arm: str, original_arm: str = "original") -> pd.DataFrame:
    """Preprocessed rows of the two arms with is_finetuned (0/1) and dataset (= task)."""
    df = rows[rows["arm"].isin([original_arm, treated_arm])].copy()
    df["is_finetuned"] = (df["arm"] == treated_arm).astype(int)
    df["dataset"] = df["task"]
    return df.reset_index(drop=True)


def _select(df: pd.DataFrame, which: str) -> pd.DataFrame:
    if which == "unmodified_absent":
        return df[(df["context"] == "unmodified") & (df["belief"] == "absent")]
    if which == "absent":
        return df[df["belief"] == "absent"]
    return df


def build_formula(name: str, data: pd.DataFrame) -> tuple[str, list[str]]:
    """The formula of model `name` for `data`, and notes on fixed effects the data cannot carry."""
    if name not in _SPECS:
        raise ValueError(f"unknown regression {name!r}; known: {MODELS}")
    _, _, extra = _SPECS[name]
    terms, notes = [TREAT], []
    tasks = sorted(data["dataset"].unique())
    if len(tasks) > 1:
        ref = "disinfo" if "disinfo" in tasks else tasks[0]
        if ref != "disinfo":
            notes.append(f"no Disinfo rows: dataset reference level is {ref!r} instead of 'disinfo'")
        terms.append(f"C(dataset, Treatment(reference='{ref}'))")
    else:
        notes.append(f"single task {tasks}: dataset fixed effect omitted")
    if data["model"].nunique() > 1:
        terms.append("C(model)")
    else:
        notes.append(f"single model {sorted(data['model'].unique())}: model fixed effect omitted")
    for t in extra:
        var = t.split("C(")[-1].split(",")[0] if "C(" in t else t
        if var != "response_length" and data[var].nunique() < 2:
            notes.append(f"{var} has the single level {sorted(data[var].unique())}: term {t} omitted")
            continue
        terms.append(t)
    return "is_incorrect ~ " + " + ".join(terms), notes


def _aliased_columns(X: np.ndarray, names: list[str]) -> list[str]:
    """Design columns that are linear combinations of earlier ones (pivoted QR)."""
    _, r, piv = scipy.linalg.qr(X, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int((diag > diag.max() * max(X.shape) * np.finfo(float).eps).sum()) if diag.size else 0
    return [names[j] for j in piv[rank:]]


def marginal_effects(params: np.ndarray, cov: np.ndarray, info: patsy.DesignInfo, data: pd.DataFrame,
                     subgroup: str | None) -> pd.DataFrame:
    """AMEs of is_finetuned (overall and per level of `subgroup`) with delta-method 95% CIs.
    params [p] and cov [p, p] are the fitted coefficients and their covariance; `info` rebuilds the
    design for the counterfactual data."""
    params = np.asarray(params, dtype=float)
    V = np.asarray(cov, dtype=float)
    X1 = np.asarray(patsy.build_design_matrices([info], data.assign(is_finetuned=1))[0])   # [n, p]
    X0 = np.asarray(patsy.build_design_matrices([info], data.assign(is_finetuned=0))[0])   # [n, p]
    p1 = 1.0 / (1.0 + np.exp(-(X1 @ params)))                                             # [n]
    p0 = 1.0 / (1.0 + np.exp(-(X0 @ params)))
    groups = [("all", "all", np.ones(len(data), dtype=bool))]
    if subgroup is not None:
        groups += [(subgroup, lvl, (data[subgroup] == lvl).to_numpy()) for lvl in sorted(data[subgroup].unique())]
    out = []
    for var, lvl, m in groups:
        ame = float((p1[m] - p0[m]).mean())
        grad = ((p1[m] * (1 - p1[m]))[:, None] * X1[m] - (p0[m] * (1 - p0[m]))[:, None] * X0[m]).mean(axis=0)
        se = float(np.sqrt(grad @ V @ grad))
        z = ame / se if se > 0 else np.nan
        out.append(dict(subgroup_var=var, subgroup=lvl, n=int(m.sum()), ame=ame, se=se,
                        ci_low=ame - 1.959963984540054 * se, ci_high=ame + 1.959963984540054 * se,
                        p=float(2 * norm.sf(abs(z))) if se > 0 else np.nan))
    return pd.DataFrame(out)


def fit_regression(name: str, rows: pd.DataFrame, treated_arm: str = "warm",
                   original_arm: str = "original") -> RegressionResult:
    """Fit model `name` (see module doc) on preprocessed rows; never raises for data reasons:
    a model the data cannot support comes back with status != "ok" and a message."""
    if name not in _SPECS:
        raise ValueError(f"unknown regression {name!r}; known: {MODELS}")
    which, subgroup, _ = _SPECS[name]
    data = _select(regression_frame(rows, treated_arm, original_arm), which).reset_index(drop=True)
    arms = set(data["arm"])
    if not {original_arm, treated_arm} <= arms:
        lacking = sorted({original_arm, treated_arm} - arms)
        return RegressionResult(name, treated_arm, "", len(data), "no data",
                                f"no rows of arm(s) {lacking} for the rows {name} uses ({which})")
    formula, notes = build_formula(name, data)
    y, X = patsy.dmatrices(formula, data, return_type="dataframe")
    names = list(X.columns)
    aliased = _aliased_columns(X.to_numpy(), names)
    if aliased:
        return RegressionResult(name, treated_arm, formula, len(data), "not estimable",
                                f"design is rank deficient ({X.shape[1]} columns, {len(aliased)} aliased): "
                                f"{', '.join(aliased)} cannot be separated from other terms in these rows",
                                notes)
    sep = check_separation(X.to_numpy(), y.to_numpy()[:, 0].astype(int), names)
    if sep.separated:
        return RegressionResult(name, treated_arm, formula, len(data), "separation",
                                sep.describe() + "; coefficients and marginal effects are not reported",
                                notes, separation=sep)
    res = sm.GLM(y, X, family=sm.families.Binomial()).fit()
    coefs = pd.DataFrame({"term": names, "coef": res.params.to_numpy(), "se": res.bse.to_numpy(),
                          "p": res.pvalues.to_numpy()})
    sub = subgroup if subgroup is not None and data[subgroup].nunique() > 1 else None
    ames = marginal_effects(res.params.to_numpy(), res.cov_params().to_numpy(), X.design_info, data, sub)
    return RegressionResult(name, treated_arm, formula, len(data), "ok", "", notes, coefs, ames, sep)


def fit_all(rows: pd.DataFrame, treated_arm: str = "warm") -> dict[str, RegressionResult]:
    return {name: fit_regression(name, rows, treated_arm) for name in MODELS}
