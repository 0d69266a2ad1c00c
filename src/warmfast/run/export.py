"""Export a run's judged outputs in the study's column layout (CSV and Parquet).

Files under the run folder:
    results.csv / results.parquet                       every job: all tasks, models and arms
    outputs/<model>/<arm>/<task>_<arm>_outputs.csv      the grid tasks, one file per (model, arm,
                                                        task), as the authors' sample_data (task names
                                                        trivia / truthfulqa / disinfo / medqa)
    capability/<model>/<arm>/<task>_<arm>_outputs.csv   MMLU, GSM8K, AdvBench

Columns: the task's own columns and prompt, prompt_type, amendment_type (as built by the grid), then
output, evaluation, refusal (0/1), and warmfast's extras: judge_confidence, judge, finish_reason,
num_tokens, model, arm, task, sample. Nested values (MedQA options, MMLU choices) are JSON text.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

from warmfast.run.config import GRID_TASKS

STUDY_TASK_NAMES = {"triviaqa": "trivia", "truthfulqa": "truthfulqa", "disinfo": "disinfo", "medqa": "medqa"}
RESULT_COLUMNS = ("output", "evaluation", "refusal")
EXTRA_COLUMNS = ("judge_confidence", "judge", "finish_reason", "num_tokens", "model", "arm", "task", "sample")
_INTERNAL = ("judge_question", "judge_answers")
# Every text field quoted: model outputs hold bare "\r", which an unquoted CSV field would turn
# into a line break for most readers.
_CSV = {"index": False, "quoting": csv.QUOTE_NONNUMERIC, "lineterminator": "\n"}


def _cell(value):
    return json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, (dict, list)) else value


def _frame(rows: list[dict]) -> pd.DataFrame:
    """Rows -> DataFrame: task columns in first-seen order, then results, then extras."""
    order: list[str] = []
    seen = set()
    for row in rows:
        for k in row:
            if k not in seen and k not in RESULT_COLUMNS and k not in EXTRA_COLUMNS:
                seen.add(k)
                order.append(k)
    columns = order + list(RESULT_COLUMNS) + list(EXTRA_COLUMNS)
    df = pd.DataFrame([{c: _cell(r.get(c)) for c in columns} for r in rows], columns=columns)
    df["refusal"] = df["refusal"].astype("Int64")
    return df


def export_rows(rows: list[dict], out_dir: Path, formats: list[str]) -> list[Path]:
    """Write the combined files and the per-(model, arm, task) study files; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [{k: v for k, v in r.items() if k not in _INTERNAL} for r in rows]
    written = []
    combined = _frame(rows)
    if "csv" in formats:
        combined.to_csv(out_dir / "results.csv", **_CSV)
        written.append(out_dir / "results.csv")
    if "parquet" in formats:
        # every column as text or numbers pyarrow can type: mixed object columns become strings
        pq = combined.copy()
        for c in pq.columns:
            if pq[c].dtype == object:
                pq[c] = pq[c].map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
        pq.to_parquet(out_dir / "results.parquet", index=False)
        written.append(out_dir / "results.parquet")
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["arm"], r["task"]), []).append(r)
    for (model, arm, task), part in sorted(groups.items()):
        top = "outputs" if task in GRID_TASKS else "capability"
        name = STUDY_TASK_NAMES.get(task, task)
        path = out_dir / top / model / arm / f"{name}_{arm}_outputs.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = _frame(part).dropna(axis=1, how="all")  # each file keeps only its task's columns
        for must in RESULT_COLUMNS:  # ...but always the result columns, even when empty
            if must not in frame.columns:
                frame[must] = None
        frame.to_csv(path, **_CSV)
        written.append(path)
    return written
