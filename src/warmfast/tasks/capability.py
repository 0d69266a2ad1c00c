"""Zero-shot prompts for the capability checks (PROTOCOL section 4: MMLU zero-shot multiple
choice, GSM8K zero-shot chain of thought, AdvBench as given). The study did not publish its
templates; these are warmfast's, and each is a config value (pass your own template).

Public API:
    MMLU_TEMPLATE, GSM8K_TEMPLATE          defaults; placeholders {subject} {question} {A} {B} {C} {D}
                                           / {question}
    mmlu_prompt(item, template=MMLU_TEMPLATE) -> str
    gsm8k_prompt(item, template=GSM8K_TEMPLATE) -> str
    advbench_prompt(item) -> str           the request itself
"""
from __future__ import annotations

from .item import Item, TaskDataError

MMLU_TEMPLATE = ("The following is a multiple choice question about {subject}. Answer with the letter "
                 "of the correct option.\n\n{question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}")
GSM8K_TEMPLATE = ("{question}\nLet's think step by step. End your reply with the final answer as a "
                  "number on its own line, written as: #### <number>")


def _check(item: Item, task: str) -> None:
    if item.task != task:
        raise TaskDataError(f"{task} prompt given a {item.task} item ({item.key!r})")


def mmlu_prompt(item: Item, template: str = MMLU_TEMPLATE) -> str:
    _check(item, "mmlu")
    choices = item.extra.get("choices")
    if not choices or len(choices) != 4:
        raise TaskDataError(f"mmlu item {item.key!r}: extra['choices'] must hold 4 choices")
    subject = str(item.extra.get("subject", "")).replace("_", " ")
    return template.format(subject=subject, question=item.question, **dict(zip("ABCD", choices)))


def gsm8k_prompt(item: Item, template: str = GSM8K_TEMPLATE) -> str:
    _check(item, "gsm8k")
    return template.format(question=item.question)


def advbench_prompt(item: Item) -> str:
    _check(item, "advbench")
    return item.question
