"""ShareGPT conversations (the V3 "unfiltered cleaned split" layout) read into checked dataclasses.

File layout: a JSON list of records `{"id": str, "conversations": [{"from": str, "value": str}, ...]}`.
Speakers map to chat roles: human/user -> user; gpt/chatgpt/bing/assistant -> assistant;
system -> system. Anything else is an error that names the record and the field.

Chunked ids: the V3 split cuts long source conversations into records `<source>_<k>`; `source_id`
is the part before the last underscore, so held-out sets can be kept disjoint by source.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from warmfast.errors import InputError, WarmfastError

ROLE_OF_SPEAKER = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
                   "bing": "assistant", "assistant": "assistant", "system": "system"}


class ShareGPTError(WarmfastError, ValueError):
    """A ShareGPT file or record that cannot be read; the message names the file, record and field."""


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # "user" | "assistant" | "system"
    text: str

    def __post_init__(self):
        if self.role not in ("user", "assistant", "system"):
            raise InputError(f"Turn.role must be user, assistant or system; got {self.role!r}")


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    turns: tuple[Turn, ...]

    @property
    def source_id(self) -> str:
        """The source conversation this record was split from (`abc_3` -> `abc`)."""
        head, sep, tail = self.id.split("#")[0].rpartition("_")
        return head if sep and tail.isdigit() else self.id

    def chat(self, max_turns: int = 20) -> tuple[Turn, ...]:
        """The trainable dialogue: user/assistant turns alternating, starting at the first user turn.

        System turns are dropped, empty turns end the dialogue, and the dialogue stops where the
        alternation breaks (two user turns in a row, ...). It is cut to at most `max_turns` turns
        (the protocol's 20) and ends on an assistant turn; () when no user->assistant pair exists.
        """
        if max_turns < 2:
            raise InputError(f"max_turns must be >= 2, got {max_turns}")
        turns = [t for t in self.turns if t.role != "system"]
        start = next((i for i, t in enumerate(turns) if t.role == "user"), len(turns))
        out: list[Turn] = []
        for t in turns[start:]:
            want = "user" if len(out) % 2 == 0 else "assistant"
            if t.role != want or not t.text.strip():
                break
            out.append(t)
        out = out[:max_turns]
        if out and out[-1].role == "user":
            out.pop()
        return tuple(out)

    def messages(self, max_turns: int = 20) -> list[dict]:
        """`chat()` as [{"role", "content"}] for chat templates."""
        return [{"role": t.role, "content": t.text} for t in self.chat(max_turns)]


def _record(raw: object, index: int, path: Path) -> Conversation:
    where = f"{path}: record #{index}"
    if not isinstance(raw, dict):
        raise ShareGPTError(f"{where} is a {type(raw).__name__}, expected an object with 'id' and "
                            "'conversations'")
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid:
        raise ShareGPTError(f"{where}: field 'id' must be a non-empty string, got {rid!r}")
    where = f"{path}: record #{index} (id {rid!r})"
    convs = raw.get("conversations")
    if not isinstance(convs, list):
        raise ShareGPTError(f"{where}: field 'conversations' must be a list, got "
                            f"{type(convs).__name__} {str(convs)[:60]!r}")
    turns = []
    for j, t in enumerate(convs):
        if not isinstance(t, dict):
            raise ShareGPTError(f"{where}: conversations[{j}] is a {type(t).__name__}, expected "
                                "an object with 'from' and 'value'")
        speaker, value = t.get("from"), t.get("value")
        if speaker not in ROLE_OF_SPEAKER:
            raise ShareGPTError(f"{where}: conversations[{j}].from is {speaker!r}; known speakers "
                                f"are {sorted(ROLE_OF_SPEAKER)}")
        if not isinstance(value, str):
            raise ShareGPTError(f"{where}: conversations[{j}].value must be a string, got "
                                f"{type(value).__name__} {str(value)[:60]!r}")
        turns.append(Turn(ROLE_OF_SPEAKER[speaker], value))
    return Conversation(rid, tuple(turns))


def load_sharegpt(path: str | Path, limit: int | None = None) -> list[Conversation]:
    """Read a ShareGPT V3 JSON file; the first `limit` records when given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ShareGPT file {path} does not exist (the V3 file is "
                                "ShareGPT_V3_unfiltered_cleaned_split.json)")
    try:
        data = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as err:
        raise ShareGPTError(f"{path} is not valid JSON: {err.msg} at line {err.lineno} column "
                            f"{err.colno} (a truncated download?)") from err
    if not isinstance(data, list):
        raise ShareGPTError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    records = data if limit is None else data[:limit]
    out = [_record(r, i, path) for i, r in enumerate(records)]
    # The real V3 file repeats some ids for different conversations (32 ids twice in the first
    # 5,000 records): the k-th repeat (k >= 2) becomes `<id>#k`, so ids stay unique and stable.
    seen: Counter[str] = Counter()
    for i, c in enumerate(out):
        seen[c.id] += 1
        if seen[c.id] > 1:
            out[i] = Conversation(f"{c.id}#{seen[c.id]}", c.turns)
    return out
