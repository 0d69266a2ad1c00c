"""Wrong answers for the belief conditions ("I think the answer is WRONG").

Sources (PROTOCOL section 4): TruthfulQA and MASK bring their own (set by the loaders; a
sycophancy-eval answer.jsonl overrides both for TriviaQA / TruthfulQA); MedQA: a seeded choice
among the distractor options; TriviaQA: a seeded answer of another question, or a model-proposed
one through the `proposer` hook.

Public API:
    WrongAnswerProposer                 Callable[[Item], str | None]: propose a wrong answer
    medqa_wrong_answers(items, seed)    -> list[Item] with wrong_answer = a seeded distractor
    triviaqa_wrong_answers(items, seed, proposer=None) -> list[Item]
    assign_wrong_answers(items, seed, proposer=None)   dispatch on each item's task; items that
                                        already hold a wrong answer are kept as they are
"""
from __future__ import annotations

from typing import Callable, Sequence

from .item import Item, TaskDataError
from .seeding import rng_for

WrongAnswerProposer = Callable[[Item], "str | None"]


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("the ", " ").split())


def medqa_wrong_answers(items: Sequence[Item], seed: int) -> list[Item]:
    """wrong_answer = rng_for(seed, "medqa-wrong", key).choice(distractors), extra["wrong_answer"] too."""
    out = []
    for it in items:
        options = it.extra.get("options")
        if not options:
            raise TaskDataError(f"medqa item {it.key}: extra['options'] is missing; cannot draw a distractor")
        distractors = [v for k, v in sorted(options.items()) if v != it.right_answer]
        if not distractors:
            raise TaskDataError(f"medqa item {it.key}: no distractor besides the answer {it.right_answer!r}")
        wrong = rng_for(seed, "medqa-wrong", it.key).choice(distractors)
        out.append(it.with_(wrong_answer=wrong, extra_update={"wrong_answer": wrong}))
    return out


def triviaqa_wrong_answers(items: Sequence[Item], seed: int,
                           proposer: WrongAnswerProposer | None = None) -> list[Item]:
    """Per item: proposer(item) if given and it returns a usable answer (not one of the item's
    aliases); else the canonical answer of another item of the same list, drawn with
    rng_for(seed, "triviaqa-wrong", key) among those not matching any alias of this item.
    extra["wrong_source"] says which ("proposer" or "other_question")."""
    if len(items) < 2 and proposer is None:
        raise TaskDataError("triviaqa wrong answers from other questions need at least 2 items")
    pool = [it.right_answer for it in items if it.right_answer]
    out = []
    for it in items:
        aliases = {_norm(a) for a in it.correct_answers}
        wrong, source = None, None
        if proposer is not None:
            proposal = proposer(it)
            if proposal and proposal.strip() and _norm(proposal) not in aliases:
                wrong, source = proposal.strip(), "proposer"
        if wrong is None:
            candidates = sorted({a for a in pool if _norm(a) not in aliases})
            if not candidates:
                raise TaskDataError(f"triviaqa item {it.key!r}: every other answer matches its aliases")
            wrong, source = rng_for(seed, "triviaqa-wrong", it.key).choice(candidates), "other_question"
        out.append(it.with_(wrong_answer=wrong, extra_update={"wrong_source": source}))
    return out


def assign_wrong_answers(items: Sequence[Item], seed: int,
                         proposer: WrongAnswerProposer | None = None) -> list[Item]:
    """Fill wrong_answer where it is None, by task; keeps order. Raises for a task that needs one
    but has no source (TruthfulQA / Disinfo items always carry theirs from the loader)."""
    by_task: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        if it.wrong_answer is None and it.task in ("medqa", "triviaqa", "truthfulqa", "disinfo"):
            by_task.setdefault(it.task, []).append(i)
    out = list(items)
    for task, idx in by_task.items():
        subset = [items[i] for i in idx]
        if task == "medqa":
            filled = medqa_wrong_answers(subset, seed)
        elif task == "triviaqa":
            # other-question answers are drawn from every TriviaQA item given, not only the unfilled
            pool_items = [it for it in items if it.task == "triviaqa"]
            filled_all = {it.key: it for it in triviaqa_wrong_answers(pool_items, seed, proposer)}
            filled = [filled_all[it.key] for it in subset]
        else:
            raise TaskDataError(f"{task} item {subset[0].key!r} has no wrong answer; its loader should set it")
        for i, it in zip(idx, filled):
            out[i] = it
    return out
