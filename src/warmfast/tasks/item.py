"""The one record every task loader returns, and the task names (the one task registry).

Public API:
    Item                  frozen dataclass: task, key, question, correct_answers, wrong_answer, extra
    TASKS                 the task names warmfast knows
    GRID_TASKS            the four tasks that get the 28-prompt grid
    CAPABILITY_TASKS      the others: MMLU, GSM8K (answer extraction), AdvBench (refusal)
    TaskDataError         raised for a malformed or missing data file (names the file and key)
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

from warmfast.errors import WarmfastError

TASKS = ("triviaqa", "truthfulqa", "disinfo", "medqa", "mmlu", "gsm8k", "advbench")
GRID_TASKS = ("triviaqa", "truthfulqa", "disinfo", "medqa")
CAPABILITY_TASKS = tuple(t for t in TASKS if t not in GRID_TASKS)


class TaskDataError(WarmfastError, ValueError):
    """A task file is missing, or a record in it lacks a key or holds a bad value."""


@dataclass(frozen=True)
class Item:
    """One evaluation question.

    task:            one of TASKS.
    key:             the question key, unique within the task (the study's `content_key` for
                     TriviaQA / TruthfulQA is the question text; MASK uses `task_id`; MedQA and
                     MMLU / GSM8K / AdvBench use "<split>-<row>" style ids made by the loader).
    question:        the text put in front of the model (for MedQA: the first-person rewrite once
                     `medqa.convert_items` has run; the source text before that).
    correct_answers: reference answer(s); the first is the canonical one used in "I don't think
                     the answer is X" prompts. Empty only for AdvBench (the right behaviour is a
                     refusal) and for study rows whose correct answer is missing.
    wrong_answer:    the answer a user asserts in the belief conditions; None until assigned
                     (see `wrong.py`) and for tasks without belief conditions.
    extra:           the task's own columns (read-only mapping), e.g. MedQA `options`,
                     MMLU `choices` / `answer_letter`, GSM8K `solution`, MASK `proposition`.
    """

    task: str
    key: str
    question: str
    correct_answers: tuple[str, ...]
    wrong_answer: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise TaskDataError(f"Item.task={self.task!r} is not one of {TASKS}")
        if not isinstance(self.key, str) or not self.key:
            raise TaskDataError(f"Item.key must be a non-empty string, got {self.key!r} ({self.task})")
        if not isinstance(self.question, str) or not self.question.strip():
            raise TaskDataError(f"Item {self.task}/{self.key}: empty question")
        answers = tuple(self.correct_answers)
        for a in answers:
            if not isinstance(a, str) or not a.strip():
                raise TaskDataError(
                    f"Item {self.task}/{self.key}: correct_answers holds an empty/non-string value {a!r}")
        object.__setattr__(self, "correct_answers", answers)
        if self.wrong_answer is not None:
            if not isinstance(self.wrong_answer, str) or not self.wrong_answer.strip():
                raise TaskDataError(f"Item {self.task}/{self.key}: bad wrong_answer {self.wrong_answer!r}")
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    def __reduce__(self):  # mappingproxy does not pickle; rebuild through __init__ (worker processes)
        return (Item, (self.task, self.key, self.question, self.correct_answers, self.wrong_answer, dict(self.extra)))

    @property
    def right_answer(self) -> str | None:
        """The canonical correct answer (first of correct_answers), None if there is none."""
        return self.correct_answers[0] if self.correct_answers else None

    def with_(self, **changes: Any) -> "Item":
        """A copy with fields replaced (extra is merged when given as `extra_update=`)."""
        upd = changes.pop("extra_update", None)
        if upd:
            changes["extra"] = {**self.extra, **upd}
        return replace(self, **changes)
