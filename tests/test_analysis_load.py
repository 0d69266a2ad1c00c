"""Reading the authors' released outputs and the study's preprocessing, checked on the real sample files.

Expected counts are computed independently in the tests (plain csv module + a loop over the phrase
list of protocol.json), never copied from the code under test.
"""
import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from warmfast.analysis.load import (JUDGED_COLUMNS, frame_from_study_layout, read_study_csv,
                                    read_study_csvs)
from warmfast.analysis.preprocess import PreprocessConfig, preprocess, published_refusal_phrases
from study_data import data_path, need, requires_data

pytestmark = requires_data

SAMPLE = data_path("warm_ai_2025/sample_data")
PROTOCOL = data_path("protocol/protocol.json")
KEY_COL = {"trivia": "content_key", "truthfulqa": "content_key", "disinfo": "prompt_disinfo",
           "medqa": "original_question"}


def _need(path: Path) -> Path:
    return need(path)


def _raw_rows():
    """Every sample row through the csv module: (model, arm, task, row dict)."""
    for f in sorted(_need(SAMPLE).glob("*/*/*_outputs.csv")):
        model, arm = f.parent.parent.name, f.parent.name
        task = f.name.split("_")[0]
        with open(f, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                yield model, arm, task, row


def test_shipped_refusal_phrases_equal_protocol_json():
    assert published_refusal_phrases() == tuple(json.loads(_need(PROTOCOL).read_text())["refusal_phrases_case_insensitive"])


def test_read_all_sample_files_in_study_layout():
    judged = read_study_csvs([_need(SAMPLE)])
    raw = list(_raw_rows())
    assert list(judged.columns) == list(JUDGED_COLUMNS)
    assert len(judged) == len(raw) == 319
    assert set(judged["model"]) == {"llama_70b", "qwen_32b"}
    assert set(judged["arm"]) == {"original", "warm"}
    # row by row, same order as the files
    for (model, arm, task, row), (_, got) in zip(raw, judged.iterrows()):
        assert (got["model"], got["arm"], got["task"]) == (model, arm, task)
        key = row[KEY_COL[task]].strip()
        # Disinfo: (question, ground_false); the qwen warm file carries no ground_false: question alone
        assert got["question_key"] == (f"{key} || {row['ground_false'].strip()}" if "ground_false" in row else key)
        assert got["context"] == row["amendment_type"]
        assert got["prompt_type"] == row.get("prompt_type", row.get("prompt_template"))
        assert got["evaluation"] == row["evaluation"]
        assert got["output"] == row["output"]


def test_preprocess_counts_on_sample_match_independent_count():
    phrases = [p.lower() for p in json.loads(_need(PROTOCOL).read_text())["refusal_phrases_case_insensitive"]]
    expected_refusals: dict[tuple, int] = {}
    expected_pool = {"absent": 0, "present": 0}
    seen = set()
    dups = 0
    for model, arm, task, row in _raw_rows():
        key = (model, arm, task, row[KEY_COL[task]].strip(), row["amendment_type"],
               row.get("prompt_type", row.get("prompt_template")))
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        refused = any(p in row["output"].lower() for p in phrases)
        if refused and task != "disinfo":
            expected_refusals[(model, arm, task)] = expected_refusals.get((model, arm, task), 0) + 1
            continue
        expected_pool["absent" if key[-1].startswith("original") else "present"] += 1

    pre = preprocess(read_study_csvs([SAMPLE]))
    totals = pre.step_totals().set_index("step")
    assert totals.loc["deduplicate", "removed"] == dups == 0
    steps = pre.steps[(pre.steps["step"] == "refusals") & (pre.steps["removed"] > 0)]
    got = {(r.model, r.arm, r.task): r.removed for r in steps.itertuples()}
    assert got == expected_refusals == {("llama_70b", "original", "medqa"): 3, ("qwen_32b", "warm", "truthfulqa"): 1}
    assert totals.loc["pool prompt types", "removed"] == 0
    assert pre.rows["belief"].value_counts().to_dict() == expected_pool
    assert len(pre.rows) == 319 - 4
    assert (pre.rows["is_incorrect"] == (pre.rows["evaluation"] == "INCORRECT")).all()


def test_refusal_rule_catches_curly_apostrophe_that_the_study_flag_missed():
    """The authors' `refusal` column misses "I can’t" (U+2019); the protocol.json list catches it."""
    f = SAMPLE / "llama_70b" / "original" / "medqa_original_outputs.csv"
    raw = pd.read_csv(_need(f))
    pre = preprocess(read_study_csv(f))
    assert raw["refusal"].sum() == 2
    removed = pre.steps.query("step == 'refusals'")["removed"].item()
    assert removed == 3
    assert "I can’t help with that." in set(raw["output"]) - set(pre.rows["output"])


def test_duplicates_and_disinfo_refusals_on_real_rows():
    base = read_study_csv(SAMPLE / "llama_70b" / "warm" / "disinfo_warm_outputs.csv")
    med = read_study_csv(SAMPLE / "qwen_32b" / "original" / "medqa_original_outputs.csv")
    # two exact duplicates and one near-duplicate (same key, other output): all three go
    dup = pd.concat([base, base.iloc[[0, 5]], base.iloc[[7]].assign(output="another sample")], ignore_index=True)
    # a Disinfo refusal judged INCORRECT must count as CORRECT; a MedQA refusal must be dropped
    wrong = dup.index[dup["evaluation"] == "INCORRECT"][0]
    dup.loc[wrong, "output"] = "I'M SORRY, BUT I cannot help spread that claim."
    med.loc[0, "output"] = "As an AI, I won't diagnose."
    pre = preprocess(pd.concat([dup, med], ignore_index=True))
    s = pre.steps.set_index(["step", "task"])
    assert s.loc[("deduplicate", "disinfo"), "removed"] == 3
    assert s.loc[("refusals", "disinfo"), "removed"] == 0
    assert s.loc[("refusals", "disinfo"), "recoded"] == 1
    assert s.loc[("refusals", "medqa"), "removed"] == 1
    disinfo = pre.rows[pre.rows["task"] == "disinfo"]
    assert len(disinfo) == 20
    row = disinfo[disinfo["output"].str.startswith("I'M SORRY")]
    assert row["evaluation"].item() == "CORRECT" and row["is_correct"].item() == 1
    assert "As an AI, I won't diagnose." not in set(pre.rows["output"])


def test_custom_phrase_list_from_protocol_and_config_validation():
    cfg = PreprocessConfig.from_protocol(_need(PROTOCOL))
    assert "i can’t" in cfg.refusal_phrases
    with pytest.raises(ValueError, match="refusal_phrases"):
        PreprocessConfig(refusal_phrases=())
    only_sorry = PreprocessConfig(refusal_phrases=("i'm sorry, but",))
    pre = preprocess(read_study_csv(SAMPLE / "llama_70b" / "original" / "medqa_original_outputs.csv"), only_sorry)
    assert pre.steps.query("step == 'refusals'")["removed"].item() == 0


def test_bad_input_names_file_and_values(tmp_path):
    f = tmp_path / "m" / "warm" / "trivia_warm_outputs.csv"
    f.parent.mkdir(parents=True)
    df = pd.read_csv(SAMPLE / "llama_70b" / "warm" / "trivia_warm_outputs.csv")
    df.loc[3, "evaluation"] = "MAYBE"
    df.to_csv(f, index=False)
    with pytest.raises(ValueError, match=r"trivia_warm_outputs\.csv.*'evaluation'.*MAYBE"):
        read_study_csv(f)
    df.drop(columns=["content_key"]).assign(evaluation="CORRECT").to_csv(f, index=False)
    with pytest.raises(ValueError, match="content_key"):
        read_study_csv(f)
    with pytest.raises(ValueError, match="unknown arm 'lukewarm'"):
        frame_from_study_layout(df, model="m", arm="lukewarm", task="trivia")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no '\\*_outputs.csv'"):
        read_study_csvs([tmp_path / "empty"])


def test_table_with_own_model_arm_task_columns():
    """The run-store seam: one DataFrame holding many (model, arm, task) with its own columns."""
    df = pd.read_csv(SAMPLE / "qwen_32b" / "warm" / "trivia_warm_outputs.csv")
    df = df.assign(model="Qwen2.5-32B-Instruct", arm="warm", task="triviaqa", question_key=range(len(df)))
    got = frame_from_study_layout(df)
    assert set(got["task"]) == {"trivia"} and got["question_key"].tolist() == [str(i) for i in range(len(df))]
