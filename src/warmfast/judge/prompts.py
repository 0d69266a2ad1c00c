"""Judge prompts shared by the log-prob judge and the OpenAI-compatible judge.

A judge prompt is a template with three placeholders, the ones of the sycophancy-eval grader
prompt (protocol.json key `sharma_grader_prompt`): `{query}` the question, `{result}` the answer
being graded, `{answer}` the reference answer(s). Placeholders are substituted literally (no
str.format), so braces inside questions or answers are safe. The two verdict words are part of the
prompt's definition: the first means the answer is correct, the second that it is not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

PLACEHOLDERS = ("{query}", "{result}", "{answer}")


@dataclass(frozen=True, slots=True)
class JudgeItem:
    """What a judge sees for one output: the question, the answer to grade, the reference answer(s)."""

    question: str
    response: str
    answer: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judge's decision. `score` is 1.0 for the positive verdict, 0.0 for the negative, None when the
    judge's reply named neither; `confidence` is the judge's probability for the verdict it gave
    (None for judges that do not expose one); `detail` keeps what the decision rests on."""

    verdict: str | None
    score: float | None
    confidence: float | None
    detail: dict


@dataclass(frozen=True, slots=True)
class JudgePrompt:
    template: str
    verdicts: tuple[str, str] = ("CORRECT", "INCORRECT")
    system: str | None = None

    def __post_init__(self):
        if not isinstance(self.template, str) or "{result}" not in self.template:
            raise ValueError("judge prompt template must be a string containing the placeholder {result} "
                             f"(and usually {{query}} and {{answer}}); got {str(self.template)[:80]!r}")
        if (not isinstance(self.verdicts, (tuple, list)) or len(self.verdicts) != 2
                or not all(isinstance(v, str) and v.strip() for v in self.verdicts)
                or self.verdicts[0] == self.verdicts[1]):
            raise ValueError(f"judge verdicts must be two different non-empty words (positive first), "
                             f"got {self.verdicts!r}")
        object.__setattr__(self, "verdicts", tuple(self.verdicts))
        if self.system is not None and not isinstance(self.system, str):
            raise ValueError(f"judge system prompt must be a string or null, got {self.system!r}")

    def render(self, item: JudgeItem) -> str:
        text = self.template
        for placeholder, value in zip(PLACEHOLDERS, (item.question, item.response, item.answer)):
            text = text.replace(placeholder, value)
        return text

    def messages(self, item: JudgeItem) -> list[dict]:
        msgs = [] if self.system is None else [{"role": "system", "content": self.system}]
        return msgs + [{"role": "user", "content": self.render(item)}]

    def spec(self) -> dict:
        return {"template": self.template, "verdicts": list(self.verdicts), "system": self.system}

    def parse(self, reply: str) -> Verdict:
        """Read a generated reply: the first verdict word standing as a whole word (case-insensitive).

        Whole words matter: "INCORRECT" contains "CORRECT". A reply naming neither gives verdict None.
        """
        words = sorted(self.verdicts, key=len, reverse=True)
        pattern = r"(?<![A-Za-z])(" + "|".join(re.escape(w) for w in words) + r")(?![A-Za-z])"
        found = re.search(pattern, reply, flags=re.IGNORECASE)
        if found is None:
            return Verdict(None, None, None, {"reply": reply, "parsed": False})
        word = next(w for w in self.verdicts if w.lower() == found.group(1).lower())
        return Verdict(word, 1.0 if word == self.verdicts[0] else 0.0, None, {"reply": reply, "parsed": True})
