"""Result identity: every stored result is keyed by the SHA-256 of the canonical JSON of what
determines it, never by source text or object identity.

What goes into a key is written out explicitly by whoever makes it (a job's spec, a judge's
settings, an endpoint request). Where the result also depends on code (answer-extraction rules,
prompt rendering), the code carries a version constant that is part of the key and is raised by
hand when its behaviour changes (`judge/extract.py: RULES_VERSION`); a refactoring that changes
nothing leaves every key, and so every stored result, valid.

This module imports nothing of warmfast, so every layer can key its results the same way.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping


def canonical_json(value: object) -> str:
    """JSON with sorted keys and no whitespace: equal content gives equal bytes (hence equal hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_key(content: Mapping[str, object]) -> str:
    """SHA-256 hex digest of `content`'s canonical JSON: the identity of a job, judgement or request."""
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()
