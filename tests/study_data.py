"""Where tests find the study's released files (authors' outputs, full datasets, protocol).

A user's clone carries no study data beyond what the package ships; those files live in a folder
named by the environment variable WARMFAST_DATA (laid out like the project's shared/data: see
docs/architecture.md, "Study data"). Without WARMFAST_DATA a test that needs them is skipped with
one line saying so; with it set, a missing file fails the test (CI sets it and must run everything).

    from study_data import data_path
    SAMPLE = data_path("warm_ai_2025/sample_data")   # a Path; no check yet
    def test_x():
        rows = read(need(SAMPLE))                     # skip or fail here, at run time
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "WARMFAST_DATA"
_UNSET = Path("/WARMFAST_DATA-is-not-set")


def data_root() -> Path | None:
    """The folder WARMFAST_DATA names, or None when it is unset or empty."""
    root = os.environ.get(ENV, "").strip()
    return Path(root).expanduser().resolve() if root else None


def data_path(rel: str) -> Path:
    """WARMFAST_DATA/rel, resolved lazily: module constants may be built before any test runs."""
    root = data_root()
    return (root if root is not None else _UNSET) / rel


def need(path: Path) -> Path:
    """Return path if it exists; skip (WARMFAST_DATA unset) or fail (set but the file is missing)."""
    root = data_root()
    if root is None:
        rel = path.relative_to(_UNSET) if path.is_relative_to(_UNSET) else path
        pytest.skip(f"needs the study's data ({rel}): set {ENV} to a folder laid out like shared/data")
    if not path.exists():
        pytest.fail(f"{ENV}={root} is set but {path} does not exist")
    return path


def has_data() -> bool:
    """True when WARMFAST_DATA is set (for skipif marks on whole modules)."""
    return data_root() is not None


requires_data = pytest.mark.skipif(not has_data(), reason=f"needs the study's data: set {ENV} (see tests/study_data.py)")
