"""Reading task files: shipped package data, jsonl / json / csv / tsv / parquet, clear errors.

Public API:
    shipped_path(relative) -> Path      a file under warmfast/data/tasks (raises if absent)
    read_records(path, *, csv_header=True) -> list[dict]
                                         rows of a .jsonl/.json/.csv/.tsv/.parquet file as dicts
    field(record, key, where) -> value   record[key], or TaskDataError naming the file, row, key
    text_field(record, key, where) -> str  a non-empty string field (strings are stripped)
"""
from __future__ import annotations

import csv
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from .item import TaskDataError

_DATA_PACKAGE = "warmfast"
_DATA_DIR = ("data", "tasks")


def shipped_path(relative: str) -> Path:
    """Path of a file shipped in warmfast/data/tasks/, e.g. shipped_path("gsm8k/test.jsonl")."""
    root = resources.files(_DATA_PACKAGE).joinpath(*_DATA_DIR)
    path = Path(str(root.joinpath(*relative.split("/"))))
    if not path.exists():
        raise TaskDataError(f"shipped task file {relative!r} not found at {path}; the warmfast "
                            "install lacks its package data (reinstall warmfast)")
    return path


def _check_exists(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise TaskDataError(f"task data file not found: {path}")
    if path.is_dir():
        raise TaskDataError(f"expected a file, got a directory: {path}")
    return path


def read_records(path: str | Path, *, csv_header: bool = True) -> list[dict[str, Any]]:
    """Rows of a data file as dicts, by suffix.

    .jsonl: one JSON object per line (blank lines skipped); .json: a list of objects, or an object
    holding one list (HF `{"data": [...]}` style); .csv / .tsv: header row -> dict rows, or with
    csv_header=False lists keyed "0", "1", ...; .parquet: via pandas + pyarrow.
    """
    path = _check_exists(Path(path))
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TaskDataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
                if not isinstance(obj, dict):
                    raise TaskDataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                rows.append(obj)
        return rows
    if suffix == ".json":
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise TaskDataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
        if isinstance(obj, dict):
            lists = [v for v in obj.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise TaskDataError(f"{path}: a JSON object must hold exactly one list of records, "
                                    f"found keys {sorted(obj)}")
            obj = lists[0]
        if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
            raise TaskDataError(f"{path}: expected a JSON list of objects")
        return obj
    if suffix in (".csv", ".tsv", ".txt"):
        delim = "," if suffix == ".csv" else "\t"
        with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: TruthfulQA v1 has a BOM
            if csv_header:
                reader = csv.DictReader(f, delimiter=delim)
                rows = []
                for row in reader:
                    if None in row:
                        raise TaskDataError(f"{path}:{reader.line_num}: more fields than the header "
                                            f"({len(reader.fieldnames or [])} columns)")
                    rows.append(dict(row))
                return rows
            return [{str(i): v for i, v in enumerate(r)} for r in csv.reader(f, delimiter=delim)]
    if suffix == ".parquet":
        try:
            import pandas as pd
            df = pd.read_parquet(path)
        except ImportError as e:
            raise TaskDataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from e
        return [_plain(r) for r in df.to_dict(orient="records")]
    raise TaskDataError(f"{path}: unknown file type {suffix!r}; expected .jsonl, .json, .csv, .tsv or .parquet")


def _plain(value: Any) -> Any:
    """numpy arrays / scalars from parquet -> plain Python lists / values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def is_missing(value: Any) -> bool:
    """None, NaN, or a blank string."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def field(record: dict[str, Any], key: str, where: str) -> Any:
    """record[key]; a missing key or empty value raises TaskDataError naming `where` and the key."""
    if key not in record:
        raise TaskDataError(f"{where}: missing key {key!r} (keys present: {sorted(record)[:12]})")
    value = record[key]
    if is_missing(value):
        raise TaskDataError(f"{where}: key {key!r} is empty")
    return value


def text_field(record: dict[str, Any], key: str, where: str) -> str:
    value = field(record, key, where)
    if not isinstance(value, str):
        raise TaskDataError(f"{where}: key {key!r} must be a string, got {type(value).__name__} {value!r}")
    return value.strip()
