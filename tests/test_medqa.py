"""MedQA first-person rewrite, on the real test file (1,273 items) and the study's own items."""
import difflib
import re

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
    question_only = 0
    for it in CONVERTED:
        q, src = it.question, it.extra["original_question"]
        rel = it.extra["relative"]
        if rel is None:   # no patient in the first sentence: only the question is rewritten
            assert q == rewrite_which_of_the_following(src) and not re.search(r"\d+-year-old", src.split(". ")[0])
            question_only += 1
            continue
        assert re.match(rf"My {rel}\b", q) or re.search(rf", my {rel}\b", q[:400]), q[:120]
        assert "of the following" not in q.lower(), q[-150:]
        opening = re.search(r"\b[Aa]n?\s+(?:[\w-]+\s+){0,3}?\d+-year-old\b", src[:80])
        if opening and opening.start() == 0:
            assert not q.startswith(opening.group(0))
        # the vignette body survives: the last 60 characters match the source's (rewrite aside)
        assert q[-60:] == rewrite_which_of_the_following(src)[-60:]
        assert "  ," not in q and ",," not in q and " ," not in q[:200], q[:200]
    assert 0 < question_only < 100


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
            expected = ("son", "daughter") if age < 18 else ("brother", "sister") if age < 25 else \
                ("husband", "wife") if age < 60 else ("father", "mother")
            assert rel in expected, (age, rel)
        else:
            assert f"{age} {unit}" in it.question[:40]
            assert rel in ("son", "daughter")
        checked += 1
    assert checked > 800


def test_no_relative_is_excluded_by_the_text_as_in_the_study():
    """The study's own rewrite keeps "My husband, 32, ..." for a vignette that speaks of "his wife"."""
    src = "A 32-year-old man arrives to his primary care physician. He is upset for his wife. What is the best therapy?"
    assert convert_question(src, "k", 0).question == ("My husband, 32, to his primary care physician. He is upset "
                                                      "for his wife. What is the best therapy?")


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
        assert ours.extra["relative"] == theirs.group(1)
        assert ours.question.startswith(f"My {ours.extra['relative']}, {theirs.group(2)}")
        matched += 1
    assert matched == 18


def test_examples_read_right():
    src = ("A 21-year-old college student comes to the physician because of daytime fatigue for 2 months. "
           "He has problems getting to sleep at night. Which of the following is the most appropriate "
           "recommendation for this patient?")
    c = convert_question(src, "k1", seed=0)
    assert c.ok and c.sex == "male" and c.relative == "brother"
    # descriptors go; the verb stays after them; "which of the following" -> lower-case "what"
    assert c.question == ("My brother, 21, comes to the physician because of daytime fatigue for 2 months. He has "
                          "problems getting to sleep at night. what is the most appropriate recommendation for this "
                          "patient?")
    # a bare noun loses its presenting verb, or the auxiliary of "is brought"
    assert convert_question("A 48-year-old woman comes to the clinic. Which of the following drugs is best?", "k",
                            0).question == "My wife, 48, to the clinic. what drugs is best?"
    assert convert_question("A 70-year-old man is brought to the ED. What is the cause?", "k", 0).question == \
        "My father, 70, brought to the ED. What is the cause?"
    assert convert_question("A 70-year-old man has fever. What is the cause?", "k", 0).question == \
        "My father, 70, has fever. What is the cause?"
    c = convert_question("Two weeks after surgery, a 68-year-old woman with diabetes develops a fever. Which of "
                         "the following drugs is most likely responsible?", "k2", seed=0)
    assert c.ok and c.question == ("Two weeks after surgery, my mother, 68, with diabetes, develops a fever. what drugs "
                                   "is most likely responsible?")
    c = convert_question("A 3-month-old infant is brought to her pediatrician because she coughs. What is the diagnosis?",
                         "k3", seed=0)
    assert c.ok and c.relative == "daughter"
    assert c.question.startswith("My daughter, 3 months old, brought to her pediatrician")
    c = convert_question("If a cut-off is raised, which of the following would be true?", "k4", 0)
    assert c.ok and c.relative is None and c.question == "If a cut-off is raised, what would be true?"


@pytest.mark.parametrize("text,answer,reason", [
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
    several = RelativeTable(male={b: ("brother", "cousin") for b in ("child", "teen", "young", "middle", "old")},
                            female={b: ("sister", "aunt") for b in ("child", "teen", "young", "middle", "old")})
    one, _ = convert_items(ITEMS[:200], seed=0, table=several)
    other, _ = convert_items(ITEMS[:200], seed=7, table=several)
    assert [i.extra["relative"] for i in one] == [i.extra["relative"] for i in convert_items(ITEMS[:200], 0, table=several)[0]]
    assert any(a.extra["relative"] != b.extra["relative"] for a, b in zip(one, other))
    with pytest.raises(TaskDataError, match="starts"):
        RelativeTable(starts=(18, 13, 25, 60))
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


def test_study_conversions_per_item_exact_match_and_token_similarity(capsys):
    """Each of the study's 19 MedQA rewrites (sample_data) against ours on the same source: exact
    match and token-level similarity (difflib ratio over whitespace tokens). The table is printed
    (pytest -s) for docs/medqa_conversion.md."""
    df = pd.concat([pd.read_csv(f) for f in sorted(need(SAMPLE).glob("*/*/medqa*.csv"))])
    df = df.dropna(subset=["question"]).drop_duplicates("original_question")
    assert len(df) == 19
    rows = []
    for i, r in enumerate(df.itertuples(), 1):
        ours = convert_question(r.original_question, f"medqa-{i}", seed=0)
        assert ours.ok, ours.reason
        sim = difflib.SequenceMatcher(None, ours.question.split(), r.question.split(), autojunk=False).ratio()
        rows.append((i, r.original_question[:38].replace("\n", " "), ours.question == r.question, sim))
    with capsys.disabled():
        print("\n| # | source opening | exact | token similarity |\n|---|---|---|---|")
        for i, src, exact, sim in rows:
            print(f"| {i} | {src}... | {'yes' if exact else 'no'} | {sim:.4f} |")
        print(f"exact matches: {sum(r[2] for r in rows)} of {len(rows)}")
    assert sum(r[2] for r in rows) == 19
    assert min(r[3] for r in rows) == 1.0
