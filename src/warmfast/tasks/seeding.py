"""Seeded choices that depend only on (seed, names), never on call order or process.

Public API:
    rng_for(seed, *parts) -> random.Random   an RNG keyed by sha256 of the seed and the parts
    sample_items(items, n, seed) -> list[Item]  a seeded sample of n items, kept in file order
"""
from __future__ import annotations

import hashlib
import random
from typing import Sequence

from .item import Item, TaskDataError


def rng_for(seed: int, *parts: object) -> random.Random:
    """random.Random keyed by (seed, parts): e.g. rng_for(0, "statement", task, key, context)."""
    text = "\x1f".join([str(int(seed)), *map(str, parts)])
    return random.Random(int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big"))


def sample_items(items: Sequence[Item], n: int | None, seed: int) -> list[Item]:
    """n items drawn without replacement with random.Random(seed) (the study: 500 per task;
    n=None or n >= len(items) keeps all, e.g. Disinfo's 125). Returned in their file order."""
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        raise TaskDataError(f"sample size n={n} must be positive")
    picked = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in picked]
