"""Answer extraction for the capability checks (PROTOCOL section 5): the MMLU letter and the
GSM8K final number, from free-text model answers.

MMLU, in order (the first rule that finds a letter wins; within a rule the LAST match wins,
since models state their final choice at the end):
  1. an explicit statement: "answer is (B)", "Answer: B", "correct option is **C**",
     "final answer: D", "I would choose B", "I'd go with (A)"
  2. the answer opens with the letter: "B", "B.", "(B)", "B)", "**B**", "B: text", "[B]"
  3. "option B" / "choice (C)" / "(C) is correct"
  4. the text of exactly one choice appears in the answer (when choices are given)
  5. exactly one distinct standalone letter in parentheses or before ")" / "." / ":"
  else None.
GSM8K: "#### N", then the last \\boxed{N}, then the last "answer is N" / "Answer: N" /
"final answer N" / "= N" closing the text, then the last number in the text. Numbers may carry
"$", thousands commas, a trailing "%" or unit, and "." decimals; they are normalised ("1,000.00"
-> "1000", "-3.50" -> "-3.5").

Public API:
    extract_mmlu_letter(text, choices=None, letters="ABCD") -> str | None
    extract_gsm8k_number(text) -> str | None          normalised number string
    normalize_number(text) -> str | None
    numbers_equal(a, b, tol=1e-6) -> bool
    mmlu_correct(text, gold_letter, choices=None) -> bool
    gsm8k_correct(text, gold) -> bool
    RULES_VERSION                                     part of every stored extraction verdict's key

A change to these rules that can change any verdict must raise RULES_VERSION (tests/test_extract.py
pins the rules' output on a fixed set of answers per version): stored verdicts are then graded
again, while a refactoring that changes no verdict keeps them.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Sequence

RULES_VERSION = 1

_NUM = r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"


def _letter_re(letters: str) -> str:
    return f"[{letters}]"


def extract_mmlu_letter(text: str | None, choices: Sequence[str] | None = None, letters: str = "ABCD") -> str | None:
    if not isinstance(text, str) or not text.strip():
        return None
    L = _letter_re(letters)
    t = text.replace("*", "").replace("\\(", "(").replace("\\)", ")")
    explicit = re.findall(
        rf"(?:answer|option|choice)(?:\s+to\s+(?:this|the)\s+question)?\s*(?:is|would be|should be|must be|will be)?"
        rf"\s*[:=\-]?\s*(?:option|choice|letter)?\s*[\(\[]?({L})(?![A-Za-z])"
        rf"|(?:I would|I'd|I will|I'll|I)\s+(?:choose|pick|select|go with)\s+(?:option|choice)?\s*[\(\[]?({L})(?![A-Za-z])",
        t, flags=re.IGNORECASE)
    found = [a or b for a, b in explicit if (a or b).upper() in letters]
    found = [f for f in found if f.isupper()]  # capitals only: "the answer is a ..." is prose
    if found:
        return found[-1]
    m = re.match(rf"\s*[\(\[]?({L})(?:[\)\]\.:,]|\s*$|\s+[-–]|\s+\S)", t)
    if m and not re.match(rf"\s*{m.group(1)}\s+[a-z]", t):  # "A man ..." is prose, "A) text" / "B. text" is not
        return m.group(1)
    mentions = re.findall(rf"(?:option|choice)\s*[\(\[]?({L})\b|\(({L})\)\s+is\s+(?:the\s+)?correct", t, flags=re.IGNORECASE)
    mentions = [a or b for a, b in mentions if (a or b) in letters]
    if mentions:
        return mentions[-1]
    if choices:
        low = t.lower()
        hits = {letters[i] for i, c in enumerate(choices) if len(c.strip()) > 2 and c.strip().lower() in low}
        if len(hits) == 1:
            return hits.pop()
    standalone = set(re.findall(rf"\(({L})\)|(?<![A-Za-z])({L})(?=[\)\.:](?:\s|$))", t))
    flat = {a or b for a, b in standalone}
    if len(flat) == 1:
        return flat.pop()
    return None


def normalize_number(text: str | None) -> str | None:
    """'$1,000.00' -> '1000'; '-3.50' -> '-3.5'; '75%' -> '75'; not a number -> None."""
    if not isinstance(text, str):
        return None
    s = text.strip().replace("$", "").replace(",", "").replace(" ", "").rstrip("%.")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if d == d.to_integral_value():
        return str(d.to_integral_value())
    return format(d.normalize(), "f")


def extract_gsm8k_number(text: str | None) -> str | None:
    if not isinstance(text, str) or not text.strip():
        return None
    t = text.replace("**", "")
    m = re.search(rf"####\s*({_NUM})", t)
    if m:
        return normalize_number(m.group(1))
    boxed = re.findall(rf"\\boxed\{{\s*\\?\$?\s*({_NUM})", t)
    if boxed:
        return normalize_number(boxed[-1])
    stated = re.findall(rf"(?:answer|total|result)\s*(?:is|:|=|would be|will be)?\s*:?\s*(?:approximately\s+)?({_NUM})", t,
                        flags=re.IGNORECASE)
    if stated:
        return normalize_number(stated[-1])
    allnums = re.findall(_NUM, t)
    return normalize_number(allnums[-1]) if allnums else None


def numbers_equal(a: str | None, b: str | None, tol: float = 1e-6) -> bool:
    na, nb = normalize_number(a) if a is not None else None, normalize_number(b) if b is not None else None
    if na is None or nb is None:
        return False
    return abs(Decimal(na) - Decimal(nb)) <= Decimal(str(tol))


def mmlu_correct(text: str | None, gold_letter: str, choices: Sequence[str] | None = None) -> bool:
    return extract_mmlu_letter(text, choices) == gold_letter


def gsm8k_correct(text: str | None, gold: str) -> bool:
    return numbers_equal(extract_gsm8k_number(text), gold)
