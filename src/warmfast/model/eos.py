"""The end-of-sequence ids of a model: the one place an `eos_token_id` value is read.

config.json and generation_config.json give an int or a list of ints (Llama 3: [128001, 128008,
128009]); the tokenizer has its own eos token. Generation stops at any of them (engine/tokens.py).
"""
from __future__ import annotations

import json
from pathlib import Path

from warmfast.errors import InputError


def eos_ids(value: object, where: str) -> list[int]:
    """An `eos_token_id` value (None, an int or a list of ints) as a list; anything else is an
    error naming `where` (the file) and the value."""
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise InputError(f"{where}: eos_token_id must be a non-negative int or a list of them, got {value!r}")
    return list(values)


def load_eos_ids(model_dir: str | Path, tokenizer_eos: int | None = None) -> frozenset[int]:
    """EOS ids of a model folder: generation_config.json and config.json (either may be absent),
    plus the tokenizer's own eos_token_id. Malformed values are an error."""
    ids: set[int] = set()
    for fname in ("generation_config.json", "config.json"):
        path = Path(model_dir) / fname
        if not path.is_file():
            continue
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON ({err})") from err
        ids.update(eos_ids(raw.get("eos_token_id"), str(path)))
    if tokenizer_eos is not None:
        ids.add(int(tokenizer_eos))
    return frozenset(ids)
