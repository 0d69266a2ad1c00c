"""Judged outputs from a warmfast run store (run/store.py: one SQLite file, `store.sqlite` in a run dir).

Each grid job's `meta` carries the study's export columns (task, question_key, amendment_type,
prompt_type, ...; see tasks/grid.py `GridPrompt.to_row`); its generation gives `output`, and its
judgement with role "evaluation" gives `evaluation` (CORRECT / INCORRECT, or UNGRADED when the judge's
reply named neither verdict: such rows reach preprocess, which counts them and leaves them out). The
rows then go through `load.frame_from_study_layout` like any CSV. Generations without an evaluation
judgement are left out and counted, so a partly judged run still gets a report that says what is
missing.

Only the current plan counts. A store keeps the jobs of every plan ever run in its folder (keys are
content hashes: a changed setting makes new jobs beside the old ones), so the reader takes the plan
last built for the folder from its `plan.json` (run/plan.py writes it) and leaves the other jobs
out, counted in a note of their own; they are neither analysed nor reported as unjudged. A folder
without plan.json (made before plans were recorded) is read whole.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from warmfast.analysis.load import TASK_ALIASES, TASKS, UNGRADED, frame_from_study_layout
from warmfast.run.judging import SELF_JUDGED_WARNING
from warmfast.run.plan import PLAN_MANIFEST, read_plan_manifest
from warmfast.run.store import SCHEMA_VERSION

STORE_NAME = "store.sqlite"


@dataclass
class StoreExport:
    """judged: the judged frame; notes: (what, why) for rows left out."""

    judged: pd.DataFrame
    notes: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_store(path: Path) -> Path | None:
    """The store file of a run directory (or the file itself), else None."""
    if path.is_file() and path.suffix == ".sqlite":
        return path
    if path.is_dir() and (path / STORE_NAME).is_file():
        return path / STORE_NAME
    return None


def read_store(path: str | Path, judge: str | None = None,
               plan_jobs: Mapping[str, Collection[str]] | None = None) -> StoreExport:
    """Grid-task generations of the store with their evaluation verdicts. `judge` picks one judge
    when the store holds evaluations by several (their names are listed in the error).

    plan_jobs: {task: job keys} of the current plan (run/plan.py `plan_job_keys`); None = the
    plan.json beside the store, and when there is none, every job in the store. Store jobs outside
    the plan are left out and counted as earlier plans' jobs; plan jobs the store lacks yet count
    as jobs without a generation."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run store {path} does not exist")
    plan_source = "the given plan"
    if plan_jobs is None:
        plan_jobs = read_plan_manifest(path.parent)
        plan_source = str(path.parent / PLAN_MANIFEST)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        info = dict(db.execute("SELECT name, value FROM store_info").fetchall())
        if str(info.get("schema_version")) != str(SCHEMA_VERSION):
            raise ValueError(f"{path}: store schema_version {info.get('schema_version')!r}, "
                             f"this warmfast reads {SCHEMA_VERSION}")
        grid = tuple(TASKS) + tuple(k for k, v in TASK_ALIASES.items() if v in TASKS)
        marks = ",".join("?" * len(grid))
        jobs = db.execute(f"SELECT j.key, j.model, j.arm, j.task, j.meta, g.text FROM jobs j LEFT JOIN generations g "
                          f"ON g.job_key = j.key WHERE j.kind = 'generate' AND j.task IN ({marks})", grid).fetchall()
        verdicts = db.execute("SELECT job_key, judge, verdict FROM judgements WHERE role = 'evaluation'").fetchall()
        self_judged = dict(db.execute(  # judges whose verdicts came from the subject model itself (run/judging.py)
            "SELECT judge, COUNT(*) FROM judgements WHERE role = 'evaluation' "
            "AND json_extract(detail, '$.self_judged') = 1 GROUP BY judge").fetchall())
    except sqlite3.DatabaseError as err:
        raise ValueError(f"{path}: not a readable warmfast run store ({err})") from err
    finally:
        db.close()
    judges = sorted({j for _, j, _ in verdicts})
    if judge is None and len(judges) > 1:
        raise ValueError(f"{path}: evaluations by several judges {judges}; choose one (judge=...)")
    if judge is not None and judge not in judges:
        raise ValueError(f"{path}: no evaluations by judge {judge!r}; judges in the store: {judges}")
    verdict_of = {k: v for k, j, v in verdicts if judge is None or j == judge}

    stale = 0
    if plan_jobs is not None:
        current = {k for t, keys in plan_jobs.items() if t in grid for k in keys}
        kept = [row for row in jobs if row[0] in current]
        stale = len(jobs) - len(kept)
        stored = {row[0] for row in kept}
        jobs = kept + [(k, None, None, None, None, None) for k in current - stored]  # planned, not run yet

    rows, no_gen, no_verdict = [], 0, 0
    for key, model, arm, task, meta, text in jobs:
        if text is None:
            no_gen += 1
            continue
        if key not in verdict_of:
            no_verdict += 1
            continue
        v = verdict_of[key] if verdict_of[key] is not None else UNGRADED   # reply named neither verdict
        m = json.loads(meta)
        m.update(model=model, arm=arm, task=task, output=text, evaluation=v)
        rows.append(m)
    notes = []
    for n, why in ((no_gen, "grid jobs without a generation yet (run not finished)"),
                   (no_verdict, "generations without an evaluation judgement (judging not finished)"),
                   (stale, f"jobs of earlier plans of this run folder, not in the current plan ({plan_source})")):
        if n:
            notes.append((f"{n} store row(s) of {path}", f"left out: {why}"))
    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError(f"{path}: no judged grid-task generations of the current plan in this store "
                         f"({len(jobs)} grid jobs, {no_gen} without generation, {no_verdict} unjudged, "
                         f"{stale} of earlier plans)")
    if "sample" in df.columns:
        df = df.sort_values("sample", kind="stable")  # de-duplication keeps sample 0 of each prompt
    warnings = []
    n_self = sum(n for j, n in self_judged.items() if judge is None or j == judge)
    if n_self:
        warnings.append(f"{path}: {n_self} evaluation(s) were made by the subject model itself: {SELF_JUDGED_WARNING}")
    return StoreExport(frame_from_study_layout(df, source=str(path)), notes, warnings)
