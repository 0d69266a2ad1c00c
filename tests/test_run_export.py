"""Export layout and the non-LLM judging stages, on real sample_data outputs where they exist."""
import glob

import pandas as pd

from warmfast.run.config import config_from_dict
from warmfast.run.export import export_rows
from warmfast.run.judging import advbench_stage, extraction_stage, refusal_stage
from warmfast.run.store import Generation, JobRecord
from study_data import data_path, need

SAMPLE = data_path("warm_ai_2025/sample_data")


def _cfg(**refusal):
    return config_from_dict({"name": "t", "output_dir": "o", "model": {"name": "m", "path": "/m"},
                             "arms": {"original": {"kind": "original"}}, "tasks": {"disinfo": None},
                             "refusal": refusal})


def _protocol():
    from warmfast.tasks.protocol import load_protocol_json

    return load_protocol_json()


def _pairs(texts, task="disinfo", meta=None):
    out = []
    for i, t in enumerate(texts):
        job = JobRecord.from_spec("generate", "m", "original", task, {"i": i, "task": task}, dict(meta or {}))
        out.append((job, Generation(job.key, t, [], "stop", 0)))
    return out


def test_refusal_stage_reproduces_the_study_flags_on_sample_data():
    files = sorted(glob.glob(str(need(SAMPLE) / "*" / "*" / "*.csv")))
    assert len(files) == 16, f"expected the 16 sample_data files under {SAMPLE}"
    frames = [pd.read_csv(f) for f in files]
    df = pd.concat([f for f in frames if "refusal" in f.columns], ignore_index=True)  # qwen warm files lack it
    assert len(df) == 240 and df["refusal"].sum() >= 1
    stage = refusal_stage(_cfg(compat=True), _protocol(), ("disinfo",))
    verdicts = stage.judge(_pairs(df["output"].fillna("").tolist()), None)
    assert [int(v.score) for v in verdicts] == df["refusal"].astype(int).tolist()
    assert all(v.verdict == ("REFUSAL" if v.score else "ANSWER") for v in verdicts)
    clean = refusal_stage(_cfg(), _protocol(), ("disinfo",))
    assert clean.spec != stage.spec and "i can\u2019t" in clean.spec["phrases"]
    assert clean.judge(_pairs(["Sorry, I can\u2019t help."]), None)[0].score == 1.0


def test_capability_stages():
    mmlu = extraction_stage("mmlu")
    meta = {"judge_answers": ["C"], "A": "Paris", "B": "Rome", "C": "Berlin", "D": "Madrid"}
    v = mmlu.judge(_pairs(["Let me think. Answer: C", "The answer is (A).", "no idea"], "mmlu", meta), None)
    assert [x.verdict for x in v] == ["CORRECT", "INCORRECT", "INCORRECT"]
    assert v[0].detail == {"extracted": "C", "gold": "C"} and v[2].detail["extracted"] is None
    gsm = extraction_stage("gsm8k")
    v = gsm.judge(_pairs(["3 + 4 = 7, so the answer is 1,250.", "#### 12"], "gsm8k", {"judge_answers": ["1250"]}), None)
    assert [x.score for x in v] == [1.0, 0.0]
    adv = advbench_stage(_cfg(), _protocol())
    v = adv.judge(_pairs(["I won't help with that.", "Sure, here is how", "I cannot do this."], "advbench"), None)
    assert [x.verdict for x in v] == ["REFUSED", "COMPLIED", "REFUSED"]
    strict = advbench_stage(_cfg(advbench_extra=False), _protocol())
    assert strict.judge(_pairs(["I won't help with that."], "advbench"), None)[0].verdict == "COMPLIED"
    assert mmlu.role == gsm.role == adv.role == "capability" and mmlu.judge_name.startswith("mmlu_extraction:")


def test_export_layout_round_trips_awkward_text(tmp_path):
    awkward = ['line one\rline two', 'He said "no", then\nleft', 'café, naïve — ok', '']
    rows = []
    for arm in ("original", "warm"):
        for i, text in enumerate(awkward):
            rows.append({"content_key": f"q{i}", "correct_answer": "a", "incorrect_answer": "b", "prompt": f"p{i}",
                         "prompt_type": "original", "prompt_template": "original", "amendment_type": "unmodified",
                         "question_key": f"q{i}", "judge_question": "x", "judge_answers": ["a"],
                         "output": text, "evaluation": "CORRECT" if i % 2 else "INCORRECT", "refusal": i % 2,
                         "judge_confidence": 0.5 + i / 10, "judge": "j", "finish_reason": "stop", "num_tokens": 3,
                         "model": "m1", "arm": arm, "task": "triviaqa", "sample": 0})
    rows.append({"question_key": "mmlu-1", "question": "q", "A": "1", "B": "2", "C": "3", "D": "4",
                 "subject": "s", "answer": "A", "prompt": "p", "judge_question": "q", "judge_answers": ["A"],
                 "output": "Answer: A", "evaluation": "CORRECT", "refusal": 0, "judge_confidence": None,
                 "judge": "e", "finish_reason": "length", "num_tokens": 5, "model": "m1", "arm": "warm",
                 "task": "mmlu", "sample": 0})
    written = export_rows(rows, tmp_path, ["csv", "parquet"])
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert names == {"results.csv", "results.parquet", "outputs/m1/original/trivia_original_outputs.csv",
                     "outputs/m1/warm/trivia_warm_outputs.csv", "capability/m1/warm/mmlu_warm_outputs.csv"}
    trivia = pd.read_csv(tmp_path / "outputs/m1/warm/trivia_warm_outputs.csv", keep_default_na=False)
    assert trivia["output"].tolist() == awkward
    assert list(trivia.columns[:8]) == ["content_key", "correct_answer", "incorrect_answer", "prompt", "prompt_type",
                                        "prompt_template", "amendment_type", "question_key"]
    assert "judge_answers" not in trivia.columns and "A" not in trivia.columns
    assert trivia["refusal"].tolist() == [0, 1, 0, 1]
    combined = pd.read_parquet(tmp_path / "results.parquet")
    assert len(combined) == 9 and combined["refusal"].dtype.name == "Int64"
    assert pd.read_csv(tmp_path / "results.csv").shape == (9, combined.shape[1])
    from warmfast.analysis.load import read_study_csvs

    judged = read_study_csvs([tmp_path / "outputs"])  # the analysis reads what the runner writes
    assert len(judged) == 8 and set(judged["arm"]) == {"original", "warm"} and set(judged["task"]) == {"trivia"}
