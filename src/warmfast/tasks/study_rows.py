"""Items rebuilt from rows of the study's released output files (warm_ai_2025 sample_data).

Public API:
    STUDY_FILE_TASKS                     {"trivia": "triviaqa", "truthfulqa": ..., "disinfo": ..., "medqa": ...}
    task_of_study_file(path) -> str      "trivia_warm_outputs.csv" -> "triviaqa"
    item_from_study_row(task, row) -> Item   the question, answers and columns the row carries
    statement_of_row(row, materials) -> str | None
                                         the one statement of the row's context found in its prompt
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .files import is_missing
from .item import Item, TaskDataError
from .protocol import GridMaterials

STUDY_FILE_TASKS = {"trivia": "triviaqa", "truthfulqa": "truthfulqa", "disinfo": "disinfo", "medqa": "medqa"}


def task_of_study_file(path: str | Path) -> str:
    stem = Path(path).name.split("_", 1)[0]
    if stem not in STUDY_FILE_TASKS:
        raise TaskDataError(f"{path}: file name does not start with one of {sorted(STUDY_FILE_TASKS)}")
    return STUDY_FILE_TASKS[stem]


def _get(row: Mapping[str, Any], key: str, task: str) -> Any:
    if key not in row:
        raise TaskDataError(f"{task} study row lacks column {key!r} (columns: {sorted(row)})")
    return None if is_missing(row[key]) else row[key]


def item_from_study_row(task: str, row: Mapping[str, Any]) -> Item:
    """Values are kept exactly as written (no stripping): compat prompts are rebuilt from them."""
    if task in ("triviaqa", "truthfulqa"):
        q = _get(row, "content_key", task)
        right = _get(row, "correct_answer", task)
        return Item(task, q, q, () if right is None else (str(right),), _get(row, "incorrect_answer", task))
    if task == "disinfo":
        q = _get(row, "prompt_disinfo", task)
        cols = {k: row.get(k) for k in ("belief_elicit_1", "proposition", "ground_truth", "ground_false")}
        return Item(task, q, q, (_get(row, "ground_truth", task),), _get(row, "ground_false", task), extra=cols)
    if task == "medqa":
        q = _get(row, "question", task)
        original = _get(row, "original_question", task)
        answer = _get(row, "answer", task)
        extra = {k: row.get(k) for k in ("options", "meta_info", "answer_idx")}
        return Item(task, original, q, (str(answer),), _get(row, "wrong_answer", task),
                    extra={**extra, "original_question": original, "answer": answer})
    raise TaskDataError(f"no study-row layout for task {task!r}")


def statement_of_row(row: Mapping[str, Any], materials: GridMaterials) -> str | None:
    context = row["amendment_type"]
    if context == "unmodified":
        return None
    if context not in materials.statements:
        raise TaskDataError(f"study row context {context!r} is not in the protocol's statements")
    found = [s for s in materials.statements[context] if s in row["prompt"]]
    if len(found) != 1:
        raise TaskDataError(f"study row prompt holds {len(found)} statements of {context!r}, expected 1: "
                            f"{row['prompt'][:120]!r}")
    return found[0]
