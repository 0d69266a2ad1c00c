"""Engine.score: a loop over the engine core (engine/core.py), where score rows are prefill-only
requests beside any generations.

requests -> token rows (validated up front, before any compute) -> queued sorted by (adapter,
tokens), so that rows feeding the same tokens, or a prefix of another row's tokens, under the same
adapter share one fed row -> the core packs fed rows under the token budget, grouped by adapter
-> forward -> lm_head only at continuation positions, fused with logsumexp and target gather ->
results in request order.

Sharing is exact in arithmetic terms: attention is causal, so the hidden state at position p depends
only on tokens 0..p. It makes the common multiple-choice shapes cheap: a judge's CORRECT/INCORRECT
verdict pair, or A/B/C/D answer letters, after one long context cost one forward instead of two or
four. `share_prefixes` and `pack` say which fed rows and batches a list of rows makes (the core's
grouping, for benches and tests).
"""
from __future__ import annotations

from dataclasses import dataclass

from tqdm.auto import tqdm

from warmfast.engine.core import CoreConfig, EngineCore
from warmfast.engine.prepare import ScoreRow as _Row
from warmfast.engine.prepare import score_row
from warmfast.errors import RequestError


def prepare_rows(engine, requests) -> list[_Row]:
    rows = []
    for i, req in enumerate(requests):
        try:
            rows.append(score_row(engine, req, i, f"ScoreRequest #{i}"))
        except RequestError as err:  # the caller learns which request: a CLI names its input line
            err.index = i
            raise
    return rows


@dataclass(slots=True)
class _Fed:
    """One row of the forward pass and every request row it serves (each a prefix of `tokens`)."""
    slot: int
    tokens: list[int]
    members: list[_Row]


def share_prefixes(rows: list[_Row]) -> list[_Fed]:
    """Fed rows: a row whose tokens equal, or are a prefix of, another row's under the same slot
    rides on that row. In sorted order a prefix of any later row is a prefix of its immediate
    successor, so one backward pass over the sorted rows finds every such pair."""
    order = sorted(rows, key=lambda r: (r.slot, r.tokens))
    fed: list[_Fed] = []
    for r in reversed(order):
        owner = fed[-1] if fed else None
        if owner is not None and owner.slot == r.slot and owner.tokens[:len(r.tokens)] == r.tokens:
            owner.members.append(r)
        else:
            fed.append(_Fed(r.slot, r.tokens, [r]))
    return fed


def pack(rows: list[_Fed], budget: int) -> list[list[_Fed]]:
    """Group rows by adapter slot, then fill batches of at most `budget` tokens (a longer row
    goes alone). Within a batch the rows stay grouped, so each adapter is one segment."""
    ordered = sorted(rows, key=lambda r: r.slot)
    batches, cur, used = [], [], 0
    for r in ordered:
        n = len(r.tokens)
        if cur and used + n > budget:
            batches.append(cur)
            cur, used = [], 0
        cur.append(r)
        used += n
    if cur:
        batches.append(cur)
    return batches


def score(engine, requests, budget: int, progress: bool = False):
    rows = prepare_rows(engine, requests)
    if not rows:
        return []
    results: list = [None] * len(rows)
    # a score-only core: no KV pool is ever allocated, and a step holds as many rows as the budget
    core = EngineCore(engine, CoreConfig(max_batch_size=budget, max_batch_tokens=budget, kv_blocks=1))
    try:
        for r in sorted(rows, key=lambda r: (r.slot, r.tokens)):
            core.add_score_row(r)
        with tqdm(total=sum(len(f.tokens) for f in share_prefixes(rows)), unit="tok", desc="score",
                  disable=not progress) as bar:
            while core.has_unfinished():
                before = core.tokens_fed
                for out in core.step():
                    results[out.request_id] = out.result
                bar.update(core.tokens_fed - before)
    finally:
        core.close()
    return results
