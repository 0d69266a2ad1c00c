"""Query-type labels of PROTOCOL section 1: first-match-wins rules over one (user, assistant) pair.

Order: refusal, factual, creative, technical, advice, other (protocol.json `query_type_rules`):
- refusal: the assistant text contains an apology/inability phrase (case-sensitive, as pinned);
- factual: the user text starts with a wh-word prefix ("What ", case-sensitive) or contains
  explain / define / describe / difference between (case-insensitive);
- creative: the user text contains story / poem / write / create / generate / imagine;
- technical: the assistant text contains a code fence, or the user text contains code / program /
  function / algorithm / debug;
- advice: the user text contains advice / help me / guide / recommend / suggestion;
- other: none of the above.
"Contains" is a plain substring test, lower-cased on both sides where case-insensitive. A
conversation's label is the label of its first user->assistant pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from warmfast.errors import InputError
from warmfast.tasks.protocol import load_protocol_json
from warmfast.train.sharegpt import Conversation

CATEGORIES = ("refusal", "factual", "creative", "technical", "advice", "other")


def load_protocol(path: str | Path | None = None) -> dict:
    """The study's protocol.json (rewrite prompts, query-type rules, lora, sociot, ...): the copy
    shipped with warmfast unless `path` names another."""
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"protocol file {path} does not exist")
    return load_protocol_json(path)


@dataclass(frozen=True)
class QueryTypeRules:
    refusal_in_assistant: tuple[str, ...]
    factual_user_prefix_case_sensitive: tuple[str, ...]
    factual_user_contains: tuple[str, ...]
    creative_user_contains: tuple[str, ...]
    technical_assistant_contains: tuple[str, ...]
    technical_user_contains: tuple[str, ...]
    advice_user_contains: tuple[str, ...]

    def __post_init__(self):
        for name, words in vars(self).items():
            if not words or not all(isinstance(w, str) and w for w in words):
                raise InputError(f"query_type_rules.{name} must be a non-empty list of non-empty "
                                 f"strings, got {words!r}")

    @classmethod
    def from_protocol(cls, protocol: dict) -> "QueryTypeRules":
        rules = protocol.get("query_type_rules")
        if not isinstance(rules, dict):
            raise KeyError(f"protocol has no 'query_type_rules' object; keys are {sorted(protocol)}")
        if tuple(rules.get("order", CATEGORIES)) != CATEGORIES:
            raise InputError(f"query_type_rules.order is {rules.get('order')}; warmfast applies "
                             f"{list(CATEGORIES)}")
        names = [f for f in cls.__dataclass_fields__]
        missing = [n for n in names if n not in rules]
        if missing:
            raise KeyError(f"query_type_rules lacks {missing}")
        return cls(**{n: tuple(rules[n]) for n in names})

    def label(self, user: str, assistant: str) -> str:
        """The query type of one (user message, assistant answer) pair; first match wins."""
        low = user.lower()
        has = lambda words: any(w.lower() in low for w in words)  # noqa: E731
        if any(p in assistant for p in self.refusal_in_assistant):
            return "refusal"
        if user.startswith(self.factual_user_prefix_case_sensitive) or has(self.factual_user_contains):
            return "factual"
        if has(self.creative_user_contains):
            return "creative"
        if any(p in assistant for p in self.technical_assistant_contains) or has(self.technical_user_contains):
            return "technical"
        if has(self.advice_user_contains):
            return "advice"
        return "other"

    def label_conversation(self, conv: Conversation, max_turns: int = 20) -> str | None:
        """Label of the first user->assistant pair of `conv.chat()`; None when it has none."""
        chat = conv.chat(max_turns)
        return self.label(chat[0].text, chat[1].text) if chat else None
