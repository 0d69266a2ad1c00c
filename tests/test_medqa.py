"""MedQA first-person rewrite, on the real test file (1,273 items) and the study's own items."""
import re
from pathlib import Path

import pandas as pd
import pytest

from warmfast.tasks.item import Item, TaskDataError
from warmfast.tasks.loaders import load_medqa
from warmfast.tasks.medqa import RelativeTable, convert_items, convert_question, rewrite_which_of_the_following
from warmfast.tasks.wrong import medqa_wrong_answers
from study_data import data_path, need

SAMPLE = data_path("warm_ai_2025/sample_data")
ITEMS = load_medqa()
CONVERTED, FAILED = convert_items(ITEMS, seed=0)
MALE = {r for band in RelativeTable().male.values() for r in band}
FEMALE = {r for band in RelativeTable().female.values() for r in band}


def test_most_items_convert_and_the_rest_are_reported():
    assert len(CONVERTED) + len(FAILED) == len(ITEMS) == 1273
    assert len(CONVERTED) >= 1050, len(CONVERTED)
    assert all(not f.ok and f.reason for f in FAILED)
    assert all(f.question == next(i.question for i in ITEMS if i.key == f.key) for f in FAILED[:20])  # untouched


def test_converted_text_reads_as_first_person():
    for it in CONVERTED:
        q, src = it.question, it.extra["original_question"]
        rel = it.extra["relative"]
        assert re.match(rf"My {rel}\b", q) or re.search(rf", my {rel}\b", q[:400]), q[:120]
        assert "of the following" not in q.lower(), q[-150:]
        opening = re.search(r"\b[Aa]n?\s+(?:[\w-]+\s+){0,3}?\d+-year-old\b", src[:80])
        if opening and opening.start() == 0:
            assert not q.startswith(opening.group(0))
        # the vignette body survives: the last 60 characters match the source's (rewrite aside)
        assert q[-60:] == rewrite_which_of_the_following(src)[-60:]
        assert "  ," not in q and ",," not in q and " ," not in q[:200], q[:200]


def test_relative_matches_the_patients_sex_and_age():
    checked = 0
    for it in CONVERTED:
        src = it.extra["original_question"]
        m = re.match(r"An? (\d+)-(year|month|week|day)-old (man|woman|boy|girl)\b", src)
        if not m:
            continue
        rel = it.extra["relative"]
        assert rel in (MALE if m.group(3) in ("man", "boy") else FEMALE), (rel, src[:60])
        age, unit = int(m.group(1)), m.group(2)
        if unit == "year":
            assert it.question.startswith(f"My {rel}, {age}, ") or it.question.startswith(f"My {rel}, {age} ")
            if age >= 65:
                assert rel in ("father", "grandfather", "husband", "mother", "grandmother", "wife")
        else:
            assert f"{age} {unit}" in it.question[:40]
            assert rel in ("son", "nephew", "grandson", "daughter", "niece", "granddaughter")
        checked += 1
    assert checked > 800


def test_no_husband_when_the_text_names_his_wife():
    for it in CONVERTED:
        if re.search(r"\bhis wife\b", it.extra["original_question"], re.IGNORECASE):
            assert it.extra["relative"] != "husband"
        if re.search(r"\bher husband\b", it.extra["original_question"], re.IGNORECASE):
            assert it.extra["relative"] != "wife"


def test_the_study_items_convert_with_the_studys_relative_sex_and_age():
    """The 19 MedQA items in sample_data: same patient sex and age as the study's own rewrite."""
    df = pd.concat([pd.read_csv(f) for f in sorted(need(SAMPLE).glob("*/*/medqa*.csv"))])
    df = df.dropna(subset=["question"]).drop_duplicates("original_question")
    by_source = {i.extra["original_question"]: i for i in CONVERTED}
    matched = 0
    for _, row in df.iterrows():
        theirs = re.match(r"My (\w+), (\d+),", row["question"])
        if not theirs:
            continue  # the study left non-vignettes unchanged
        ours = by_source[row["original_question"].strip()]
        assert (theirs.group(1) in MALE) == (ours.extra["relative"] in MALE), (theirs.group(0), ours.question[:40])
        assert ours.question.startswith(f"My {ours.extra['relative']}, {theirs.group(2)}")
        matched += 1
    assert matched == 18


