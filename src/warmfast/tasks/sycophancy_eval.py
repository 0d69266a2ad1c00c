"""Reader for sycophancy-eval's answer.jsonl (Sharma et al. 2023; meg-tong/sycophancy-eval).

Each line: {"prompt": [{"type": "human", "content": ...}], "base": {"dataset": "trivia_qa" |
"truthful_qa", "question": str, "answer": [aliases] (TriviaQA), "correct_answer": str | null,
"incorrect_answer": str}, "metadata": {"prompt_template": "{question} I think ..."}}.
Every question appears once per template (4 templates); the reader keeps one Item per question,
with its correct/incorrect pair, which the warmth study very likely used (see MISSING.md s.6).

Public API:
    read_answer_jsonl(path, dataset) -> list[Item]   dataset "trivia_qa" -> task "triviaqa",
                                                     "truthful_qa" -> task "truthfulqa"
    apply_answer_pairs(items, pairs) -> list[Item]   give loader items (matched on question text)
                                                     the sycophancy-eval correct/incorrect answers
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .files import field, is_missing, read_records, text_field
from .item import Item, TaskDataError

DATASET_TASKS = {"trivia_qa": "triviaqa", "truthful_qa": "truthfulqa"}


def read_answer_jsonl(path: str | Path, dataset: str) -> list[Item]:
    """Items of one dataset, in first-appearance order. correct_answers = (correct_answer,
    *aliases); an item whose correct_answer is null keeps only the aliases (possibly none: the
    study's prompts then read "I don't think the answer is None.")."""
    if dataset not in DATASET_TASKS:
        raise TaskDataError(f"dataset must be one of {sorted(DATASET_TASKS)}, got {dataset!r}")
    path = Path(path)
    items: dict[str, Item] = {}
    templates: dict[str, list[str]] = {}
    for i, rec in enumerate(read_records(path)):
        where = f"{path} line {i + 1}"
        base = field(rec, "base", where)
        if not isinstance(base, dict):
            raise TaskDataError(f"{where}: key 'base' must be an object")
        if base.get("dataset") != dataset:
            continue
        question = text_field(base, "question", f"{where} base")
        template = (rec.get("metadata") or {}).get("prompt_template", "")
        templates.setdefault(question, []).append(template)
        if question in items:
            continue
        correct = base.get("correct_answer")
        wrong = text_field(base, "incorrect_answer", f"{where} base")
        aliases = [a for a in (base.get("answer") or []) if isinstance(a, str) and a.strip()]
        answers = ([] if is_missing(correct) else [str(correct).strip()]) + [a for a in aliases if a != correct]
        items[question] = Item(DATASET_TASKS[dataset], question, question, tuple(dict.fromkeys(answers)),
                               wrong, extra={"correct_answer": None if is_missing(correct) else correct,
                                             "incorrect_answer": wrong})
    if not items:
        raise TaskDataError(f"{path}: no records with base.dataset == {dataset!r}")
    return [it.with_(extra_update={"templates": tuple(templates[q])}) for q, it in items.items()]


def apply_answer_pairs(items: Sequence[Item], pairs: Sequence[Item]) -> list[Item]:
    """Items whose question text matches a sycophancy-eval item take its correct/incorrect pair
    (correct answer first, the loader's answers after it); others are returned unchanged."""
    by_q = {p.question: p for p in pairs}
    out = []
    for it in items:
        p = by_q.get(it.question)
        if p is None:
            out.append(it)
            continue
        answers = tuple(dict.fromkeys([*p.correct_answers, *it.correct_answers]))
        out.append(it.with_(correct_answers=answers, wrong_answer=p.wrong_answer,
                            extra_update={"wrong_source": "sycophancy_eval"}))
    return out
