"""Detecting (quasi-)complete separation in a logistic regression before trusting its coefficients.

A binary outcome y is separated by a design X when some direction beta != 0 satisfies
s_i * x_i . beta >= 0 for every row (s_i = +1 if y_i = 1 else -1): moving along beta never makes
the fit worse, so the maximum-likelihood estimate does not exist and IRLS returns huge
coefficients with huge standard errors. We find such a beta with the linear programme of Konis
(2007): maximise sum_i s_i x_i . beta subject to s_i x_i . beta >= 0 and -1 <= beta_j <= 1. The
optimum is 0 exactly when the MLE exists (for a full-rank X); otherwise the non-zero components
of beta name the terms that run off to infinity and the rows with s_i x_i . beta > 0 are the ones
predicted perfectly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SeparationCheck:
    """separated: True when the MLE does not exist. terms: design columns with a non-zero
    separating component. n_perfect: rows (of the full data) the separating direction predicts
    perfectly."""

    separated: bool
    terms: tuple[str, ...]
    n_perfect: int

    def describe(self) -> str:
        if not self.separated:
            return "no separation"
        return (f"quasi-complete separation: {self.n_perfect} row(s) are predicted perfectly along the "
                f"direction of {', '.join(self.terms)}; the maximum-likelihood estimate does not exist")


def linprog(**problem):
    """scipy.optimize.linprog, imported on the first LP: scipy.optimize is slow to import, and
    every `warmfast` command would pay for it at start-up otherwise."""
    from scipy.optimize import linprog as solve

    return solve(**problem)


def check_separation(X: np.ndarray, y: np.ndarray, names: list[str], tol: float = 1e-7) -> SeparationCheck:
    """X: [n, p] design (with intercept column), y: [n] in {0, 1}, names: p column names."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[1] != len(names):
        raise ValueError(f"check_separation: X {X.shape}, y {y.shape}, {len(names)} names do not agree")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"check_separation: y must be 0/1, got values {sorted(set(np.unique(y)) - {0, 1})[:5]}")
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    S = (2.0 * y - 1.0)[:, None] * (X / scale)          # [n, p], rows s_i x_i (columns scaled to |x| <= 1)
    rows, counts = np.unique(S, axis=0, return_counts=True)   # identical rows give identical constraints
    res = linprog(c=-(counts @ rows), A_ub=-rows, b_ub=np.zeros(len(rows)),
                  bounds=[(-1.0, 1.0)] * X.shape[1], method="highs")
    if res.status != 0:
        raise RuntimeError(f"check_separation: linear programme failed ({res.message})")
    margin = rows @ res.x
    if -res.fun <= tol * max(1.0, counts.sum()):
        return SeparationCheck(False, (), 0)
    terms = tuple(n for n, b in zip(names, res.x) if abs(b) > 1e-6)
    return SeparationCheck(True, terms, int(counts[margin > tol].sum()))


def unidentified_columns(X: np.ndarray, y: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """[p] bool: design columns whose coefficient the data does not identify.

    Under separation the likelihood keeps rising along every direction d of the cone
    {d : s_i x_i . d >= 0 for all rows}; a coefficient is identified exactly when every such d
    has d_j = 0 (then IRLS converges in that coordinate however far the others run). Two linear
    programmes per column (max and min of d_j over the cone within the unit box) decide it. A full-
    rank X is assumed (check rank deficiency first). Cost: 2p small LPs on the distinct rows."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y)
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    rows = np.unique((2.0 * y - 1.0)[:, None] * (X / scale), axis=0)     # [u, p] distinct s_i x_i
    p = X.shape[1]
    out = np.zeros(p, dtype=bool)
    for j in range(p):
        for sign in (1.0, -1.0):
            c = np.zeros(p)
            c[j] = -sign                                                      # maximise sign * d_j
            res = linprog(c=c, A_ub=-rows, b_ub=np.zeros(len(rows)), bounds=[(-1.0, 1.0)] * p, method="highs")
            if res.status != 0:
                raise RuntimeError(f"unidentified_columns: linear programme failed ({res.message})")
            if -res.fun > tol:
                out[j] = True
                break
    return out


def perfectly_predicted(X: np.ndarray, y: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """[n] bool: rows some separating direction predicts perfectly (s_i x_i . d > 0), found with
    the Konis LP of check_separation; all False when the MLE exists."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y)
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    S = (2.0 * y - 1.0)[:, None] * (X / scale)
    rows, inverse, counts = np.unique(S, axis=0, return_inverse=True, return_counts=True)
    res = linprog(c=-(counts @ rows), A_ub=-rows, b_ub=np.zeros(len(rows)),
                  bounds=[(-1.0, 1.0)] * X.shape[1], method="highs")
    if res.status != 0:
        raise RuntimeError(f"perfectly_predicted: linear programme failed ({res.message})")
    return (rows @ res.x > tol)[np.ravel(inverse)]
