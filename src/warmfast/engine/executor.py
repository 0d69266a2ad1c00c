"""One step's device work, described as plain data (StepPlan) and run by `execute`.

The core (engine/core.py) schedules and decides; `execute` only computes: the forward over the
step's rows, then lm_head where the core needs it. Under tensor parallelism rank 0 sends each plan
to the other ranks (engine/tensor_parallel.py) and every rank runs `execute` on its own shard: the
collectives inside (row-parallel all-reduces, the vocab-parallel log-prob and logit gathers) meet
because every rank runs the same plan. Only rank 0 uses what `execute` returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from warmfast.engine.batch import Batch, build_decode, build_mixed, build_prefill
from warmfast.engine.kv_cache import PagedKVCache
from warmfast.model import parallel


@dataclass(slots=True)
class StepPlan:
    """Everything a rank needs to run one step (picklable: lists and ints only).

    Hidden rows are ordered decode rows first, then every prefill token (rows in order)."""
    core: int  # the core whose KV cache this step uses (each rank keeps one cache per core)
    num_blocks: int  # the core's managed pool; the cache has one more block (scratch)
    block_size: int
    cached: bool  # False: score rows only, no KV cache at all
    pre_rows: list[list[int]] = field(default_factory=list)  # prefill tokens fed this step, per row
    pre_slots: list[int] = field(default_factory=list)
    pre_tables: list[list[int]] = field(default_factory=list)  # [] when not cached
    dec_tokens: list[int] = field(default_factory=list)  # each decode row's last token
    dec_positions: list[int] = field(default_factory=list)
    dec_slots: list[int] = field(default_factory=list)
    dec_tables: list[list[int]] = field(default_factory=list)
    score_index: list[int] = field(default_factory=list)  # prefill positions scored (log p(target))
    score_targets: list[int] = field(default_factory=list)
    full_index: list[int] = field(default_factory=list)  # prefill positions whose full logits rank 0 needs
    sample_ends: list[int] = field(default_factory=list)  # prefill positions ending a generation prompt
    sample: bool = False  # logits of every decode row and of sample_ends, for sampling


@dataclass(slots=True)
class StepOut:
    score_lp: torch.Tensor | None = None  # fp32 [len(score_index)]
    score_argmax: torch.Tensor | None = None  # int64 [len(score_index)]
    full_logits: torch.Tensor | None = None  # [len(full_index), V]
    logits: torch.Tensor | None = None  # [decode rows + len(sample_ends), V]


def new_cache(engine, num_blocks: int, block_size: int) -> PagedKVCache:
    """A core's paged KV cache on this rank: its pool plus one scratch block (the target of
    CUDA-graph padding rows and of score rows in a step that also generates)."""
    c = engine.model.cfg  # under tensor parallelism: this rank's kv heads
    return PagedKVCache(c.num_layers, num_blocks + 1, block_size, c.num_kv_heads, c.head_dim,
                        engine.dtype, engine.device)


def _tables(tables: list[list[int]], device: torch.device) -> torch.Tensor:
    """Block tables padded with block 0 to [B, width] int32 (entries past a row's length unread)."""
    width = max(len(t) for t in tables)
    return torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32).to(device)


def forward(engine, plan: StepPlan, cache: PagedKVCache | None) -> torch.Tensor:
    """Hidden states [decode rows + prefill tokens, H]."""
    dev = engine.device
    if not plan.cached:
        return engine.model.forward(engine.ops, build_prefill(plan.pre_rows, plan.pre_slots, dev))
    p = d = None
    if plan.pre_rows:
        p = build_prefill(plan.pre_rows, plan.pre_slots, dev, _tables(plan.pre_tables, dev))
    if plan.dec_tokens:
        d = build_decode(plan.dec_tokens, plan.dec_positions, plan.dec_slots, _tables(plan.dec_tables, dev), dev)
    batch: Batch = build_mixed(d, p) if d is not None and p is not None else d if d is not None else p
    return engine.model.forward(engine.ops, batch, cache)


def lm_head(engine, plan: StepPlan, hidden: torch.Tensor) -> StepOut:
    """lm_head only where the plan asks: fused log-probs at scored positions, full logits at
    `full_index`, sampling logits at the decode rows and `sample_ends`. Tensor parallel: log-probs
    combined across ranks, logits gathered to the whole vocabulary."""
    eng, out = engine, StepOut()
    W, tp, dev = eng.model.weights.lm_head, eng.tp, eng.device
    n_dec = len(plan.dec_tokens)
    if plan.score_index:
        sel = hidden[torch.tensor([n_dec + i for i in plan.score_index], device=dev)]  # [N, H]
        tgt = torch.tensor(plan.score_targets, dtype=torch.int64, device=dev)
        if tp is None:
            out.score_lp, out.score_argmax = eng.ops.logprob(sel, W, tgt)
        else:  # vocab-parallel lm_head: logsumexp, target and argmax combined across ranks
            out.score_lp, out.score_argmax = parallel.logprob(sel, W, tgt, tp, eng.model.cfg.vocab_size)
    if plan.full_index:
        out.full_logits = _logits(eng, hidden[torch.tensor([n_dec + i for i in plan.full_index], device=dev)])
    if plan.sample:
        last = hidden[:n_dec]
        if plan.sample_ends:
            ends = hidden[torch.tensor([n_dec + i for i in plan.sample_ends], device=dev)]
            last = torch.cat([last, ends]) if n_dec else ends
        out.logits = _logits(eng, last)
    return out


def _logits(engine, hidden: torch.Tensor) -> torch.Tensor:
    logits = hidden @ engine.model.weights.lm_head.T  # [rows, V] (tensor parallel: [rows, V_r])
    if engine.tp is not None:
        logits = parallel.gather_logits(logits, engine.tp, engine.model.cfg.vocab_size)
    return logits


def execute(engine, plan: StepPlan, cache: PagedKVCache | None) -> StepOut:
    return lm_head(engine, plan, forward(engine, plan, cache))
