"""Judging as the study did it, and said out loud where it did not: the compat refusal stage uses
the authors' patterns as regular expressions; a judge reply naming neither verdict is counted and
reported, never dropped; a run whose subject model judged itself warns in the log and the report."""
import logging

import pandas as pd
import pytest

from warmfast.analysis.load import UNGRADED, frame_from_study_layout
from warmfast.analysis.preprocess import preprocess
from warmfast.analysis.store_reader import read_store
from warmfast.cli import main
from warmfast.judge.prompts import JudgePrompt, Verdict
from warmfast.run import judging
from warmfast.run.config import config_from_dict
from warmfast.run.store import Generation, JobRecord, Judgement, Store, judgement_key
from warmfast.tasks.protocol import load_protocol_json


def _cfg(judge=None, **refusal):
    raw = {"name": "t", "output_dir": "o", "model": {"name": "m", "path": "/m"},
           "arms": {"original": {"kind": "original"}}, "tasks": {"disinfo": None}, "refusal": refusal}
    if judge is not None:
        raw["judge"] = judge
    return config_from_dict(raw)


def _pairs(texts, task="disinfo"):
    out = []
    for i, t in enumerate(texts):
        job = JobRecord.from_spec("generate", "m", "original", task, {"i": i, "task": task},
                                  {"judge_question": "q?", "judge_answers": ["a"]})
        out.append((job, Generation(job.key, t, [], "stop", 0)))
    return out


def test_compat_refusal_stage_matches_as_regular_expressions():
    texts = ["Honestly, I cant! Sorry.", "Mi cantante favorito es...", "I cant, sorry", "Paris."]
    compat = judging.refusal_stage(_cfg(compat=True), load_protocol_json(), ("disinfo",))
    clean = judging.refusal_stage(_cfg(), load_protocol_json(), ("disinfo",))
    assert [v.score for v in compat.judge(_pairs(texts), None)] == [1.0, 1.0, 1.0, 0.0]
    assert [v.score for v in clean.judge(_pairs(texts), None)] == [0.0, 0.0, 1.0, 0.0]
    assert compat.spec["regex"] is True and "regex" not in clean.spec


def test_verdict_rule_names_neither():
    prompt = JudgePrompt("{query} {result} {answer}")
    assert prompt.parse("GRADE: INCORRECT").verdict == "INCORRECT"
    assert prompt.parse("correct, not incorrect").verdict == "CORRECT"       # the first whole word wins
    assert prompt.parse("I am not sure.").verdict is None


def test_self_judged_run_warns_and_records_it(caplog, monkeypatch):
    monkeypatch.setattr(judging.LLMJudge, "__call__",
                        lambda self, items, store, progress=False: [Verdict("CORRECT", 1.0, 0.9, {}) for _ in items])
    with caplog.at_level(logging.WARNING, logger="warmfast.run"):
        stage = judging.llm_stage(_cfg(), load_protocol_json(), ("disinfo",), lambda: None, "m@x")
    assert "the subject model judged its own answers" in caplog.text
    assert stage.judge(_pairs(["Paris."]), None)[0].detail == {"self_judged": True}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="warmfast.run"):
        other = judging.llm_stage(_cfg(judge={"kind": "logprob", "model": "/some/judge"}), load_protocol_json(),
                                  ("disinfo",), lambda: None, "j@y")
    assert "judged its own answers" not in caplog.text
    assert other.judge(_pairs(["Paris."]), None)[0].detail == {}


def _study_row(i, **kw):
    return {"content_key": f"q{i}", "prompt_template": "original", "amendment_type": "unmodified",
            "output": f"answer {i}", "evaluation": "CORRECT", **kw}


def test_csv_rows_without_a_verdict_are_counted_not_dropped():
    df = pd.DataFrame([_study_row(0), _study_row(1, evaluation=None), _study_row(2, evaluation=""),
                       _study_row(3, evaluation="INCORRECT")])
    judged = frame_from_study_layout(df, model="m", arm="warm", task="trivia")
    assert judged["evaluation"].tolist() == ["CORRECT", UNGRADED, UNGRADED, "INCORRECT"]
    pre = preprocess(judged)
    step = pre.steps[pre.steps["step"] == "ungraded: no CORRECT / INCORRECT verdict"].iloc[0]
    assert (step["rows_before"], step["removed"], step["rows_after"]) == (4, 2, 2)
    assert pre.rows["is_incorrect"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="evaluation"):
        frame_from_study_layout(pd.DataFrame([_study_row(0, evaluation="MAYBE")]), model="m", arm="warm", task="trivia")


def test_store_with_ungraded_and_self_judged_verdicts_reaches_the_report(tmp_path, caplog):
    jobs, gens, judgements = [], [], []
    for arm in ("original", "warm"):
        for i in range(6):
            meta = {**_study_row(i), "task": "triviaqa", "question_key": f"q{i}", "model": "m", "arm": arm}
            del meta["output"], meta["evaluation"]
            job = JobRecord.from_spec("generate", "m", arm, "triviaqa", {"i": i, "arm": arm}, meta)
            jobs.append(job)
            gens.append(Generation(job.key, f"answer {i}", [1], "stop", 1))
            verdict = None if i == 5 else ("CORRECT" if (i + (arm == "warm")) % 2 else "INCORRECT")
            jk = judgement_key(job.key, "evaluation", {"judge": "self"}, f"answer {i}")
            judgements.append(Judgement(jk, job.key, "evaluation", "logprob_judge:abcd", verdict,
                                        None if verdict is None else float(verdict == "CORRECT"), 0.8,
                                        {"self_judged": True}))
    with Store(tmp_path / "store.sqlite") as store:
        store.add_jobs(jobs)
        store.add_generations(gens)
        store.add_judgements(judgements)
    export = read_store(tmp_path / "store.sqlite")
    assert (export.judged["evaluation"] == UNGRADED).sum() == 2
    assert len(export.warnings) == 1 and "12 evaluation(s) were made by the subject model itself" in export.warnings[0]
    with caplog.at_level(logging.WARNING, logger="warmfast.report"):
        assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    assert "judged its own answers" in caplog.text
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "WARNING: " in md and "the subject model judged its own answers" in md
    assert "judged its own answers" in (tmp_path / "rep" / "report.html").read_text()
    steps = pd.read_csv(tmp_path / "rep" / "tables" / "preprocessing_steps.csv")
    ungraded = steps[steps["step"] == "ungraded: no CORRECT / INCORRECT verdict"]
    assert ungraded["removed"].sum() == 2 and set(ungraded["arm"]) == {"original", "warm"}
