"""The study's fixed-effects logistic regressions M1-M4 and their average marginal effects.

All models are binomial GLMs with logit link on is_incorrect (PROTOCOL section 6), fitted on the
rows of the original arm (is_finetuned = 0) and one treated arm (is_finetuned = 1):

    M1         unmodified context, belief absent:  C(is_finetuned) + C(dataset, ref disinfo) + C(model)
    M1_length  M1 + response_length (characters)
    M2         belief absent:  M1 + C(context_group, ref unmodified) + C(is_finetuned):C(context_group)
    M3         belief absent:  M1 + C(context, ref unmodified) + C(is_finetuned):C(context)
    M4         all rows:       M1 + C(context_group) + C(belief, ref absent) + C(is_finetuned):C(belief)
               (m4="published", the full-data formula of the paper's Methods, PROTOCOL section 6);
               m4="released-script": M1 + C(belief) + C(is_finetuned):C(belief), no context term, as
               the authors' released sample script model4_sycophancy.py fits it

Reported effects are average marginal effects (AME) by counterfactual prediction: predict
P(incorrect) for every row of a subgroup with is_finetuned set to 1 and to 0 and average the
difference. Their standard errors come from the delta method: with p1, p0 the two predictions,
X1, X0 the two design matrices and V the coefficient covariance,
    grad = mean_i [p1_i (1 - p1_i) X1_i - p0_i (1 - p0_i) X0_i],   se = sqrt(grad' V grad).

`warm_effects` are the log-odds effects of is_finetuned per subgroup level, as the authors'
scripts print them: the main coefficient for the reference level, main + interaction for the
others, with the SE of that linear combination from the coefficient covariance.

Before fitting, a model is checked for rank deficiency (a term with no variation in the data: the
model is not estimable) and for separation (`separation.py`). Separation does not withhold the
model: each coefficient is tested for identification (an LP per column), the model is fitted as
the authors fitted it (statsmodels IRLS), and only coefficients, warm effects and AMEs that rest
on a non-identified column are withheld (NaN, `identified` False); a note names the separated
levels and why (every answer there correct, or every one incorrect). A fixed effect with a single
level (one model, one task) is dropped with a note.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import patsy

from warmfast.analysis.separation import (SeparationCheck, check_separation, perfectly_predicted,
                                          unidentified_columns)

TREAT = "C(is_finetuned, Treatment(reference=0))"
MODELS = ("M1", "M1_length", "M2", "M3", "M4")
M4_FORMULAS = ("published", "released-script")
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
_M4_RELEASED_EXTRA = ["C(belief, Treatment(reference='absent'))", f"{TREAT}:C(belief, Treatment(reference='absent'))"]
# subgroup variable -> its reference level (the level whose warm effect is the main coefficient)
_REFERENCE = {"context_group": "unmodified", "context": "unmodified", "belief": "absent"}


@dataclass
class RegressionResult:
    """status: "ok", "separation", "not estimable" or "no data"; message says why when not ok.
    notes: choices forced by the data (dropped fixed effects, another reference level).
    coefficients: term, coef, se, p, identified (empty unless ok; NaN where not identified).
    warm_effects: subgroup_var, subgroup, coef, se, p, identified: the log-odds warm effect per
    level. ames: subgroup_var, subgroup, n, ame, se, ci_low, ci_high, p, identified, in probability
    units (x100 for percentage points). separated: human-readable separated levels (empty when
    the MLE exists)."""

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
    warm_effects: pd.DataFrame = field(default_factory=pd.DataFrame)
    separated: list[str] = field(default_factory=list)

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


def build_formula(name: str, data: pd.DataFrame, m4: str = "published") -> tuple[str, list[str]]:
    """The formula of model `name` for `data`, and notes on fixed effects the data cannot carry."""
    if name not in _SPECS:
        raise ValueError(f"unknown regression {name!r}; known: {MODELS}")
    if m4 not in M4_FORMULAS:
        raise ValueError(f"unknown M4 formula {m4!r}; known: {M4_FORMULAS}")
    _, _, extra = _SPECS[name]
    if name == "M4" and m4 == "released-script":
        extra = _M4_RELEASED_EXTRA
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
    import scipy.linalg  # scipy and statsmodels: seconds to import, only when a model is fitted

    _, r, piv = scipy.linalg.qr(X, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int((diag > diag.max() * max(X.shape) * np.finfo(float).eps).sum()) if diag.size else 0
    return [names[j] for j in piv[rank:]]


def marginal_effects(params: np.ndarray, cov: np.ndarray, info: patsy.DesignInfo, data: pd.DataFrame,
                     subgroup: str | None, unidentified: np.ndarray | None = None,
                     perfect: np.ndarray | None = None) -> pd.DataFrame:
    """AMEs of is_finetuned (overall and per level of `subgroup`) with delta-method 95% CIs.
    params [p] and cov [p, p] are the fitted coefficients and their covariance; `info` rebuilds the
    design for the counterfactual data. unidentified [p] (bool): columns the data does not
    identify; a group's AME is withheld (NaN, identified False) when a column that the
    counterfactual changes on its rows is one of them, or when every row of the group is predicted
    perfectly (perfect [n], bool: the AME is 0 only in the limit, not an estimate)."""
    from scipy.stats import norm

    params = np.asarray(params, dtype=float)
    V = np.asarray(cov, dtype=float)
    X1 = np.asarray(patsy.build_design_matrices([info], data.assign(is_finetuned=1))[0])   # [n, p]
    X0 = np.asarray(patsy.build_design_matrices([info], data.assign(is_finetuned=0))[0])   # [n, p]
    p1 = 1.0 / (1.0 + np.exp(-(X1 @ params)))                                             # [n]
    p0 = 1.0 / (1.0 + np.exp(-(X0 @ params)))
    groups = [("all", "all", np.ones(len(data), dtype=bool))]
    if subgroup is not None:
        groups += [(subgroup, lvl, (data[subgroup] == lvl).to_numpy()) for lvl in sorted(data[subgroup].unique())]
    unidentified = np.zeros(X1.shape[1], bool) if unidentified is None else np.asarray(unidentified, bool)
    perfect = np.zeros(len(data), bool) if perfect is None else np.asarray(perfect, bool)
    out = []
    for var, lvl, m in groups:
        moved = (X1[m] != X0[m]).any(axis=0)                                              # [p]
        if (moved & unidentified).any() or perfect[m].all():
            out.append(dict(subgroup_var=var, subgroup=lvl, n=int(m.sum()), ame=np.nan, se=np.nan, ci_low=np.nan,
                            ci_high=np.nan, p=np.nan, identified=False))
            continue
        ame = float((p1[m] - p0[m]).mean())
        grad = ((p1[m] * (1 - p1[m]))[:, None] * X1[m] - (p0[m] * (1 - p0[m]))[:, None] * X0[m]).mean(axis=0)
        se = float(np.sqrt(grad @ V @ grad))
        z = ame / se if se > 0 else np.nan
        out.append(dict(subgroup_var=var, subgroup=lvl, n=int(m.sum()), ame=ame, se=se,
                        ci_low=ame - 1.959963984540054 * se, ci_high=ame + 1.959963984540054 * se,
                        p=float(2 * norm.sf(abs(z))) if se > 0 else np.nan, identified=True))
    return pd.DataFrame(out)


def warm_effects(coefs: pd.DataFrame, cov: np.ndarray, unidentified: np.ndarray, data: pd.DataFrame,
                 subgroup: str | None) -> pd.DataFrame:
    """Log-odds effect of is_finetuned per level of `subgroup` (module doc): the main coefficient
    for the reference level, main + interaction for the others; `all` when the model has no
    interaction. Withheld (NaN) where a coefficient it sums is not identified."""
    from scipy.stats import norm

    names = list(coefs["term"])
    main = names.index(f"{TREAT}[T.1]")
    levels = [("all", "all", [main])]
    if subgroup is not None and subgroup in _REFERENCE:
        prefix = f"{TREAT}[T.1]:C({subgroup}, Treatment(reference='{_REFERENCE[subgroup]}'))[T."
        levels = []
        for lvl in sorted(data[subgroup].unique()):
            cols = [main] + [names.index(f"{prefix}{lvl}]")] if f"{prefix}{lvl}]" in names else [main]
            if lvl != _REFERENCE[subgroup] and len(cols) == 1:
                continue      # a level without its own interaction column (omitted term): no effect of its own
            levels.append((subgroup, lvl, cols))
    params = coefs["raw_coef"].to_numpy()
    out = []
    for var, lvl, cols in levels:
        ok = not unidentified[cols].any()
        w = np.zeros(len(names))
        w[cols] = 1.0
        coef = float(w @ params) if ok else np.nan
        se = float(np.sqrt(w @ cov @ w)) if ok else np.nan
        out.append(dict(subgroup_var=var, subgroup=lvl, coef=coef, se=se,
                        p=float(2 * norm.sf(abs(coef / se))) if ok and se > 0 else np.nan, identified=ok))
    return pd.DataFrame(out, columns=["subgroup_var", "subgroup", "coef", "se", "p", "identified"])


def describe_separated(data: pd.DataFrame, perfect: np.ndarray, y: np.ndarray, variables: list[str]) -> list[str]:
    """The levels (or is_finetuned x level cells) whose rows are all predicted perfectly, with
    their outcome: e.g. "dataset=disinfo: all 6 answers correct"."""
    perfect = np.asarray(perfect, bool)
    covered = np.zeros(len(data), bool)
    out = []

    def add(mask: np.ndarray, label: str) -> None:
        nonlocal covered
        if mask.any() and perfect[mask].all() and not covered[mask].all():
            ys = set(np.unique(y[mask]).tolist())
            outcome = "every answer correct" if ys == {0} else "every answer incorrect" if ys == {1} else "mixed"
            out.append(f"{label}: {outcome} ({int(mask.sum())} rows)")
            covered = covered | mask

    for var in variables:
        for lvl in sorted(data[var].unique(), key=str):
            add((data[var] == lvl).to_numpy(), f"{var}={lvl}")
    for var in variables:
        if var == "is_finetuned":
            continue
        for ft in (0, 1):
            for lvl in sorted(data[var].unique(), key=str):
                add(((data["is_finetuned"] == ft) & (data[var] == lvl)).to_numpy(), f"is_finetuned={ft} & {var}={lvl}")
    rest = perfect & ~covered
    if rest.any():
        out.append(f"{int(rest.sum())} further row(s) predicted perfectly by a combination of terms")
    return out


def fit_regression(name: str, rows: pd.DataFrame, treated_arm: str = "warm",
                   original_arm: str = "original", m4: str = "published") -> RegressionResult:
    """Fit model `name` (see module doc) on preprocessed rows; never raises for data reasons:
    a model the data cannot support comes back with status != "ok" and a message. m4: which M4
    formula ("published" or "released-script"); ignored by the other models."""
    import statsmodels.api as sm

    if name not in _SPECS:
        raise ValueError(f"unknown regression {name!r}; known: {MODELS}")
    which, subgroup, _ = _SPECS[name]
    data = _select(regression_frame(rows, treated_arm, original_arm), which).reset_index(drop=True)
    arms = set(data["arm"])
    if not {original_arm, treated_arm} <= arms:
        lacking = sorted({original_arm, treated_arm} - arms)
        return RegressionResult(name, treated_arm, "", len(data), "no data",
                                f"no rows of arm(s) {lacking} for the rows {name} uses ({which})")
    formula, notes = build_formula(name, data, m4)
    y, X = patsy.dmatrices(formula, data, return_type="dataframe")
    names = list(X.columns)
    aliased = _aliased_columns(X.to_numpy(), names)
    if aliased:
        return RegressionResult(name, treated_arm, formula, len(data), "not estimable",
                                f"design is rank deficient ({X.shape[1]} columns, {len(aliased)} aliased): "
                                f"{', '.join(aliased)} cannot be separated from other terms in these rows",
                                notes)
    yv = y.to_numpy()[:, 0].astype(int)
    sep = check_separation(X.to_numpy(), yv, names)
    unident = np.zeros(len(names), bool)
    perfect = np.zeros(len(data), bool)
    separated: list[str] = []
    if sep.separated:
        unident = unidentified_columns(X.to_numpy(), yv)
        perfect = perfectly_predicted(X.to_numpy(), yv)
        variables = [v for v in ("is_finetuned", "dataset", "model", subgroup or "", "context_group", "belief")
                     if v and v in data.columns and f"C({v}" in formula]
        separated = describe_separated(data, perfect, yv, list(dict.fromkeys(variables)))
        lost = [n for n, u in zip(names, unident) if u]
        warm_lost = [n for n in lost if n.startswith(TREAT)]
        notes.append(f"separation: {'; '.join(separated)}. Not identified, withheld: {', '.join(lost)}"
                     + ("" if warm_lost else ". Every warm (is_finetuned) term is identified and reported"))
    with np.errstate(over="ignore", divide="ignore"):
        with warnings.catch_warnings():   # separation: statsmodels warns; identification is handled above
            warnings.simplefilter("ignore")
            res = sm.GLM(y, X, family=sm.families.Binomial()).fit()
    cov = res.cov_params().to_numpy()
    coefs = pd.DataFrame({"term": names, "coef": res.params.to_numpy(), "se": res.bse.to_numpy(),
                          "p": res.pvalues.to_numpy(), "identified": ~unident})
    coefs["raw_coef"] = coefs["coef"]
    sub = subgroup if subgroup is not None and data[subgroup].nunique() > 1 else None
    effects = warm_effects(coefs, cov, unident, data, sub)
    coefs.loc[unident, ["coef", "se", "p"]] = np.nan
    coefs = coefs.drop(columns="raw_coef")
    ames = marginal_effects(res.params.to_numpy(), cov, X.design_info, data, sub, unident, perfect)
    return RegressionResult(name, treated_arm, formula, len(data), "ok", "", notes, coefs, ames, sep,
                            effects, separated)


def fit_all(rows: pd.DataFrame, treated_arm: str = "warm", m4: str = "published") -> dict[str, RegressionResult]:
    return {name: fit_regression(name, rows, treated_arm, m4=m4) for name in MODELS}
