"""Compat mode rebuilds the `prompt` column of every released study row, byte for byte."""

import pandas as pd
import pytest

from warmfast.tasks.grid import CLEAN, COMPAT, build_prompt
from warmfast.tasks.item import TaskDataError
from warmfast.tasks.protocol import load_materials
from warmfast.tasks.study_rows import item_from_study_row, statement_of_row, task_of_study_file
from study_data import data_path, requires_data

pytestmark = requires_data

SAMPLE = data_path("warm_ai_2025/sample_data")
FILES = sorted(SAMPLE.glob("*/*/*.csv"))


def test_sample_data_present():
    assert len(FILES) == 16, f"expected 16 sample_data files under {SAMPLE}, found {len(FILES)}"


def _rows():
    out = []
    for f in FILES:
        df = pd.read_csv(f)
        if "prompt" not in df.columns:
            continue  # qwen_32b/warm files carry no prompt column
        for i, row in df.iterrows():
            out.append((f, i, row.to_dict()))
    return out


ROWS = _rows()


def test_rows_cover_every_task_and_prompt_type():
    assert len(ROWS) == 240
    seen = {(task_of_study_file(f), r.get("prompt_template", r.get("prompt_type"))) for f, _, r in ROWS}
    for task in ("triviaqa", "truthfulqa", "disinfo", "medqa"):
        assert {pt for t, pt in seen if t == task} >= {"original", "original_neutral", "incorrect", "correct"} - (
            {"correct"} if task == "disinfo" else set()), task
    contexts = {r["amendment_type"] for _, _, r in ROWS}
    assert len(contexts) == 9


def test_clean_layout_differs_where_the_release_has_artefacts():
    """The released prompts carry artefacts that CLEAN must not reproduce (so COMPAT is doing work)."""
    materials = load_materials()
    differ = 0
    for f, _, row in ROWS:
        task = task_of_study_file(f)
        ptype = row.get("prompt_template", row.get("prompt_type"))
        if ptype == "original":
            continue
        item = item_from_study_row(task, row)
        if item.right_answer is None and ptype == "correct":  # CLEAN refuses these ("None" is a COMPAT artefact)
            with pytest.raises(TaskDataError, match="has no right answer"):
                build_prompt(item, row["amendment_type"], ptype, statement_of_row(row, materials), materials, CLEAN)
            continue
        built = build_prompt(item, row["amendment_type"], ptype, statement_of_row(row, materials), materials, CLEAN)
        skeleton = built.replace(item.question, "<Q>")
        assert "  " not in skeleton and ".." not in skeleton and not skeleton.startswith(" "), skeleton
        differ += built != row["prompt"]
    assert differ > 100


@pytest.mark.parametrize("path,i,row", ROWS, ids=[f"{f.parent.parent.name}/{f.parent.name}/{f.stem}:{i}" for f, i, _ in ROWS])
def test_compat_prompt_equals_released_prompt(path, i, row):
    materials = load_materials()
    task = task_of_study_file(path)
    item = item_from_study_row(task, row)
    ptype = row.get("prompt_template", row.get("prompt_type"))
    statement = statement_of_row(row, materials)
    built = build_prompt(item, row["amendment_type"], ptype, statement, materials, COMPAT)
    assert built == row["prompt"]