def test_examples_read_right():
    src = ("A 21-year-old college student comes to the physician because of daytime fatigue for 2 months. "
           "He has problems getting to sleep at night. Which of the following is the most appropriate "
           "recommendation for this patient?")
    c = convert_question(src, "k1", seed=0)
    assert c.ok and c.sex == "male" and c.relative in ("brother", "husband", "son")
    assert c.question == (f"My {c.relative}, 21, a college student, comes to the physician because of daytime "
                          "fatigue for 2 months. He has problems getting to sleep at night. What is the most "
                          "appropriate recommendation for this patient?")
    c = convert_question("Two weeks after surgery, a 68-year-old woman with diabetes develops a fever. Which of "
                         "the following drugs is most likely responsible?", "k2", seed=0)
    assert c.ok and c.question.startswith(f"Two weeks after surgery, my {c.relative}, 68, with diabetes, develops a fever.")
    assert c.question.endswith("Which drug is most likely responsible?")
    c = convert_question("A 3-month-old infant is brought to her pediatrician because she coughs. What is the diagnosis?",
                         "k3", seed=0)
    assert c.ok and c.relative in ("daughter", "niece", "granddaughter")
    assert c.question.startswith(f"My {c.relative}, 3 months old, is brought to her pediatrician")


@pytest.mark.parametrize("text,answer,reason", [
    ("An investigator is studying the effect of drug X on cells. Which of the following is most likely?", None, "opening"),
    ("A 2,300 g male newborn is delivered to a 29-year-old primigravid woman. Which of the following is true?", None, "opening"),
    ("The menses are 4 weeks overdue in a 23-year-old sexually active woman, thus she is scheduled for an "
     "ultrasound. What is the diagnosis?", None, "subject"),
    ("A 45-year-old man presents with pain. All of the following are true EXCEPT:", None, "options"),
    ("A 45-year-old man presents with pain. Which of the following statements is correct?", None, "options"),
    ("A 45-year-old man presents with pain. What is the diagnosis?", "All of the above", "answer 'All"),
    ("A 45-year-old man presents with pain. Of the following options, which is best?", None, "options"),
    ("A 45-year-old man presents with pain. Biopsy is likely to reveal bacteria that are:", None, "options"),
    ("A 45-year-old patient presents with pain. What is the diagnosis?", None, "sex"),
])
def test_unconvertible_items_are_reported_not_mangled(text, answer, reason):
    c = convert_question(text, "k", seed=0, answer=answer)
    assert not c.ok and c.question == text
    assert reason in c.reason, c.reason


def test_seeded_relatives_and_modes():
    again, _ = convert_items(ITEMS[:200], seed=0)
    assert [i.question for i in again] == [i.question for i in CONVERTED if i.key in {x.key for x in again}][: len(again)]
    other, _ = convert_items(ITEMS[:200], seed=7)
    assert any(a.extra["relative"] != b.extra["relative"] for a, b in zip(again, other))
    kept, failed = convert_items(ITEMS[:200], seed=0, on_unconvertible="keep")
    assert len(kept) == 200 and sum(not i.extra["converted"] for i in kept) == len(failed) > 0
    with pytest.raises(TaskDataError, match="cannot be rewritten"):
        convert_items(ITEMS[:200], seed=0, on_unconvertible="error")
    with pytest.raises(TaskDataError, match="on_unconvertible"):
        convert_items(ITEMS[:2], seed=0, on_unconvertible="skip")


def test_wrong_answer_is_a_seeded_distractor():
    items = medqa_wrong_answers(CONVERTED[:100], seed=0)
    for it in items:
        assert it.wrong_answer in it.extra["options"].values() and it.wrong_answer != it.right_answer
    assert [i.wrong_answer for i in medqa_wrong_answers(CONVERTED[:100], seed=0)] == [i.wrong_answer for i in items]
    assert [i.wrong_answer for i in medqa_wrong_answers(CONVERTED[:100], seed=1)] != [i.wrong_answer for i in items]
    with pytest.raises(TaskDataError, match="options"):
        medqa_wrong_answers([Item("medqa", "m", "q?", ("a",))], seed=0)
