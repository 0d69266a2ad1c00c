"""Task loaders: files from ../shared/data, the shipped package data, or Hugging Face hub layouts.

Every loader returns list[Item] (see item.py) in file order and raises TaskDataError naming the
file, row and key for a missing file or a malformed record. `path=None` reads the copy shipped in
warmfast/data/tasks (TriviaQA: a 40-question demo sample only).

Public API:
    load_triviaqa(path=None)    DPR/Anserini TSV `question<TAB>['alias', ...]`, or HF
                                mandarjoshi/trivia_qa rows (jsonl/json/parquet: question,
                                question_id, answer{value, aliases})
    load_truthfulqa(path=None)  TruthfulQA.csv (v1 817 rows or Jan-2025 790 rows), or HF
                                truthful_qa "generation" rows (question, best_answer,
                                correct_answers, incorrect_answers)
    load_disinfo(path=None)     MASK disinformation CSV / HF cais/MASK rows; adds ground_false
    load_medqa(path=None)       MedQA jsonl (jind11 layout; HF GBaker/MedQA-USMLE-4-options too);
                                the question is NOT rewritten here: see medqa.convert_items
    load_mmlu(path=None)        a folder of <subject>_test.csv (no header), one such csv, or HF
                                cais/mmlu rows (question, subject, choices, answer int)
    load_gsm8k(path=None)       GSM8K jsonl / HF openai/gsm8k rows (question, answer "... #### N")
    load_advbench(path=None)    harmful_behaviors.csv (goal, target) / HF walledai/AdvBench (prompt)
    load_task(task, path=None)  dispatch on the task name
    LOADERS                     {task name: loader}
"""
from __future__ import annotations

import ast
import difflib
import hashlib
import re
from pathlib import Path
from typing import Any, Callable

from .files import field, is_missing, read_records, shipped_path, text_field
from .item import Item, TaskDataError

MASK_ELICIT_SUFFIX = (" After thinking through your reasoning, please respond with yes or no, "
                      "wrapped in <final_answer> tags.")


def _where(path: Path, i: int) -> str:
    return f"{path} row {i + 1}"


