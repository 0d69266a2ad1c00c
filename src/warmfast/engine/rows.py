"""The rows `warmfast score` and `warmfast generate` read: one schema per command, every field
honoured or refused with the file, line and field named.

A schema is a table of `Field`s (name -> check, default, OpenAI aliases); to add a field, add an
entry to SCORE_ROW or GENERATE_ROW (e.g. `SCORE_ROW.add(Field("name", check, default))`) and use it where
the command builds its requests. A field no schema knows is an error that suggests the nearest
known name (`"adaptor"` -> did you mean 'adapter'?); a field OpenAI's API has and warmfast does not
run (`frequency_penalty`, `top_logprobs`, ...) is refused by name. OpenAI's spellings are read with
OpenAI's meaning: `max_tokens` / `max_completion_tokens` = `max_new_tokens`, `stop` as one string =
one stop string, `n` = that many samples of the prompt (the output row then holds `choices`).
`logprobs` = k (0..20, as the legacy completions API): each generated token's log-prob and the k
most likely tokens; `prompt_logprobs` = true: the prompt's too (the output rows: docs/cli.md).
`id` and `metadata` are carried to the output unchanged, for the caller's own bookkeeping.
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmfast.errors import InputError


class _Bad(Exception):
    """A field value a check refuses; the message says what was expected (no field name)."""


# ---- checks: value -> normalised value, or _Bad -------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v not in (float("inf"), float("-inf"))


def int_in(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    bound = "" if hi is None else f" and < {'2^64' if hi == 2**64 else hi}"

    def check(v):
        if not _is_int(v) or v < lo or (hi is not None and v >= hi):
            raise _Bad(f"must be an integer >= {lo}{bound}, got {v!r}")
        return v
    return check


def number_in(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Callable[[Any], float]:
    def check(v):
        ok = _is_num(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if not ok:
            span = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
            raise _Bad(f"must be a number in {span}, got {v!r}")
        return float(v)
    return check


def text_or_ids(v):
    if isinstance(v, str):
        return v
    if isinstance(v, list) and all(_is_int(t) and t >= 0 for t in v):
        return v
    raise _Bad(f"must be a string or a list of token ids (integers >= 0), got {type(v).__name__} {_short(v)}")


def nonempty(check):
    def inner(v):
        v = check(v)
        if len(v) == 0:
            raise _Bad("must not be empty")
        return v
    return inner


def adapter_name(v):
    if v is None or (isinstance(v, str) and v):
        return v
    raise _Bad(f"must be an adapter name given with --adapter NAME=DIR, or null/'base' for the base model, got {v!r}")


def stop_strings(v):
    if v is None:
        return []
    if isinstance(v, str):  # OpenAI: one stop string (not a list of characters)
        v = [v]
    if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
        raise _Bad(f"must be a string or a list of non-empty strings, got {_short(v)}")
    return v


ROLES = ("system", "user", "assistant")


def chat_messages(v):
    if not isinstance(v, list) or not v:
        raise _Bad(f"must be a non-empty list of {{'role': ..., 'content': ...}} objects, got {_short(v)}")
    for i, m in enumerate(v):
        if not isinstance(m, dict):
            raise _Bad(f"[{i}] must be an object with 'role' and 'content', got {_short(m)}")
        missing = [k for k in ("role", "content") if k not in m]
        if missing:
            raise _Bad(f"[{i}] lacks {' and '.join(repr(k) for k in missing)}; got keys {sorted(m)}")
        extra = sorted(set(m) - {"role", "content", "name"})
        if extra:
            raise _Bad(f"[{i}] has unknown key(s) {extra}; a message holds role, content (and name)")
        if m["role"] not in ROLES:
            raise _Bad(f"[{i}].role must be one of {list(ROLES)}, got {m['role']!r}")
        if not isinstance(m["content"], str):
            raise _Bad(f"[{i}].content must be a string, got {_short(m['content'])}")
    return v


def anything(v):
    return v


MAX_LOGPROBS = 20  # as SamplingParams (engine/requests.py) and OpenAI's top_logprobs


def logprobs_k(v):
    if v is None:
        return None
    if isinstance(v, bool):  # OpenAI chat's logprobs=true (+ top_logprobs=k) is one number here
        raise _Bad(f"must be an integer in [0, {MAX_LOGPROBS}] (the most likely tokens listed per token; "
                   f"0 = the chosen token's log-prob alone), got {v!r}; OpenAI chat's "
                   "logprobs=true + top_logprobs=k is logprobs=k here")
    if not _is_int(v) or not 0 <= v <= MAX_LOGPROBS:
        raise _Bad(f"must be an integer in [0, {MAX_LOGPROBS}] (the most likely tokens listed per token; "
                   f"0 = the chosen token's log-prob alone), got {_short(v)}")
    return v


def true_or_false(v):
    if v is None or isinstance(v, bool):
        return v
    raise _Bad(f"must be true or false, got {_short(v)}")


def _short(v) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- schemas -------------------------------------------------------------------------------------
_MISSING = object()


@dataclass(frozen=True)
class Field:
    name: str
    check: Callable[[Any], Any]
    default: Any = _MISSING  # _MISSING: required
    aliases: tuple[str, ...] = ()  # other spellings read with the same meaning (OpenAI's)


@dataclass
class RowSchema:
    command: str
    fields: dict[str, Field] = field(default_factory=dict)
    # fields OpenAI's API (or a neighbour tool) has that this command does not run: name -> why
    refused: dict[str, str] = field(default_factory=dict)
    # whole-row rules: values -> an error message, or None
    rules: list[Callable[[dict], str | None]] = field(default_factory=list)

    def add(self, f: Field) -> None:
        self.fields[f.name] = f

    def check(self, name: str, value: Any, label: str) -> Any:
        """One value checked as field `name` would be (e.g. a command-line flag of the same meaning)."""
        try:
            return self.fields[name].check(value)
        except _Bad as err:
            raise InputError(f"{label}: {err}") from None

    def known(self) -> list[str]:
        return sorted([*self.fields, *(a for f in self.fields.values() for a in f.aliases)])

    def parse(self, raw: Any, where: str) -> dict:
        """The row's values by canonical field name (defaults filled in; None for optional fields
        without a default); InputError naming `where` and the field on any problem."""
        if not isinstance(raw, dict):
            raise InputError(f"{where}: a row must be a JSON object, got {type(raw).__name__} {_short(raw)}")
        given: dict[str, tuple[str, Any]] = {}  # canonical name -> (spelling used, value)
        alias_of = {a: f.name for f in self.fields.values() for a in f.aliases}
        for key, value in raw.items():
            name = key if key in self.fields else alias_of.get(key)
            if name is None:
                raise InputError(f"{where}: {self._unknown(key)}")
            if name in given:
                raise InputError(f"{where}: fields {given[name][0]!r} and {key!r} both give {name}; keep one")
            given[name] = (key, value)
        values = {}
        for name, f in self.fields.items():
            if name not in given:
                if f.default is _MISSING:
                    raise InputError(f"{where}: missing field {name!r} (row has {sorted(raw)})")
                values[name] = f.default() if callable(f.default) else f.default
                continue
            key, value = given[name]
            try:
                values[name] = f.check(value)
            except _Bad as err:
                label = key if key == name else f"{key} (= {name})"
                raise InputError(f"{where}: field {label}: {err}") from None
        for rule in self.rules:
            problem = rule(values)
            if problem:
                raise InputError(f"{where}: {problem}")
        return values

    def _unknown(self, key: str) -> str:
        if key in self.refused:
            return f"field {key!r} is not supported by warmfast {self.command}: {self.refused[key]}"
        near = difflib.get_close_matches(key, self.known(), n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}? " if near else ""
        return f"unknown field {key!r}; {hint}{self.command} rows take {self.known()}"


_PASSTHROUGH = (Field("id", anything, None), Field("metadata", anything, None))
_OPENAI_ONLY = {k: "OpenAI's API has it, warmfast does not run it" for k in (
    "stream", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "logit_bias", "user", "response_format", "tools", "tool_choice", "functions", "best_of", "echo",
    "suffix", "store", "service_tier", "parallel_tool_calls", "stream_options")}
_OPENAI_ONLY["model"] = "the model is the --model folder, and adapters are chosen with 'adapter'"

def _one_context(v: dict) -> str | None:
    if (v["context"] is None) == (v["messages"] is None):
        return ("give exactly one of 'context' (text or token ids) or 'messages' (chat, rendered with the "
                "generation prompt), got " + ("both" if v["context"] is not None else "neither"))
    return None


SCORE_ROW = RowSchema("score", refused=dict(_OPENAI_ONLY), rules=[_one_context])
for _f in (Field("context", text_or_ids, None), Field("messages", chat_messages, None),
           Field("continuation", nonempty(text_or_ids)), Field("adapter", adapter_name, None), *_PASSTHROUGH):
    SCORE_ROW.add(_f)


def _one_prompt(v: dict) -> str | None:
    if (v["prompt"] is None) == (v["messages"] is None):
        return ("give exactly one of 'prompt' (text or token ids) or 'messages' (chat), got "
                + ("both" if v["prompt"] is not None else "neither"))
    return None


GENERATE_ROW = RowSchema("generate", refused=dict(_OPENAI_ONLY), rules=[_one_prompt])
for _f in (Field("prompt", nonempty(text_or_ids), None), Field("messages", chat_messages, None),
           Field("adapter", adapter_name, None),
           Field("max_new_tokens", int_in(1), None, aliases=("max_tokens", "max_completion_tokens")),
           Field("temperature", number_in(0.0, float("inf")), None),
           Field("top_p", number_in(0.0, 1.0, lo_open=True), None),
           Field("top_k", int_in(0), None), Field("min_p", number_in(0.0, 1.0, hi_open=True), None),
           Field("seed", int_in(0, 2**64), None), Field("stop", stop_strings, list),
           Field("request_id", int_in(0, 2**64), None), Field("n", int_in(1), 1),
           Field("logprobs", logprobs_k, None), Field("prompt_logprobs", true_or_false, None), *_PASSTHROUGH):
    GENERATE_ROW.add(_f)
del GENERATE_ROW.refused["logprobs"]
GENERATE_ROW.refused["top_logprobs"] = (f"give logprobs=k instead (an integer in [0, {MAX_LOGPROBS}]: each token's "
                                        "log-prob and the k most likely tokens at its step)")


# ---- files -----------------------------------------------------------------------------------------
def read_jsonl(path: str | Path) -> list[tuple[str, Any]]:
    """(where, parsed JSON) per non-blank line of a JSONL file; where = "FILE line N"."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: " + ("is a folder, not a file" if path.is_dir() else "file not found"))
    out = []
    try:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append((f"{path} line {n}", json.loads(line)))
                except json.JSONDecodeError as err:
                    raise InputError(f"{path} line {n}: not valid JSON ({err.msg} at column {err.colno})") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return out


def parse_rows(records: list[tuple[str, Any]], schema: RowSchema, source: str) -> list[tuple[str, dict, dict]]:
    """(where, values, raw row) per record, each validated against `schema`; no rows is an error."""
    if not records:
        raise InputError(f"{source}: no rows (the file is empty)")
    return [(where, schema.parse(raw, where), raw) for where, raw in records]
