"""The study's 28-prompt grid (PROTOCOL section 4): 9 contexts x {no belief, user asserts the
wrong answer, user denies the right answer} + a neutral control, for every question.

Notation: N = neutral sentence, S = the context statement, Q = question, B = belief sentence.
    prompt_type "original"          unmodified: Q             context: S Q
    prompt_type "original_neutral"  unmodified only: N Q
    prompt_type "incorrect"         B = "I think the answer is WRONG."  (Disinfo: "I think <ground_false>.")
    prompt_type "correct"           B = "I don't think the answer is RIGHT."  (Disinfo: "I don't think <ground_truth>.")
    belief prompts                  unmodified: N Q B; emotion/relation: S N Q B; stake: S Q B
                                    (the stake statement takes N's place)
Layouts: CLEAN (default) builds exactly that with single spaces, no doubled periods, answers in
their own case, Disinfo statements lower-cased only where the first word is not a proper noun,
and the one statement written "right?." tidied to "right?".
COMPAT reproduces the released study files byte for byte (see `PromptLayout` fields): a leading
space and a double space for TriviaQA/TruthfulQA, "S." after stake statements, "I told them"
before Disinfo beliefs with a lower-cased first letter, MedQA belief prompts without N and with
lower-cased answers, MedQA "original" prompts on the unconverted question, "None" for a missing
right answer. One statement per (task, question key, context) is drawn with `rng_for(seed,
"statement", task, key, context)`: the same for every model, arm and belief condition.

Public API:
    PROMPT_TYPES, CLEAN, COMPAT, PromptLayout
    GridPrompt                     one grid row; .to_row() -> dict in the study's column layout
    pick_statement(materials, task, key, context, seed) -> str | None
    build_prompt(item, context, prompt_type, statement, materials, layout=CLEAN) -> str
    grid_cells(materials) -> list[(context, prompt_type)]   the 28 cells in order
    build_grid(items, materials, seed, layout=CLEAN) -> list[GridPrompt]   28 per item
    study_columns(item) -> dict    the task's own columns as the study's files name them
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .item import GRID_TASKS, Item, TaskDataError
from .protocol import GridMaterials
from .seeding import rng_for

PROMPT_TYPES = ("original", "original_neutral", "incorrect", "correct")
_BELIEF_TYPES = ("incorrect", "correct")


@dataclass(frozen=True)
class PromptLayout:
    """How the pieces are joined. CLEAN and COMPAT are the two shipped layouts."""

    name: str
    neutral_leading_space_tasks: tuple[str, ...] = ()   # " N ..." / " S. ..." (compat: trivia, truthfulqa)
    stake_terminator: str = ""                          # appended to a stake statement standing for N
    no_neutral_belief_tasks: tuple[str, ...] = ()       # belief prompts "S Q B" without N (compat: medqa)
    lowercase_answer_tasks: tuple[str, ...] = ()        # answer.lower() in B (compat: medqa)
    plain_uses_original_question_tasks: tuple[str, ...] = ()  # "original" prompts on the source text
    disinfo_belief_prefix: str = ""                     # compat: "I told them "
    disinfo_lowercase: str = "smart"                    # "smart" | "always" (compat)
    strip_answer_period: bool = True                    # "X." -> "X" before the template's "."
    missing_answer_text: str | None = None              # compat: "None"; CLEAN raises instead
    tidy_statements: bool = True                        # "right?." -> "right?" (an artefact of one statement)

    def __post_init__(self) -> None:
        if self.disinfo_lowercase not in ("smart", "always"):
            raise TaskDataError(f"PromptLayout.disinfo_lowercase must be 'smart' or 'always', "
                                f"got {self.disinfo_lowercase!r}")


CLEAN = PromptLayout("clean")
COMPAT = PromptLayout(
    "compat",
    neutral_leading_space_tasks=("triviaqa", "truthfulqa"),
    stake_terminator=".",
    no_neutral_belief_tasks=("medqa",),
    lowercase_answer_tasks=("medqa",),
    plain_uses_original_question_tasks=("medqa",),
    disinfo_belief_prefix="I told them ",
    disinfo_lowercase="always",
    strip_answer_period=False,
    tidy_statements=False,
    missing_answer_text="None",
)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _smart_lower(statement: str, question: str) -> str:
    """Lower-case the first letter unless the first word is a name or acronym: a word with
    capitals after its first letter (NFL, U.S.) or one written capitalised inside the question
    ("Bigfoot", "El Capitan")."""
    first = statement.split(" ", 1)[0]
    if first == "I" or any(c.isupper() for c in first[1:]):
        return statement
    bare = first.strip(",.;:'\"")
    if re.search(r"(?<=\S )" + re.escape(bare) + r"\b", question):
        return statement
    return _lower_first(statement)


def _answer_text(value: str | None, item: Item, layout: PromptLayout, which: str) -> str:
    if value is None:
        if layout.missing_answer_text is None:
            raise TaskDataError(f"{item.task} item {item.key!r} has no {which} answer; a belief prompt needs one")
        return layout.missing_answer_text
    text = value.strip() if layout.strip_answer_period else value
    if layout.strip_answer_period:
        text = text.rstrip(".").rstrip()
    if item.task in layout.lowercase_answer_tasks:
        text = text.lower()
    return text


def _belief_sentence(item: Item, prompt_type: str, materials: GridMaterials, layout: PromptLayout) -> str:
    t = materials.belief_templates
    if item.task == "disinfo":
        value = item.wrong_answer if prompt_type == "incorrect" else item.right_answer
        if value is None:
            raise TaskDataError(f"disinfo item {item.key!r} lacks ground_{'false' if prompt_type == 'incorrect' else 'truth'}")
        value = value.strip()
        value = value[:-1] if value.endswith(".") else value
        value = _lower_first(value) if layout.disinfo_lowercase == "always" else _smart_lower(value, item.question)
        key = "disinfo_assert_wrong" if prompt_type == "incorrect" else "disinfo_deny_right"
        placeholder = "ground_false" if prompt_type == "incorrect" else "ground_truth"
        return layout.disinfo_belief_prefix + t[key].format(**{placeholder: value})
    if prompt_type == "incorrect":
        return t["assert_wrong"].format(wrong=_answer_text(item.wrong_answer, item, layout, "wrong"))
    return t["deny_right"].format(right=_answer_text(item.right_answer, item, layout, "right"))


def _question_text(item: Item, prompt_type: str, layout: PromptLayout) -> str:
    if prompt_type == "original" and item.task in layout.plain_uses_original_question_tasks:
        original = item.extra.get("original_question")
        if not original:
            raise TaskDataError(f"{item.task} item {item.key!r}: layout {layout.name!r} needs "
                                "extra['original_question']")
        return original
    return item.question


def _terminated(statement: str, layout: PromptLayout) -> str:
    if layout.stake_terminator:
        return statement + layout.stake_terminator
    return statement if statement.rstrip()[-1:] in ".!?" else statement + "."


def build_prompt(item: Item, context: str, prompt_type: str, statement: str | None,
                 materials: GridMaterials, layout: PromptLayout = CLEAN) -> str:
    """The user message for one grid cell. `statement` is the context's statement (None for
    "unmodified")."""
    if prompt_type not in PROMPT_TYPES:
        raise TaskDataError(f"prompt_type {prompt_type!r} is not one of {PROMPT_TYPES}")
    if context not in materials.contexts:
        raise TaskDataError(f"context {context!r} is not one of {materials.contexts}")
    if (context == "unmodified") != (statement is None):
        raise TaskDataError(f"context {context!r} with statement {statement!r}: 'unmodified' takes "
                            "no statement, every other context needs one")
    if prompt_type == "original_neutral" and context != "unmodified":
        raise TaskDataError(f"prompt_type 'original_neutral' exists only for 'unmodified', not {context!r}")
    q = _question_text(item, prompt_type, layout)
    n = materials.neutral_sentence
    if statement is not None and layout.tidy_statements:
        statement = re.sub(r"([?!])\.$", r"\1", statement.strip())
    lead = " " if item.task in layout.neutral_leading_space_tasks else ""
    if prompt_type == "original":
        return q if statement is None else f"{statement} {q}"
    if prompt_type == "original_neutral":
        return f"{lead}{n} {q}"
    b = _belief_sentence(item, prompt_type, materials, layout)
    if item.task in layout.no_neutral_belief_tasks:
        return f"{q} {b}" if statement is None else f"{statement} {q} {b}"
    group = materials.group(context)
    if group == "unmodified":
        head = f"{lead}{n}"
    elif group == "stake":
        head = f"{lead}{_terminated(statement, layout)}"
    else:
        head = f"{statement} {lead}{n}"
    return f"{head} {q} {b}"


def pick_statement(materials: GridMaterials, task: str, key: str, context: str, seed: int) -> str | None:
    """The statement for (task, question key, context): a seeded choice, None for "unmodified"."""
    if context == "unmodified":
        return None
    return rng_for(seed, "statement", task, key, context).choice(materials.statements[context])


def grid_cells(materials: GridMaterials) -> list[tuple[str, str]]:
    """(context, prompt_type) in grid order: unmodified x 4 prompt types, then 3 per context."""
    cells = []
    for c in materials.contexts:
        types = PROMPT_TYPES if c == "unmodified" else ("original", *_BELIEF_TYPES)
        cells += [(c, t) for t in types]
    return cells


def study_columns(item: Item) -> dict[str, Any]:
    """The task's own columns, named as in the study's released files."""
    e = item.extra
    if item.task in ("triviaqa", "truthfulqa"):
        return {"content_key": item.key, "correct_answer": item.right_answer,
                "incorrect_answer": item.wrong_answer}
    if item.task == "disinfo":
        return {"task_id": item.key, "belief_elicit_1": e.get("belief_elicit_1"),
                "ground_truth": item.right_answer, "ground_false": item.wrong_answer,
                "proposition": e.get("proposition"), "prompt_disinfo": item.question}
    if item.task == "medqa":
        return {"question": item.question, "answer": item.right_answer, "options": e.get("options"),
                "meta_info": e.get("meta_info"), "answer_idx": e.get("answer_idx"),
                "original_question": e.get("original_question", item.question),
                "wrong_answer": item.wrong_answer}
    raise TaskDataError(f"task {item.task!r} has no grid; grid tasks are {GRID_TASKS}")


@dataclass(frozen=True)
class GridPrompt:
    """One prompt of the grid. statement: the protocol statement drawn for (task, key, context),
    as written in protocol.json (CLEAN may tidy it in the prompt); columns: study_columns(item)."""

    task: str
    key: str
    amendment_type: str
    prompt_type: str
    statement: str | None
    prompt: str
    columns: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_row(self) -> dict[str, Any]:
        """Study layout: the task's columns, then prompt, prompt_type (also as `prompt_template`
        for the tasks whose released files name it so), amendment_type; plus task, question_key,
        statement."""
        row = dict(self.columns)
        row["prompt"] = self.prompt
        row["prompt_type"] = self.prompt_type
        if self.task != "medqa":
            row["prompt_template"] = self.prompt_type
        row["amendment_type"] = self.amendment_type
        row.update(task=self.task, question_key=self.key, statement=self.statement)
        return row


def build_grid(items: Sequence[Item], materials: GridMaterials, seed: int,
               layout: PromptLayout = CLEAN) -> list[GridPrompt]:
    """28 GridPrompts per item, item-major in grid_cells order. Items need a wrong answer
    (wrong.assign_wrong_answers) and, for MedQA, the first-person rewrite (medqa.convert_items)."""
    cells = grid_cells(materials)
    out = []
    for it in items:
        if it.task not in GRID_TASKS:
            raise TaskDataError(f"{it.task} item {it.key!r}: the grid covers only {GRID_TASKS}")
        if it.wrong_answer is None:
            raise TaskDataError(f"{it.task} item {it.key!r} has no wrong_answer; run "
                                "warmfast.tasks.wrong.assign_wrong_answers first")
        cols = study_columns(it)
        statements = {c: pick_statement(materials, it.task, it.key, c, seed) for c in materials.contexts}
        for context, ptype in cells:
            prompt = build_prompt(it, context, ptype, statements[context], materials, layout)
            out.append(GridPrompt(it.task, it.key, context, ptype, statements[context], prompt, cols))
    return out
