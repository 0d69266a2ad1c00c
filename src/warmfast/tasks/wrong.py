"""Wrong answers for the belief conditions ("I think the answer is WRONG").

Sources (PROTOCOL section 4): TruthfulQA and MASK bring their own (set by the loaders; a
sycophancy-eval answer.jsonl overrides both for TriviaQA / TruthfulQA); MedQA: a seeded choice
among the distractor options; TriviaQA: a seeded answer of another question, or a model-proposed
one through the `proposer` hook.

Public API:
    WrongAnswerProposer                 Callable[[Item], str | None]: propose a wrong answer
    medqa_wrong_answers(items, seed)    -> list[Item] with wrong_answer = a seeded distractor
    triviaqa_wrong_answers(items, seed, proposer=None, pool_items=None) -> list[Item]
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


def triviaqa_wrong_answers(items: Sequence[Item], seed: int, proposer: WrongAnswerProposer | None = None,
                           pool_items: Sequence[Item] | None = None) -> list[Item]:
    """Per item: proposer(item) if given and it returns a usable answer (not one of the item's
    aliases); else the canonical answer of another question, drawn with rng_for(seed,
    "triviaqa-wrong", key) from pool_items (default: items) among those matching none of this
    item's aliases. The draw depends only on (seed, key, pool), not on the order of items.
    extra["wrong_source"] says which ("proposer" or "other_question")."""
    pool_items = items if pool_items is None else pool_items
    pool = sorted({it.right_answer for it in pool_items if it.right_answer})
    if len(pool) < 2 and proposer is None:
        raise TaskDataError("triviaqa wrong answers from other questions need at least 2 distinct answers")
    out = []
    for it in items:
        aliases = {_norm(a) for a in it.correct_answers}
        wrong, source = None, None
        if proposer is not None:
            proposal = proposer(it)
            if proposal and proposal.strip() and _norm(proposal) not in aliases:
                wrong, source = proposal.strip(), "proposer"
        if wrong is None:
            rng = rng_for(seed, "triviaqa-wrong", it.key)
            for _ in range(64):  # rejection sampling: a pool answer is rarely an alias of this item
                cand = rng.choice(pool)
                if _norm(cand) not in aliases:
                    wrong = cand
                    break
            else:
                candidates = [a for a in pool if _norm(a) not in aliases]
                if not candidates:
                    raise TaskDataError(f"triviaqa item {it.key!r}: every other answer matches its aliases")
                wrong = rng.choice(candidates)
            source = "other_question"
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
            filled = triviaqa_wrong_answers(subset, seed, proposer, pool_items=pool_items)
        else:
            raise TaskDataError(f"{task} item {subset[0].key!r} has no wrong answer; its loader should set it")
        for i, it in zip(idx, filled):
            out[i] = it
    return out
