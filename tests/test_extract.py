"""MMLU letter and GSM8K number extraction on many realistic answer shapes."""
import pytest

from warmfast.judge.extract import (RULES_VERSION, extract_gsm8k_number, extract_mmlu_letter, gsm8k_correct,
                                    mmlu_correct, normalize_number, numbers_equal)
from warmfast.keys import content_key
from warmfast.tasks.loaders import load_gsm8k, load_mmlu

CHOICES = ("Paris", "London", "Berlin", "Madrid")


@pytest.mark.parametrize("text,expected", [
    ("B", "B"),
    ("B.", "B"),
    ("(C)", "C"),
    ("D) Madrid", "D"),
    ("**A**", "A"),
    ("**Answer: C**", "C"),
    ("A. Paris is the capital of France.", "A"),
    ("B: London", "B"),
    ("[D]", "D"),
    ("The answer is B.", "B"),
    ("The correct answer is (C) Berlin.", "C"),
    ("The correct answer is: D", "D"),
    ("Answer: A", "A"),
    ("answer - C", "C"),
    ("Final answer: B", "B"),
    ("Let me think. Paris is in France, London in England... So the answer is A.", "A"),
    ("I would choose C because Berlin is the capital of Germany.", "C"),
    ("I'd go with (D).", "D"),
    ("The best option is B, since London is in the UK.", "B"),
    ("Option A is wrong and option C is wrong; the answer is D.", "D"),
    ("Looking at the choices, (B) is correct.", "B"),
    ("The answer to this question is C.", "C"),
    ("It is Madrid.", "D"),  # choice text, once
    ("A man walked into a bar. The answer is unclear.", None),
    ("I am not sure which one it is.", None),
    ("Both Paris and London are capitals.", None),  # two choice texts: ambiguous
    ("", None),
    (None, None),
])
def test_mmlu_letter_shapes(text, expected):
    assert extract_mmlu_letter(text, CHOICES) == expected


def test_mmlu_without_choices_and_other_letters():
    assert extract_mmlu_letter("It is Madrid.") is None
    assert extract_mmlu_letter("The answer is E.", letters="ABCDE") == "E"
    assert extract_mmlu_letter("The answer is E.") is None
    assert mmlu_correct("The answer is (B).", "B") and not mmlu_correct("The answer is (B).", "C")


@pytest.mark.parametrize("text,expected", [
    ("Janet sells 9 eggs and makes 9 * 2 = $18.\n#### 18", "18"),
    ("The answer is 42.", "42"),
    ("So she makes $1,234.50 in total.", "1234.5"),
    ("Answer: -7", "-7"),
    ("Therefore, the final answer is \\boxed{72}.", "72"),
    ("We get \\boxed{\\$1,000}", "1000"),
    ("First 3 + 4 = 7, then 7 * 2 = 14. The total is 14 apples.", "14"),
    ("The answer is 18. I hope this helps, and have a wonderful day!", "18"),
    ("There are 5 boxes with 12 each, so 5 * 12 = 60", "60"),
    ("**Final answer: 3.75**", "3.75"),
    ("It takes 2.50 hours.", "2.5"),
    ("The discount is 25%.", "25"),
    ("Total = 1,000,000", "1000000"),
    ("The result is approximately 33.33", "33.33"),
    ("I don't know.", None),
    (None, None),
])
def test_gsm8k_number_shapes(text, expected):
    assert extract_gsm8k_number(text) == expected


def test_number_normalisation_and_equality():
    assert normalize_number("$1,000.00") == "1000"
    assert normalize_number("-3.50") == "-3.5"
    assert normalize_number("abc") is None
    assert numbers_equal("18.0", "18") and not numbers_equal("18.5", "18") and not numbers_equal(None, "1")
    assert gsm8k_correct("She makes $18 every day.", "18")
    assert not gsm8k_correct("She makes $19 every day.", "18")


def test_extraction_on_real_items_with_gold_written_answers():
    """GSM8K gold solutions end in '#### N': extraction recovers the gold on all 1,319 items;
    MMLU: an answer written as 'The answer is X. <choice text>' recovers X on every item."""
    for it in load_gsm8k():
        assert gsm8k_correct(it.extra["solution"], it.right_answer), it.key
        assert gsm8k_correct(it.extra["solution"].rsplit("####", 1)[0] + f" The answer is {it.right_answer}.",
                             it.right_answer), it.key
    for it in load_mmlu()[::7]:
        gold = it.right_answer
        text = f"The answer is {gold}. {it.extra['choices']['ABCD'.index(gold)]}"
        assert extract_mmlu_letter(text, it.extra["choices"]) == gold, it.key


def _rules_output() -> list:
    """What the rules make of every answer shape above, and of the shipped items' gold solutions
    and their last lines (MMLU letters with and without the choices; GSM8K numbers)."""
    mmlu = [t for t, _ in test_mmlu_letter_shapes.pytestmark[0].args[1]]
    gsm8k = [t for t, _ in test_gsm8k_number_shapes.pytestmark[0].args[1]]
    solutions = [it.extra["solution"] for it in load_gsm8k()[::11]]
    texts = mmlu + gsm8k + solutions + [s.splitlines()[-2] for s in solutions if s.count("\n") > 1]
    return [[extract_mmlu_letter(t, CHOICES), extract_mmlu_letter(t), extract_gsm8k_number(t)] for t in texts]


# content_key of _rules_output() under each RULES_VERSION
PINNED_RULES = {1: "10985ef4"}


def test_rules_version_pins_the_rules():
    """Stored extraction verdicts are keyed by RULES_VERSION (run/judging.py), not by the source
    text: a change to the rules that changes any output here must raise RULES_VERSION (and add its
    fingerprint), or old verdicts would pass for new ones."""
    got = content_key({"outputs": _rules_output()})[:8]
    assert got == PINNED_RULES.get(RULES_VERSION), (
        f"the extraction rules give other outputs than RULES_VERSION {RULES_VERSION} did (fingerprint {got}): "
        "if the change is meant, raise RULES_VERSION in judge/extract.py and pin the new fingerprint")
