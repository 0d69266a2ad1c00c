"""Requests -> token rows, validated before any compute: every error names the request and values.

A score row feeds context + continuation[:-1] and reads the next-token distribution at each
continuation position; a generation feeds its prompt and samples under its SamplingParams, keyed
by (seed, sampling key = request_id or a hash of the prompt ids, step).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from warmfast.engine.sampling import SamplingParams
from warmfast.errors import RequestError


@dataclass(slots=True)
class ScoreRow:
    index: int  # the request's id (position in the caller's list, or the core's request id)
    slot: int
    tokens: list[int]  # context + continuation[:-1]: the last token is never fed
    first_scored: int  # row position whose next-token distribution scores continuation[0]
    targets: list[int]  # the continuation


@dataclass(slots=True)
class Generation:
    slot: int
    prompt: list[int]
    params: SamplingParams
    key: int  # the Philox request id of the random stream


def token_ids(value, encode, where: str, field: str, vocab: int) -> list[int]:
    if isinstance(value, str):
        return list(encode(value))
    if isinstance(value, (list, tuple)) and all(isinstance(t, int) for t in value):
        bad = [t for t in value if not 0 <= t < vocab]
        if bad:
            raise RequestError(f"{where}: {field} token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
        return list(value)
    raise RequestError(f"{where}: {field} must be a string or a list of token ids, got {type(value).__name__}")


def score_row(engine, req, index: int, where: str) -> ScoreRow:
    vocab = engine.model.cfg.vocab_size
    slot = engine.slot(req.adapter, where)
    ctx = (engine.tok.chat(req.messages, where) if req.messages is not None else
           token_ids(req.context, engine.tok.encode_context, where, "context", vocab))
    cont = token_ids(req.continuation, engine.tok.encode_plain, where, "continuation", vocab)
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
    return ScoreRow(index, slot, ctx + cont[:-1], len(ctx) - 1, cont)


def default_request_id(prompt_ids: list[int]) -> int:
    """64-bit key of the prompt tokens: the same prompt draws the same random stream under every
    adapter (common random numbers across arms) and in every batch."""
    digest = hashlib.blake2b(bytes(str(prompt_ids), "ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def prompt_ids(engine, req, where: str) -> list[int]:
    """Token ids of a request: chat template for messages=, BOS + text for a string prompt,
    token ids as given (validated against the vocabulary)."""
    if req.messages is not None:
        return engine.tok.chat(req.messages, where)
    if isinstance(req.prompt, str):
        return list(engine.tok.encode_context(req.prompt))
    vocab = engine.model.cfg.vocab_size
    if not req.prompt or any(not isinstance(t, int) or not 0 <= t < vocab for t in req.prompt):
        raise RequestError(f"{where}: prompt token ids must be a non-empty list of ints in [0, {vocab})")
    return list(req.prompt)


def generation(engine, req, where: str) -> Generation:
    slot = engine.slot(req.adapter, where)
    ids = prompt_ids(engine, req, where)
    if not ids:
        raise RequestError(f"{where}: the prompt is empty (no tokens to condition on)")
    total = len(ids) + req.max_new_tokens
    if total > engine.max_seq_len:
        raise RequestError(f"{where}: prompt ({len(ids)} tokens) + max_new_tokens "
                           f"({req.max_new_tokens}) = {total} exceeds the maximum sequence length "
                           f"{engine.max_seq_len}")
    try:
        params = req.sampling()
    except ValueError as err:
        raise RequestError(f"{where}: {err}") from err
    key = req.request_id if req.request_id is not None else default_request_id(ids)
    if not isinstance(key, int) or not 0 <= key < 2**64:
        raise RequestError(f"{where}: request_id must be in [0, 2^64), got {key}")
    return Generation(slot, ids, params, key)
