"""Paired tests of a treated arm against the original model (PROTOCOL section 6, first bullet).

For every (model, task, belief condition, context) cell the same prompts are answered by the
original model and by the treated arm (warm / cold / warm system prompt). With a = both correct,
b = original correct & treated wrong, c = original wrong & treated correct, d = both wrong:

    McNemar exact p  = two-sided binomial test of b against b + c at 1/2 (statsmodels `mcnemar`)
    Cohen's g        = |b - c| / sqrt(b + c)
    odds ratio       = b / c      (> 1: the treated arm loses more answers than it gains; inf if c = 0)
    diff_pp          = accuracy(treated) - accuracy(original), in percentage points

Without discordant pairs (b + c = 0) the test, g and the odds ratio are undefined (NaN, as in the
published tables) and the cell is left out of the FDR family. Benjamini-Hochberg FDR runs within
each model x task x belief table over its contexts. Pairs are matched on (question key, context,
prompt type) and only then pooled: belief `absent` = original + original_neutral prompts, belief
`present` = incorrect + correct prompts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from warmfast.analysis.load import CONTEXTS

PAIR_KEYS = ["model", "task", "question_key", "context", "prompt_type"]
TABLE_KEYS = ["model", "arm", "task", "belief"]
BELIEFS = ("absent", "present")


@dataclass(frozen=True)
class McNemarCell:
    """One 2x2 table of paired correctness and its statistics (see module doc)."""

    a: int
    b: int
    c: int
    d: int

    def __post_init__(self):
        for name in ("a", "b", "c", "d"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"McNemarCell.{name} must be a count >= 0, got {v!r}")

    @property
    def n(self) -> int:
        return self.a + self.b + self.c + self.d

    @property
    def acc_original(self) -> float:
        return 100.0 * (self.a + self.b) / self.n if self.n else math.nan

    @property
    def acc_treated(self) -> float:
        return 100.0 * (self.a + self.c) / self.n if self.n else math.nan

    @property
    def diff_pp(self) -> float:
        return self.acc_treated - self.acc_original

    @property
    def cohens_g(self) -> float:
        return abs(self.b - self.c) / math.sqrt(self.b + self.c) if self.b + self.c else math.nan

    @property
    def odds_ratio(self) -> float:
        if self.c:
            return self.b / self.c
        return math.inf if self.b else math.nan

    @property
    def p_value(self) -> float:
        if self.b + self.c == 0:
            return math.nan
        from statsmodels.stats.contingency_tables import mcnemar  # heavy: imported when a test runs

        # table rows: original correct / wrong; columns: treated correct / wrong
        return float(mcnemar([[self.a, self.b], [self.c, self.d]], exact=True).pvalue)

    @classmethod
    def from_pairs(cls, correct_original, correct_treated) -> "McNemarCell":
        o = np.asarray(correct_original, dtype=bool)
        t = np.asarray(correct_treated, dtype=bool)
        if o.shape != t.shape or o.ndim != 1:
            raise ValueError(f"McNemarCell.from_pairs: shapes {o.shape} and {t.shape} must be equal and 1-D")
        return cls(int((o & t).sum()), int((o & ~t).sum()), int((~o & t).sum()), int((~o & ~t).sum()))


def pair_arms(rows: pd.DataFrame, treated_arm: str, original_arm: str = "original") -> pd.DataFrame:
    """Inner join of the original and the treated arm's preprocessed rows on PAIR_KEYS.

    Returns one row per pair: PAIR_KEYS, belief, arm (= treated_arm), correct_original,
    correct_treated, length_original, length_treated. Unpaired rows are left out (count them with
    `unpaired_counts`)."""
    cols = PAIR_KEYS + ["belief", "is_correct", "response_length"]
    orig = rows.loc[rows["arm"] == original_arm, cols]
    trt = rows.loc[rows["arm"] == treated_arm, cols]
    for arm, part in ((original_arm, orig), (treated_arm, trt)):
        dup = part.duplicated(PAIR_KEYS)
        if dup.any():
            raise ValueError(f"pair_arms: arm {arm!r} has {int(dup.sum())} duplicate row(s) on {PAIR_KEYS} "
                             f"(first: {part.loc[dup, PAIR_KEYS].iloc[0].tolist()}); run preprocess() first")
    merged = orig.merge(trt.drop(columns="belief"), on=PAIR_KEYS, suffixes=("_original", "_treated"),
                        validate="one_to_one")
    merged = merged.rename(columns={"is_correct_original": "correct_original", "is_correct_treated": "correct_treated",
                                    "response_length_original": "length_original",
                                    "response_length_treated": "length_treated"})
    merged.insert(1, "arm", treated_arm)
    return merged


def unpaired_counts(rows: pd.DataFrame, treated_arm: str, original_arm: str = "original") -> pd.DataFrame:
    """Per (model, task): rows of each arm and how many found no partner in the other arm."""
    out = []
    for (model, task), sub in rows[rows["arm"].isin([original_arm, treated_arm])].groupby(["model", "task"]):
        o = set(map(tuple, sub.loc[sub["arm"] == original_arm, PAIR_KEYS[2:]].to_numpy()))
        t = set(map(tuple, sub.loc[sub["arm"] == treated_arm, PAIR_KEYS[2:]].to_numpy()))
        out.append(dict(model=model, arm=treated_arm, task=task, rows_original=len(o), rows_treated=len(t),
                        pairs=len(o & t), unpaired_original=len(o - t), unpaired_treated=len(t - o)))
    return pd.DataFrame(out, columns=["model", "arm", "task", "rows_original", "rows_treated", "pairs",
                                      "unpaired_original", "unpaired_treated"])


def bh_within_tables(table: pd.DataFrame, keys: list[str] = TABLE_KEYS) -> pd.Series:
    """Benjamini-Hochberg adjusted p within each group of `keys`; NaN p-values stay NaN and are not
    counted in their family."""
    from statsmodels.stats.multitest import fdrcorrection  # heavy: imported when a test runs

    out = pd.Series(np.nan, index=table.index)
    for _, idx in table.groupby(keys).groups.items():
        p = table.loc[idx, "p_value"]
        ok = p.notna()
        if ok.any():
            _, adj = fdrcorrection(p[ok].to_numpy(), alpha=0.05, method="indep")
            out.loc[p[ok].index] = adj
    return out


def paired_tables(rows: pd.DataFrame, treated_arm: str, original_arm: str = "original",
                  pool_neutral: bool = True) -> pd.DataFrame:
    """All cells of one treated arm: TABLE_KEYS + context, counts a b c d n, accuracies, diff_pp,
    cohens_g, odds_ratio, p_value, p_fdr. Cells without any pair are absent (see `missing_cells`).

    pool_neutral: the belief-absent unmodified cell pools the plain and the neutral-sentence
    prompts (PROTOCOL section 6). The published tables did not: their significance script matched
    the prompt type 'original neutral' (with a space) while the files say 'original_neutral', so
    their "original_combined" cell holds the plain prompts only (n is about the number of
    questions, e.g. 500 for gpt-4o TriviaQA). pool_neutral=False reproduces that."""
    if not pool_neutral:
        rows = rows[rows["prompt_type"] != "original_neutral"]
    pairs = pair_arms(rows, treated_arm, original_arm)
    records = []
    for key, sub in pairs.groupby(TABLE_KEYS + ["context"], sort=False):
        cell = McNemarCell.from_pairs(sub["correct_original"], sub["correct_treated"])
        records.append(dict(zip(TABLE_KEYS + ["context"], key), a=cell.a, b=cell.b, c=cell.c, d=cell.d, n=cell.n,
                            acc_original=cell.acc_original, acc_treated=cell.acc_treated, diff_pp=cell.diff_pp,
                            cohens_g=cell.cohens_g, odds_ratio=cell.odds_ratio, p_value=cell.p_value))
    cols = TABLE_KEYS + ["context", "a", "b", "c", "d", "n", "acc_original", "acc_treated", "diff_pp",
                         "cohens_g", "odds_ratio", "p_value"]
    table = pd.DataFrame.from_records(records, columns=cols)
    table["p_fdr"] = bh_within_tables(table)
    order = {c: i for i, c in enumerate(CONTEXTS)}
    table = table.sort_values(TABLE_KEYS + ["context"], key=lambda s: s.map(order) if s.name == "context" else s)
    return table.reset_index(drop=True)


def missing_cells(table: pd.DataFrame, rows: pd.DataFrame, treated_arm: str,
                  original_arm: str = "original") -> pd.DataFrame:
    """The cells of the full grid (models x tasks present in either arm x 2 beliefs x 9 contexts)
    that have no paired test, each with the reason: no rows in an arm, no pairs, or no discordant
    pairs (p undefined)."""
    have = rows[rows["arm"].isin([original_arm, treated_arm])]
    n_arm = have.groupby(["arm", "model", "task", "belief", "context"]).size()
    out = []
    done = {tuple(k): r for k, r in zip(table[["model", "task", "belief", "context"]].itertuples(index=False),
                                        table.itertuples(index=False))}
    for model in sorted(have["model"].unique()):
        for task in sorted(have.loc[have["model"] == model, "task"].unique()):
            for belief in BELIEFS:
                for context in CONTEXTS:
                    key = (model, task, belief, context)
                    no = int(n_arm.get((original_arm, *key), 0))
                    nt = int(n_arm.get((treated_arm, *key), 0))
                    if key in done:
                        r = done[key]
                        if math.isnan(r.p_value):
                            out.append(dict(model=model, arm=treated_arm, task=task, belief=belief, context=context,
                                            reason=f"no discordant pairs among {r.n} pairs: McNemar p, g, OR undefined"))
                        continue
                    if no == 0 and nt == 0:
                        why = "no rows in either arm"
                    elif no == 0 or nt == 0:
                        why = f"no rows in arm {original_arm if no == 0 else treated_arm!r} ({original_arm}: {no}, {treated_arm}: {nt})"
                    else:
                        why = f"rows in both arms ({original_arm}: {no}, {treated_arm}: {nt}) but none share a prompt"
                    out.append(dict(model=model, arm=treated_arm, task=task, belief=belief, context=context, reason=why))
    return pd.DataFrame(out, columns=["model", "arm", "task", "belief", "context", "reason"])
