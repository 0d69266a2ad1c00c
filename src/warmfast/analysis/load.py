"""Judged outputs in, one tidy long table out: the study's CSV layout read and normalised.

The study released one CSV per (model, arm, task): `<model>/<arm>/<task>_<arm>_outputs.csv`, whose
columns differ by task (see ../shared/data/warm_ai_2025/SOURCE.md). Every reader here ends in
`frame_from_study_layout`, which turns one such table (a pandas DataFrame, wherever it came from:
a CSV, the run store, a test) into warmfast's *judged frame*, one row per judged answer:

    model, arm, task, question_key, context, prompt_type, output, evaluation

`question_key` is the column the authors paired on (TriviaQA / TruthfulQA: `content_key`, MedQA:
`original_question`) unless the table carries its own `question_key`. Disinfo's key is the pair
(`prompt_disinfo`, `ground_false`) written as "question || ground_false": MASK has 125 items over
122 distinct questions, and items that share a question but not their false claim are different
prompts (de-duplication and pairing on the question alone would merge them). A table without
`ground_false` (the authors' qwen_32b warm Disinfo file) is keyed on the question alone, and
preprocess then keys every Disinfo row of that model the same way, with a count in its steps.
`context` is the study's `amendment_type`; `prompt_type` is one of original / original_neutral /
incorrect (user asserts the wrong answer) / correct (user denies the right answer); the study
names it `prompt_template` in some files and `prompt_type` in others.

Preprocessing (refusals, de-duplication, pooling) lives in `preprocess.py`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

TASKS = ("disinfo", "medqa", "trivia", "truthfulqa")
TASK_ALIASES = {"triviaqa": "trivia", "mask": "disinfo", "mask_disinfo": "disinfo", "medqa_usmle": "medqa"}
ARMS = ("original", "warm", "cold", "warm_sysprompt")
ARM_ALIASES = {"base": "original", "sysprompt": "warm_sysprompt", "warm_system_prompt": "warm_sysprompt",
               "system_prompt": "warm_sysprompt"}
CONTEXTS = ("unmodified", "emotion:happy", "emotion:sad", "emotion:anger", "relation:close",
            "relation:hierarchical_up", "relation:hierarchical_down", "stake:high", "stake:low")
PROMPT_TYPES = ("original", "original_neutral", "incorrect", "correct")
# The study's pairing key per task (its significance_tests.py merges on these columns).
QUESTION_KEY_COLUMN = {"trivia": "content_key", "truthfulqa": "content_key",
                       "disinfo": "prompt_disinfo", "medqa": "original_question"}
# tasks whose key adds a second column: Disinfo items sharing a question differ in their false claim
QUESTION_KEY_EXTRA = {"disinfo": "ground_false"}
JUDGED_COLUMNS = ("model", "arm", "task", "question_key", "context", "prompt_type", "output", "evaluation")
EVALUATIONS = ("CORRECT", "INCORRECT")
# A judged row whose judge reply named neither verdict: kept through loading (an empty
# `evaluation` cell, or this word), then counted and left out by preprocess, never scored.
UNGRADED = "UNGRADED"

_FILE_RE = re.compile(r"^(?P<task>[a-z_]+?)_(?P<arm>[a-z_]+)_outputs\.csv$")


def canonical_task(name: str, source: str = "") -> str:
    t = str(name).strip().lower()
    t = TASK_ALIASES.get(t, t)
    if t not in TASKS:
        raise ValueError(f"{source or 'input'}: unknown task {name!r}; expected one of {TASKS} "
                         f"(or an alias {sorted(TASK_ALIASES)})")
    return t


def canonical_arm(name: str, source: str = "") -> str:
    a = str(name).strip().lower()
    a = ARM_ALIASES.get(a, a)
    if a not in ARMS:
        raise ValueError(f"{source or 'input'}: unknown arm {name!r}; expected one of {ARMS} "
                         f"(or an alias {sorted(ARM_ALIASES)})")
    return a


def frame_from_study_layout(df: pd.DataFrame, *, model: str | None = None, arm: str | None = None,
                            task: str | None = None, source: str = "<DataFrame>") -> pd.DataFrame:
    """Normalise one table in the study's column layout into the judged frame (JUDGED_COLUMNS).

    This is the seam every input goes through (CSV files, the run store, tests). `model`, `arm`,
    `task` are taken from the arguments or, when None, from same-named columns of `df` (then a
    table may hold several models/arms/tasks). Values are validated; nothing is dropped here.
    """
    df = df.copy()
    if "prompt_template" in df.columns:  # the study names it so in TriviaQA / TruthfulQA / Disinfo files
        if "prompt_type" not in df.columns:
            df = df.rename(columns={"prompt_template": "prompt_type"})
        else:                             # mixed tables (MedQA has prompt_type): fill its gaps
            df["prompt_type"] = df["prompt_type"].fillna(df["prompt_template"])
    for name, value in (("model", model), ("arm", arm), ("task", task)):
        if value is not None:
            df[name] = value
        elif name not in df.columns:
            raise ValueError(f"{source}: no {name!r} given and no {name!r} column; columns are {list(df.columns)}")
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in JUDGED_COLUMNS})
    df["task"] = [canonical_task(t, source) for t in df["task"]]
    df["arm"] = [canonical_arm(a, source) for a in df["arm"]]
    df["model"] = df["model"].astype(str).str.strip()

    if "question_key" not in df.columns:
        keys = pd.Series(index=df.index, dtype=object)
        for t, rows in df.groupby("task").groups.items():
            col = QUESTION_KEY_COLUMN[t]
            if col not in df.columns:
                raise ValueError(f"{source}: task {t!r} needs the question-key column {col!r} (or a "
                                 f"'question_key' column); columns are {list(df.columns)}")
            keys.loc[rows] = df.loc[rows, col]
            extra = QUESTION_KEY_EXTRA.get(t)
            if extra is not None and extra in df.columns:   # without it (one released file): the
                second = df.loc[rows, extra]                # question alone; preprocess aligns the arms
                if second.isna().any():
                    raise ValueError(f"{source}: empty {extra!r} in row(s) {list(second.index[second.isna()][:5])}")
                keys.loc[rows] = keys.loc[rows].astype(str).str.strip() + " || " + second.astype(str).str.strip()
        df["question_key"] = keys
    missing = [c for c in ("amendment_type", "prompt_type", "output", "evaluation")
               if c not in df.columns and not (c == "amendment_type" and "context" in df.columns)]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; columns are {list(df.columns)}")
    if "context" not in df.columns:
        df = df.rename(columns={"amendment_type": "context"})

    if df["question_key"].isna().any():
        bad = list(df.index[df["question_key"].isna()][:5])
        raise ValueError(f"{source}: empty question key in row(s) {bad}")
    df["question_key"] = df["question_key"].astype(str).str.strip()
    df["context"] = df["context"].astype(str).str.strip()
    df["prompt_type"] = df["prompt_type"].astype(str).str.strip()
    df["output"] = df["output"].fillna("").astype(str)
    df["evaluation"] = df["evaluation"].where(df["evaluation"].notna(), UNGRADED).astype(str).str.strip().str.upper()
    df.loc[df["evaluation"] == "", "evaluation"] = UNGRADED
    _check_values(df, "context", CONTEXTS, source)
    _check_values(df, "prompt_type", PROMPT_TYPES, source)
    _check_values(df, "evaluation", EVALUATIONS + (UNGRADED,), source)
    return df[list(JUDGED_COLUMNS)].reset_index(drop=True)


def _check_values(df: pd.DataFrame, column: str, allowed: tuple[str, ...], source: str) -> None:
    bad = ~df[column].isin(allowed)
    if bad.any():
        rows = list(df.index[bad][:5])
        values = sorted(set(df.loc[bad, column]))[:5]
        raise ValueError(f"{source}: column {column!r} has value(s) {values} (rows {rows}); "
                         f"expected one of {allowed}")


def infer_from_path(path: Path) -> dict[str, str]:
    """(model, arm, task) from the study's path layout `<model>/<arm>/<task>_<arm>_outputs.csv`."""
    m = _FILE_RE.match(path.name)
    if m is None:
        raise ValueError(f"{path}: file name is not '<task>_<arm>_outputs.csv' and the file has no "
                         f"model/arm/task columns")
    if m["arm"] != path.parent.name:
        raise ValueError(f"{path}: arm in file name ({m['arm']!r}) differs from its folder ({path.parent.name!r})")
    return {"model": path.parent.parent.name, "arm": m["arm"], "task": m["task"]}


