"""The study's prompt materials (protocol.json): statements, neutral sentence, belief templates.

Public API:
    GridMaterials        frozen dataclass: contexts, statements, neutral_sentence, belief_templates,
                         refusal_phrases (validated in __post_init__)
    load_materials(path=None) -> GridMaterials   path=None: the protocol.json shipped in
                         warmfast/data/tasks (a copy of ../shared/data/protocol/protocol.json)
    load_protocol_json(path=None) -> dict        the raw JSON
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .files import shipped_path
from .item import TaskDataError

BELIEF_KEYS = ("assert_wrong", "deny_right", "disinfo_assert_wrong", "disinfo_deny_right")


def load_protocol_json(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path) if path is not None else shipped_path("protocol.json")
    if not path.exists():
        raise TaskDataError(f"protocol file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TaskDataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e


@dataclass(frozen=True)
class GridMaterials:
    """contexts: the 9 labels, "unmodified" first; statements: {context: (statement, ...)} for
    every context but "unmodified" (any number >= 1 each); belief_templates: the four templates
    with {wrong} / {right} / {ground_false} / {ground_truth} placeholders."""

    contexts: tuple[str, ...]
    statements: Mapping[str, tuple[str, ...]]
    neutral_sentence: str
    belief_templates: Mapping[str, str]
    refusal_phrases: tuple[str, ...]
    source: str = "protocol.json"

    def __post_init__(self) -> None:
        if not self.contexts or self.contexts[0] != "unmodified":
            raise TaskDataError(f"{self.source}: 'contexts' must start with 'unmodified', got {self.contexts[:3]}")
        for c in self.contexts[1:]:
            sts = self.statements.get(c)
            if not sts or not all(isinstance(s, str) and s.strip() for s in sts):
                raise TaskDataError(f"{self.source}: 'statements' has no usable statements for context {c!r}")
            if ":" not in c:
                raise TaskDataError(f"{self.source}: context {c!r} is not 'group:name'")
        for k in BELIEF_KEYS:
            if k not in self.belief_templates:
                raise TaskDataError(f"{self.source}: 'belief_templates' lacks key {k!r}")
        if not self.neutral_sentence.strip():
            raise TaskDataError(f"{self.source}: 'neutral_sentence' is empty")

    def group(self, context: str) -> str:
        """'emotion:sad' -> 'emotion'; 'unmodified' -> 'unmodified'."""
        return context.split(":", 1)[0]


def load_materials(path: str | Path | None = None) -> GridMaterials:
    raw = load_protocol_json(path)
    src = str(path) if path is not None else "protocol.json (shipped)"
    for key in ("contexts", "statements", "neutral_sentence", "belief_templates"):
        if key not in raw:
            raise TaskDataError(f"{src}: missing key {key!r}")
    return GridMaterials(
        contexts=tuple(raw["contexts"]),
        statements={k: tuple(v) for k, v in raw["statements"].items()},
        neutral_sentence=raw["neutral_sentence"],
        belief_templates=dict(raw["belief_templates"]),
        refusal_phrases=tuple(raw.get("refusal_phrases_case_insensitive", ())),
        source=src,
    )