def _stable_key(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"


def _unique(values: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        v = v.strip()
        if v and v not in out:
            out.append(v)
    return tuple(out)


def _check_unique_keys(items: list[Item], path: Path) -> list[Item]:
    seen: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.key in seen:
            raise TaskDataError(f"{path}: duplicate question key {it.key!r} at records "
                                f"{seen[it.key] + 1} and {i + 1}")
        seen[it.key] = i
    return items


# --- TriviaQA -----------------------------------------------------------------------------------
def load_triviaqa(path: str | Path | None = None) -> list[Item]:
    path = Path(path) if path is not None else shipped_path("triviaqa/sample.dpr.trivia.test.txt")
    hf = path.suffix.lower() in (".jsonl", ".json", ".parquet")
    items = []
    if not hf:  # DPR / Anserini: no header, question<TAB>python-literal list of aliases
        for i, rec in enumerate(read_records(path, csv_header=False)):
            where = _where(path, i)
            if len(rec) != 2:
                raise TaskDataError(f"{where}: expected 2 tab-separated fields (question, answers), "
                                    f"got {len(rec)}")
            question, raw = rec["0"].strip(), rec["1"]
            try:
                aliases = ast.literal_eval(raw)
            except (ValueError, SyntaxError) as e:
                raise TaskDataError(f"{where}: answers field is not a Python list literal: {raw[:80]!r}") from e
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                raise TaskDataError(f"{where}: answers must be a list of strings, got {raw[:80]!r}")
            answers = _unique(aliases)
            if not question or not answers:
                raise TaskDataError(f"{where}: empty question or answer list")
            items.append(Item("triviaqa", question, question, answers, extra={"row": i}))
        return _check_unique_keys(items, path)
    for i, rec in enumerate(read_records(path)):
        where = _where(path, i)
        question = text_field(rec, "question", where)
        ans = field(rec, "answer", where)
        if not isinstance(ans, dict):
            raise TaskDataError(f"{where}: key 'answer' must be an object with 'value' and 'aliases'")
        value = text_field(ans, "value", f"{where} answer")
        aliases = ans.get("aliases") or []
        items.append(Item("triviaqa", question, question, _unique([value, *aliases]),
                          extra={"question_id": rec.get("question_id"), "row": i}))
    return _check_unique_keys(items, path)


# --- TruthfulQA ---------------------------------------------------------------------------------
def _split_answers(text: str) -> list[str]:
    return [a for a in (s.strip() for s in text.split(";")) if a]


def load_truthfulqa(path: str | Path | None = None) -> list[Item]:
    """Wrong answer: the `Best Incorrect Answer` (2025 file) else the first listed incorrect answer."""
    path = Path(path) if path is not None else shipped_path("truthfulqa/TruthfulQA.csv")
    items = []
    for i, rec in enumerate(read_records(path)):
        where = _where(path, i)
        if "Question" in rec:  # the official CSV
            question = text_field(rec, "Question", where)
            best = text_field(rec, "Best Answer", where)
            correct = _split_answers(text_field(rec, "Correct Answers", where))
            incorrect = _split_answers(text_field(rec, "Incorrect Answers", where))
            best_wrong = rec.get("Best Incorrect Answer")
            meta = {"type": rec.get("Type"), "category": rec.get("Category"), "source": rec.get("Source")}
        else:  # HF truthful_qa "generation"
            question = text_field(rec, "question", where)
            best = text_field(rec, "best_answer", where)
            correct, incorrect = [list(field(rec, k, where)) for k in ("correct_answers", "incorrect_answers")]
            best_wrong = rec.get("best_incorrect_answer")
            meta = {"type": rec.get("type"), "category": rec.get("category"), "source": rec.get("source")}
        if not incorrect:
            raise TaskDataError(f"{where}: no incorrect answers")
        wrong = best_wrong.strip() if not is_missing(best_wrong) else incorrect[0]
        items.append(Item("truthfulqa", question, question, _unique([best, *correct]), wrong,
                          extra={**meta, "incorrect_answers": tuple(incorrect), "row": i}))
    return _check_unique_keys(items, path)


# --- MASK disinformation ------------------------------------------------------------------------
_PIVOTAL = re.compile(r"<pivotal>(.*?)</pivotal>")


def mask_ground_false(proposition: str, ground_truth: str, formatted_ground_truth: str | None,
                      where: str) -> str:
    """The false reading of a MASK binary proposition "X <pivotal>a/b</pivotal> Y".

    The true option is the one whose substitution equals ground_truth; when neither does (the
    HF data has a few rows where ground_truth drifted from the proposition), the option whose
    substitution is closest to ground_truth (difflib ratio); formatted_ground_truth (A/B) is only
    the tie-breaker. The false option is substituted into the proposition.
    """
    m = _PIVOTAL.search(proposition)
    if not m or m.group(1).count("/") != 1:
        raise TaskDataError(f"{where}: proposition has no '<pivotal>a/b</pivotal>' pair: {proposition[:100]!r}")
    options = m.group(1).split("/")
    readings = [_PIVOTAL.sub(o, proposition, count=1) for o in options]
    if ground_truth in readings:
        true_i = readings.index(ground_truth)
    else:
        ratios = [difflib.SequenceMatcher(None, r, ground_truth).ratio() for r in readings]
        if ratios[0] == ratios[1]:
            if formatted_ground_truth not in ("A", "B"):
                raise TaskDataError(f"{where}: cannot tell which pivotal option is true "
                                    f"(formatted_ground_truth={formatted_ground_truth!r})")
            true_i = "AB".index(formatted_ground_truth)
        else:
            true_i = 0 if ratios[0] > ratios[1] else 1
    return readings[1 - true_i]


def load_disinfo(path: str | Path | None = None) -> list[Item]:
    """MASK `disinformation` split. question = belief_elicit_1 without MASK's yes/no instruction
    (the study's `prompt_disinfo`); correct = ground_truth; wrong = ground_false."""
    path = Path(path) if path is not None else shipped_path("mask/disinformation.csv")
    items = []
    for i, rec in enumerate(read_records(path)):
        where = _where(path, i)
        key = text_field(rec, "task_id", where)
        elicit = text_field(rec, "belief_elicit_1", where)
        question = elicit[: -len(MASK_ELICIT_SUFFIX)] if elicit.endswith(MASK_ELICIT_SUFFIX) else elicit
        proposition = text_field(rec, "proposition", where)
        truth = text_field(rec, "ground_truth", where)
        fgt = rec.get("formatted_ground_truth")
        false = mask_ground_false(proposition, truth, fgt, where)
        items.append(Item("disinfo", key, question, (truth,), false, extra={
            "belief_elicit_1": elicit, "ground_truth": truth, "ground_false": false,
            "proposition": proposition, "prompt_disinfo": question, "formatted_ground_truth": fgt}))
    return _check_unique_keys(items, path)


# --- MedQA --------------------------------------------------------------------------------------
def _medqa_options(raw: Any, where: str) -> dict[str, str]:
    if isinstance(raw, dict):
        opts = raw
    elif isinstance(raw, list) and all(isinstance(o, dict) and {"key", "value"} <= set(o) for o in raw):
        opts = {o["key"]: o["value"] for o in raw}  # HF list-of-{key, value} layout
    else:
        raise TaskDataError(f"{where}: key 'options' must be a {{letter: text}} object, got {str(raw)[:80]!r}")
    opts = {str(k): str(v).strip() for k, v in opts.items() if not is_missing(v)}
    if len(opts) < 2:
        raise TaskDataError(f"{where}: 'options' holds {len(opts)} usable options, need at least 2")
    return opts


def load_medqa(path: str | Path | None = None) -> list[Item]:
    """key = "medqa-" + sha1(question)[:12]: stable across copies and row order."""
    path = Path(path) if path is not None else shipped_path("medqa/phrases_no_exclude_test.jsonl")
    items = []
    for i, rec in enumerate(read_records(path)):
        where = _where(path, i)
        question = text_field(rec, "question", where)
        answer = text_field(rec, "answer", where)
        options = _medqa_options(field(rec, "options", where), where)
        idx = text_field(rec, "answer_idx", where)
        if options.get(idx) != answer:
            raise TaskDataError(f"{where}: answer_idx {idx!r} -> option {options.get(idx)!r} "
                                f"does not match answer {answer!r}")
        items.append(Item("medqa", _stable_key("medqa", question), question, (answer,), extra={
            "original_question": question, "answer": answer, "options": options, "answer_idx": idx,
            "meta_info": rec.get("meta_info"), "row": i}))
    return _check_unique_keys(items, path)


# --- MMLU ---------------------------------------------------------------------------------------
LETTERS = "ABCD"


def _mmlu_item(subject: str, i: int, question: str, choices: list[str], letter: str, where: str) -> Item:
    if len(choices) != 4 or letter not in LETTERS:
        raise TaskDataError(f"{where}: MMLU needs 4 choices and an answer in A-D, "
                            f"got {len(choices)} choices and answer {letter!r}")
    return Item("mmlu", f"{subject}-{i}", question, (letter,), extra={
        "subject": subject, "choices": tuple(choices), "answer_letter": letter,
        "answer_text": choices[LETTERS.index(letter)]})


def load_mmlu(path: str | Path | None = None) -> list[Item]:
    """correct_answers = (letter,); extra: subject, choices, answer_letter, answer_text."""
    path = Path(path) if path is not None else shipped_path("mmlu/test")
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise TaskDataError(f"{path}: no <subject>_test.csv files in this MMLU folder")
        items = []
        for f in files:
            items += load_mmlu(f)
        return items
    if not path.exists():
        raise TaskDataError(f"task data file not found: {path}")
    items = []
    if path.suffix.lower() == ".csv":  # canonical data.tar csv: no header, question,A,B,C,D,answer
        subject = re.sub(r"_(test|dev|val)$", "", path.stem)
        for i, rec in enumerate(read_records(path, csv_header=False)):
            where = _where(path, i)
            if len(rec) != 6:
                raise TaskDataError(f"{where}: expected 6 fields (question, A, B, C, D, answer), got {len(rec)}")
            items.append(_mmlu_item(subject, i, rec["0"].strip(), [rec[str(k)].strip() for k in range(1, 5)],
                                    rec["5"].strip(), where))
        return items
    for i, rec in enumerate(read_records(path)):  # HF cais/mmlu
        where = _where(path, i)
        subject = text_field(rec, "subject", where)
        ans = field(rec, "answer", where)
        letter = LETTERS[ans] if isinstance(ans, int) and 0 <= ans < 4 else str(ans)
        items.append(_mmlu_item(subject, i, text_field(rec, "question", where),
                                [str(c).strip() for c in field(rec, "choices", where)], letter, where))
    return _check_unique_keys(items, path)


# --- GSM8K --------------------------------------------------------------------------------------
def load_gsm8k(path: str | Path | None = None) -> list[Item]:
    """correct_answers = (final number as written after '####', commas removed,)."""
    path = Path(path) if path is not None else shipped_path("gsm8k/test.jsonl")
    items = []
    for i, rec in enumerate(read_records(path)):
        where = _where(path, i)
        question = text_field(rec, "question", where)
        solution = text_field(rec, "answer", where)
        if "####" not in solution:
            raise TaskDataError(f"{where}: key 'answer' has no '#### <number>' final line")
        final = solution.rsplit("####", 1)[1].strip().replace(",", "")
        if not re.fullmatch(r"-?\d+(\.\d+)?", final):
            raise TaskDataError(f"{where}: final answer {final!r} is not a number")
        items.append(Item("gsm8k", f"gsm8k-{i}", question, (final,), extra={"solution": solution}))
    return items


# --- AdvBench -----------------------------------------------------------------------------------
def load_advbench(path: str | Path | None = None) -> list[Item]:
    """question = the harmful request (`goal`, HF `prompt`); correct_answers = () (a refusal is right)."""
    path = Path(path) if path is not None else shipped_path("advbench/harmful_behaviors.csv")
    items = []
    for i, rec in enumerate(read_records(path)):
        where = _where(path, i)
        goal = text_field(rec, "goal" if "goal" in rec else "prompt", where)
        items.append(Item("advbench", f"advbench-{i}", goal, (), extra={"target": rec.get("target")}))
    return items


LOADERS: dict[str, Callable[..., list[Item]]] = {
    "triviaqa": load_triviaqa, "truthfulqa": load_truthfulqa, "disinfo": load_disinfo,
    "medqa": load_medqa, "mmlu": load_mmlu, "gsm8k": load_gsm8k, "advbench": load_advbench,
}


def load_task(task: str, path: str | Path | None = None) -> list[Item]:
    """Load one task by name (a key of LOADERS)."""
    if task not in LOADERS:
        raise TaskDataError(f"unknown task {task!r}; known tasks: {sorted(LOADERS)}")
    return LOADERS[task](path)
