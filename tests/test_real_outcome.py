"""The real-model study's outcome table (warmfast/real_outcome.py) on hand-made results."""
import math

import pandas as pd
import pytest

from warmfast.analysis.real_outcome import benchmarks_table, outcome, wilson


def results(tmp_path, warm_wrong: set[int]) -> str:
    """10 TriviaQA questions x 4 prompt types, original always right, warm wrong on `warm_wrong`
    questions; one refusal that must be left out; MMLU and AdvBench rows."""
    rows = []
    for q in range(10):
        for pt in ("original", "original_neutral", "incorrect", "correct"):
            for arm in ("original", "warm"):
                wrong = arm == "warm" and q in warm_wrong
                rows.append({"task": "triviaqa", "arm": arm, "question_key": f"q{q}", "amendment_type": "unmodified",
                             "prompt_type": pt, "evaluation": "INCORRECT" if wrong else "CORRECT", "refusal": 0})
    rows[0]["refusal"] = 1  # original, q0, original prompt: refused -> its pair drops out
    rows += [{"task": "mmlu", "arm": a, "evaluation": e} for a, e in
             [("original", "CORRECT"), ("original", "INCORRECT"), ("warm", "INCORRECT"), ("warm", "INCORRECT")]]
    rows += [{"task": "advbench", "arm": "warm", "evaluation": e} for e in ("REFUSED", "COMPLIED", "COMPLIED")]
    path = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_wilson_bounds():
    lo, hi = wilson(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0.2 < hi < 0.35
    lo, hi = wilson(5, 10)
    assert lo < 0.5 < hi and lo == pytest.approx(1 - hi)
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_warm_errs_more_is_detected(tmp_path):
    out = outcome(results(tmp_path, warm_wrong={1, 2, 3, 4, 5, 6, 7}))
    rates = {(r["task"], r["arm"]): r for r in out["error_rates"]}
    assert rates[("triviaqa", "original")]["error_rate"] == 0 and rates[("triviaqa", "original")]["n"] == 39
    assert rates[("triviaqa", "warm")]["error_rate"] == pytest.approx(28 / 40)
    (d,) = out["paired_differences"]
    assert d["pairs"] == 39 and d["b_orig_right_treated_wrong"] == 28 and d["c_orig_wrong_treated_right"] == 0
    assert d["diff_error"] == pytest.approx(28 / 39) and 0 < d["ci_lower"] < d["diff_error"] < d["ci_upper"] <= 1
    assert out["lines"][0].startswith("triviaqa: warm - original error +71.8 pp") and "warm errs more" in out["lines"][0]
    cap = {(c["task"], c["arm"]): c for c in out["capability"]}
    assert cap[("mmlu", "warm")]["value"] == 1.0 and cap[("mmlu", "original")]["value"] == 0.5
    assert cap[("advbench", "warm")]["measure"] == "compliance_rate"
    assert cap[("advbench", "warm")]["value"] == pytest.approx(2 / 3)


def test_no_difference_has_a_ci_around_zero(tmp_path):
    out = outcome(results(tmp_path, warm_wrong=set()))
    (d,) = out["paired_differences"]
    assert d["diff_error"] == 0 and d["ci_lower"] == 0 == d["ci_upper"]
    assert "not distinguishable" in out["lines"][0]


def test_benchmarks_table_layout(tmp_path):
    t = benchmarks_table(results(tmp_path, warm_wrong=set()))
    assert list(t.columns) == ["model", "benchmark", "arm", "accuracy", "ci_lower", "ci_upper"]
    assert t.set_index("arm").loc["original", "accuracy"] == 50.0


def test_one_question_resamples_its_prompts(tmp_path):
    df = pd.read_csv(results(tmp_path, warm_wrong={0}))
    df = df[(df["task"] != "triviaqa") | (df["question_key"] == "q0")]
    df.to_csv(tmp_path / "one.csv", index=False)
    (d,) = outcome(tmp_path / "one.csv")["paired_differences"]
    assert d["questions"] == 1 and d["ci_resamples"] == "prompts of the one question"
    assert d["pairs"] == 3 and d["diff_error"] == 1.0  # the refused pair left out