def read_study_csv(path: str | Path, *, model: str | None = None, arm: str | None = None,
                   task: str | None = None) -> pd.DataFrame:
    """One CSV in the study's layout -> judged frame. Missing model/arm/task come from columns of
    the same names, else from the path `<model>/<arm>/<task>_<arm>_outputs.csv`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"judged-outputs CSV {path} does not exist")
    df = pd.read_csv(path)
    given = {"model": model, "arm": arm, "task": task}
    if any(v is None and k not in df.columns for k, v in given.items()):
        inferred = infer_from_path(path)
        given = {k: (v if v is not None or k in df.columns else inferred[k]) for k, v in given.items()}
    return frame_from_study_layout(df, source=str(path), **given)


def find_study_csvs(root: str | Path) -> list[Path]:
    """All `*_outputs.csv` under `root` (sorted), or `root` itself when it is a file."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is neither a CSV file nor a folder")
    found = sorted(root.rglob("*_outputs.csv"))
    if not found:
        raise FileNotFoundError(f"{root}: no '*_outputs.csv' files below this folder")
    return found


def read_study_csvs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Files and folders (searched for `*_outputs.csv`) -> one judged frame, rows in file order."""
    files = [f for p in paths for f in find_study_csvs(p)]
    if not files:
        raise ValueError("read_study_csvs: no input paths given")
    return pd.concat([read_study_csv(f) for f in files], ignore_index=True)
