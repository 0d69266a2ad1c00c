"""Agreement tool on the study's GPT-4o labels, checked against independent kappa computations."""
import math
import re

import numpy as np
import pytest
from statsmodels.stats.inter_rater import cohens_kappa

from warmfast.judge.agreement import agreement, agreement_by, read_study_outputs
from warmfast.judge.refusal import load_refusal_rule
from warmfast.tasks.item import TaskDataError
from study_data import data_path, has_data, requires_data

pytestmark = requires_data

SAMPLE = data_path("warm_ai_2025/sample_data")
DF = read_study_outputs(SAMPLE) if has_data() else None


def kappa_by_matrix(ref, pred):
    """Independent computation: k x k count matrix, p_o = trace / n, p_e = row . col / n^2."""
    labels = sorted(set(ref) | set(pred))
    idx = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)))
    for r, p in zip(ref, pred):
        m[idx[r], idx[p]] += 1
    n = m.sum()
    p_o = np.trace(m) / n
    p_e = (m.sum(axis=1) @ m.sum(axis=0)) / n**2
    return p_o, (p_o - p_e) / (1 - p_e), m


def _norm(s):
    return re.sub(r"[^a-z0-9 ]", " ", str(s).lower()).split()


def answer_match_baseline(row):
    """A naive judge: CORRECT when every word of the reference answer appears in the output."""
    ref = row["correct_answer"] if row["task"] in ("triviaqa", "truthfulqa") else (
        row["answer"] if row["task"] == "medqa" else None)
    if not isinstance(ref, str) or not isinstance(row["output"], str):
        return None
    words = set(_norm(row["output"]))
    return "CORRECT" if all(w in words for w in _norm(ref)) else "INCORRECT"


def test_reads_every_released_output():
    assert len(DF) == 319
    assert set(DF["task"]) == {"triviaqa", "truthfulqa", "disinfo", "medqa"}
    assert set(DF["evaluation"]) == {"CORRECT", "INCORRECT"}


def test_baseline_judge_agreement_matches_independent_kappas():
    pred = [answer_match_baseline(r) for _, r in DF.iterrows()]
    a = agreement(DF["evaluation"].tolist(), pred, drop_missing=True)
    keep = [i for i, p in enumerate(pred) if p is not None]
    ref_k = [DF["evaluation"].iloc[i] for i in keep]
    pred_k = [pred[i] for i in keep]
    p_o, kappa, m = kappa_by_matrix(ref_k, pred_k)
    assert a.n == len(keep) and a.dropped == len(pred) - len(keep) > 0
    assert a.accuracy == pytest.approx(p_o, abs=1e-12)
    assert a.kappa == pytest.approx(kappa, abs=1e-12)
    assert a.kappa == pytest.approx(cohens_kappa(m).kappa, abs=1e-12)
    assert a.confusion[("CORRECT", "INCORRECT")] == m[0, 1] and a.confusion[("INCORRECT", "CORRECT")] == m[1, 0]
    assert 0.0 < a.kappa < 0.9  # a naive judge agrees somewhat, far from the study's 0.81 bar for humans
    table = a.table()
    assert "kappa=" in table and str(int(m[0, 0])) in table


def test_per_task_agreement():
    pred = [answer_match_baseline(r) for _, r in DF.iterrows()]
    rows = [(r, p, t) for r, p, t in zip(DF["evaluation"], pred, DF["task"]) if p is not None]
    by = agreement_by([r for r, _, _ in rows], [p for _, p, _ in rows], [t for _, _, t in rows])
    assert set(by) == {"triviaqa", "truthfulqa", "medqa", "all"}
    for task, a in by.items():
        sub = [(r, p) for r, p, t in rows if task == "all" or t == task]
        p_o, kappa, _ = kappa_by_matrix([r for r, _ in sub], [p for _, p in sub])
        assert a.accuracy == pytest.approx(p_o) and (math.isnan(a.kappa) or a.kappa == pytest.approx(kappa))


def test_always_correct_baseline_has_kappa_zero():
    ref = DF["evaluation"].tolist()
    a = agreement(ref, ["CORRECT"] * len(ref), labels=["CORRECT", "INCORRECT"])
    assert a.accuracy == pytest.approx(ref.count("CORRECT") / len(ref))
    assert a.kappa == pytest.approx(0.0, abs=1e-12)


def test_refusal_rule_agrees_perfectly_with_released_flags():
    flagged = DF[DF["refusal"].notna()]
    rule = load_refusal_rule(compat=True)
    a = agreement(flagged["refusal"].astype(int).tolist(), [int(x) for x in rule.flags(flagged["output"])])
    assert a.n == 240 and a.accuracy == 1.0 and a.kappa == pytest.approx(1.0)
    clean = agreement(flagged["refusal"].astype(int).tolist(), [int(x) for x in load_refusal_rule().flags(flagged["output"])])
    assert clean.confusion[(0, 1)] == 1 and clean.kappa < 1.0


def test_edge_cases_and_errors():
    assert math.isnan(agreement(["A", "A"], ["A", "A"]).kappa)
    assert agreement(["A", "B", "A", "B"], ["B", "A", "B", "A"]).kappa == pytest.approx(-1.0)
    with pytest.raises(TaskDataError, match="position 1"):
        agreement(["A", None], ["A", "B"])
    with pytest.raises(TaskDataError, match="3 labels"):
        agreement(["A", "B", "A"], ["A", "B"])
    with pytest.raises(TaskDataError, match=r"\['C'\]"):
        agreement(["A", "C"], ["A", "A"], labels=["A", "B"])
    with pytest.raises(TaskDataError, match="not found"):
        read_study_outputs(SAMPLE / "nope")
