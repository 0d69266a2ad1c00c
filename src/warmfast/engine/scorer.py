"""Scoring: log-probabilities of given continuations, all adapters in shared varlen batches.

requests -> token rows (validated up front, before any compute) -> rows that feed the same
tokens, or a prefix of another row's tokens, under the same adapter share one fed row -> sorted by
adapter slot -> packed under a token budget -> forward -> lm_head only at continuation positions,
fused with logsumexp and target gather -> results in request order.

Sharing is exact in arithmetic terms: attention is causal, so the hidden state at position p depends
only on tokens 0..p. It makes the common multiple-choice shapes cheap: a judge's CORRECT/INCORRECT
verdict pair, or A/B/C/D answer letters, after one long context cost one forward instead of two or
four.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from warmfast.engine.batch import build_prefill
from warmfast.engine.requests import ScoreResult
from warmfast.errors import RequestError
from warmfast.model import parallel


@dataclass(slots=True)
class _Row:
    index: int  # position in the caller's request list
    slot: int
    tokens: list[int]  # context + continuation[:-1]: the last token is never fed
    first_scored: int  # row position whose next-token distribution scores continuation[0]
    targets: list[int]  # the continuation


def _ids(value, encode, where: str, field: str, vocab: int) -> list[int]:
    if isinstance(value, str):
        return list(encode(value))
    if isinstance(value, (list, tuple)) and all(isinstance(t, int) for t in value):
        bad = [t for t in value if not 0 <= t < vocab]
        if bad:
            raise RequestError(f"{where}: {field} token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
        return list(value)
    raise RequestError(f"{where}: {field} must be a string or a list of token ids, got {type(value).__name__}")


def prepare_rows(engine, requests) -> list[_Row]:
    rows, vocab = [], engine.model.cfg.vocab_size
    for i, req in enumerate(requests):
        try:
            where = f"ScoreRequest #{i}"
            slot = engine.slot(req.adapter, where)
            ctx = (engine.tok.chat(req.messages, where) if req.messages is not None else
                   _ids(req.context, engine.tok.encode_context, where, "context", vocab))
            cont = _ids(req.continuation, engine.tok.encode_plain, where, "continuation", vocab)
            if not cont:
                raise RequestError(f"{where}: the continuation is empty ({req.continuation!r}); there is "
                                   "nothing to score")
            if not ctx:
                raise RequestError(f"{where}: the context is empty; pass at least one token (string "
                                   "contexts get the tokenizer's BOS when it has one)")
            total = len(ctx) + len(cont)
            if total - 1 > engine.max_seq_len:  # the last continuation token is scored, never fed
                raise RequestError(f"{where}: context ({len(ctx)} tokens) + continuation ({len(cont)} tokens) "
                                   f"= {total} tokens exceeds the maximum sequence length {engine.max_seq_len} "
                                   f"+ 1 (the model is fed {total - 1} tokens: all but the last)")
            rows.append(_Row(i, slot, ctx + cont[:-1], len(ctx) - 1, cont))
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
    results: list[ScoreResult | None] = [None] * len(rows)
    model, ops, dev = engine.model, engine.ops, engine.device
    fed = share_prefixes(rows)
    bar = tqdm(total=sum(len(f.tokens) for f in fed), unit="tok", desc="score", disable=not progress)
    for group in pack(fed, budget):
        batch = build_prefill([f.tokens for f in group], [f.slot for f in group], dev)
        hidden = model.forward(ops, batch)  # [T, H]
        # positions whose next-token distribution is scored, and the target token at each
        index, targets, served, offset = [], [], [], 0
        for f in group:
            for r in f.members:
                start = offset + r.first_scored
                index.extend(range(start, start + len(r.targets)))
                targets.extend(r.targets)
                served.append(r)
            offset += len(f.tokens)
        sel = hidden[torch.tensor(index, device=dev)]  # [N, H] scored positions only
        tgt = torch.tensor(targets, dtype=torch.int64, device=dev)
        if engine.tp is None:
            lp, am = ops.logprob(sel, model.weights.lm_head, tgt)
        else:  # vocab-parallel lm_head: logsumexp, target and argmax combined across ranks
            lp, am = parallel.logprob(sel, model.weights.lm_head, tgt, engine.tp, model.cfg.vocab_size)
        lp, greedy = lp.cpu().tolist(), (am.cpu() == torch.tensor(targets)).tolist()
        k = 0
        for r in served:
            n = len(r.targets)
            tok_lp = lp[k:k + n]
            results[r.index] = ScoreResult(logprob=float(sum(tok_lp)), token_logprobs=tok_lp,
                                           is_greedy=all(greedy[k:k + n]), num_tokens=n)
            k += n
        bar.update(batch.num_tokens)
    bar.close()
    return results
