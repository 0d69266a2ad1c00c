"""Agreement of any judge with labelled outputs: accuracy, Cohen's kappa, confusion table.

Typical use: score warmfast's judge (log-prob, HTTP or a rule) against the GPT-4o labels in the
study's released outputs (column `evaluation`, CORRECT / INCORRECT), overall and per task.
The study reports > 90% agreement and kappa > 0.81 between its judge and two human annotators.

kappa = (p_o - p_e) / (1 - p_e), p_o = observed agreement, p_e = sum over labels of the product of
the two raters' marginal label frequencies (Cohen 1960). When p_e == 1 (both raters used one and
the same label throughout) kappa is undefined and reported as NaN.

Public API:
    Agreement                        n, labels, accuracy, kappa, confusion {(reference, predicted): count},
                                     .table() -> str (rows: reference, columns: predicted), .to_dict()
    agreement(reference, predicted, labels=None, drop_missing=False) -> Agreement
    agreement_by(reference, predicted, groups, ...) -> dict[group, Agreement]   (plus "all")
    read_study_outputs(root) -> pandas.DataFrame   every <model>/<arm>/<task>_<arm>_outputs.csv under
                                     root, with columns model, arm, task (warmfast task names), file
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

from warmfast.tasks.files import is_missing
from warmfast.tasks.item import TaskDataError
from warmfast.tasks.study_rows import task_of_study_file


@dataclass(frozen=True)
class Agreement:
    n: int
    labels: tuple[Hashable, ...]
    accuracy: float
    kappa: float
    confusion: Mapping[tuple[Hashable, Hashable], int] = field(default_factory=dict)
    dropped: int = 0

    def table(self) -> str:
        """Confusion table as text: rows = reference labels, columns = predicted labels."""
        names = [str(lab) for lab in self.labels]
        width = max([9, *map(len, names)])
        head = "ref \\ pred".ljust(width) + "".join(n.rjust(width + 2) for n in names)
        rows = [head]
        for r in self.labels:
            rows.append(str(r).ljust(width) + "".join(str(self.confusion.get((r, p), 0)).rjust(width + 2)
                                                      for p in self.labels))
        kappa = "nan" if math.isnan(self.kappa) else f"{self.kappa:.3f}"
        rows.append(f"n={self.n} accuracy={self.accuracy:.3f} kappa={kappa}" + (f" dropped={self.dropped}" if self.dropped else ""))
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "accuracy": self.accuracy, "kappa": self.kappa, "dropped": self.dropped,
                "labels": list(self.labels),
                "confusion": {f"{r}|{p}": c for (r, p), c in sorted(self.confusion.items(), key=str)}}


def agreement(reference: Sequence[Hashable], predicted: Sequence[Hashable],
              labels: Sequence[Hashable] | None = None, drop_missing: bool = False) -> Agreement:
    """Compare two label sequences of equal length. Missing values (None / NaN / blank) raise,
    naming the first position, unless drop_missing=True (then the pair is skipped and counted
    in `dropped`, e.g. a judge that named neither verdict). `labels` fixes the label order and set;
    a label outside it raises."""
    if len(reference) != len(predicted):
        raise TaskDataError(f"agreement: reference has {len(reference)} labels, predicted has {len(predicted)}")
    pairs, dropped = [], 0
    for i, (r, p) in enumerate(zip(reference, predicted)):
        if is_missing(r) or is_missing(p):
            if not drop_missing:
                raise TaskDataError(f"agreement: missing label at position {i} (reference={r!r}, predicted={p!r}); "
                                    "pass drop_missing=True to skip such pairs")
            dropped += 1
            continue
        pairs.append((r, p))
    if not pairs:
        raise TaskDataError("agreement: no labelled pairs to compare")
    seen = sorted({x for pair in pairs for x in pair}, key=str)
    if labels is None:
        labels = seen
    else:
        unknown = [x for x in seen if x not in labels]
        if unknown:
            raise TaskDataError(f"agreement: labels {unknown} are not in labels={list(labels)}")
    n = len(pairs)
    confusion = Counter(pairs)
    p_o = sum(c for (r, p), c in confusion.items() if r == p) / n
    ref_counts, pred_counts = Counter(r for r, _ in pairs), Counter(p for _, p in pairs)
    p_e = sum(ref_counts[lab] * pred_counts[lab] for lab in labels) / (n * n)
    kappa = float("nan") if math.isclose(p_e, 1.0) else (p_o - p_e) / (1 - p_e)
    return Agreement(n, tuple(labels), p_o, kappa, dict(confusion), dropped)


def agreement_by(reference: Sequence[Hashable], predicted: Sequence[Hashable], groups: Sequence[Hashable],
                 labels: Sequence[Hashable] | None = None, drop_missing: bool = False) -> dict[Hashable, Agreement]:
    """agreement() per group value, plus key "all" for every row together."""
    if not (len(reference) == len(predicted) == len(groups)):
        raise TaskDataError(f"agreement_by: lengths differ (reference {len(reference)}, predicted "
                            f"{len(predicted)}, groups {len(groups)})")
    labels = labels or sorted({x for x in [*reference, *predicted] if not is_missing(x)}, key=str)
    out: dict[Hashable, Agreement] = {}
    for g in sorted(set(groups), key=str):
        idx = [i for i, x in enumerate(groups) if x == g]
        out[g] = agreement([reference[i] for i in idx], [predicted[i] for i in idx], labels, drop_missing)
    out["all"] = agreement(reference, predicted, labels, drop_missing)
    return out


def read_study_outputs(root: str | Path) -> "Any":
    """All released output files under root (warm_ai_2025/sample_data layout) in one DataFrame."""
    import pandas as pd

    root = Path(root)
    if not root.is_dir():
        raise TaskDataError(f"study outputs folder not found: {root}")
    files = sorted(root.glob("*/*/*_outputs.csv"))
    if not files:
        raise TaskDataError(f"{root}: no <model>/<arm>/<task>_<arm>_outputs.csv files")
    frames = []
    for f in files:
        df = pd.read_csv(f)
        for col in ("output", "evaluation"):
            if col not in df.columns:
                raise TaskDataError(f"{f}: missing column {col!r}")
        frames.append(df.assign(model=f.parent.parent.name, arm=f.parent.name, task=task_of_study_file(f), file=str(f)))
    return pd.concat(frames, ignore_index=True)
