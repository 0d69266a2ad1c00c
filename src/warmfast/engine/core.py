"""The engine core: one scheduler for score rows and generations, driven one step at a time.

    core = EngineCore(engine)                      # or: with EngineCore(engine, CoreConfig(...)) as core
    rid = core.add_request(wf.GenerateRequest(...))   # or a ScoreRequest; validated now
    while core.has_unfinished():
        for out in core.step():                    # RequestOutput: new tokens, text, log-probs, result
            ...
    core.abort(rid)                                # between steps: frees its KV blocks

A step is schedule -> plan -> execute -> postprocess. The scheduler (engine/scheduler.py) decodes every
running generation and admits waiting work beside it: new or preempted generations (prefill on
the paged cache) and score rows (prefill-only: no KV blocks, done in the step that admits them).
All of it is one forward, rows grouped by adapter slot within each part, so any mix of adapters,
prefills, score rows and decodes shares a batch, described as a StepPlan and run by
engine/executor.py (on every rank of a tensor-parallel engine: engine/tensor_parallel.py). Then:
lm_head at the score positions (fused with logsumexp and the target gather), at prompt positions
asked for prompt log-probs, and at each generation's last position -> Philox-keyed sampling (seed, sampling key, step = tokens generated
so far) -> log-probs when asked -> detokenise, stop checks -> outputs.

Score rows share fed rows: a score row whose tokens equal, or are a prefix of, those of a waiting
score row under the same adapter (the one with equal tokens, or the last one added for that
adapter) rides on it, so a judge's verdict pair or a question's answer letters after one context
cost one row. Engine.score adds its rows sorted by (adapter, tokens), which finds every such pair.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from warmfast.engine import executor, prepare
from warmfast.engine.cuda_graphs import DecodeGraphs, check_graphs_supported
from warmfast.engine.detok import IncrementalDetokenizer, OutputState, StopCriteria
from warmfast.engine.executor import StepOut, StepPlan
from warmfast.engine.kv_cache import PagedKVCache, blocks_for
from warmfast.engine.requests import (GenerateRequest, GenerateResult, RequestOutput, ScoreRequest, ScoreResult,
                                      TokenLogprob)
from warmfast.engine.sampling import default_impl, sample_logits
from warmfast.engine.scheduler import Scheduler, SchedulerConfig, Sequence
from warmfast.errors import InputError, RequestError
from warmfast.model.gpt2 import GPT2Model


@dataclass(slots=True)
class CoreConfig:
    max_batch_size: int = 64  # sequences (generations and score rows) per step
    max_batch_tokens: int = 8192  # prefill and score tokens per step (a longer single row goes alone)
    block_size: int = 16  # tokens per KV block (a power of two: the Triton decode kernel needs it)
    kv_blocks: int | None = None  # None: kv_memory_fraction of the free GPU memory (CUDA), or room
    #                               for a step's token budget and one block per row (CPU)
    kv_memory_fraction: float = 0.85
    cuda_graphs: bool = False  # decode steps replay per-bucket CUDA graphs (CUDA only)
    sampler: str | None = None  # "cpp" | "triton"; None: C++ on CPU, Triton on CUDA
    stream: bool = False  # detokenise every step (RequestOutput.text); else text only in results

    def __post_init__(self):
        for name in ("max_batch_size", "max_batch_tokens", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"generate: {name} must be >= 1, got {getattr(self, name)}")
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"generate: block_size must be a power of two, got {self.block_size}")
        if self.kv_blocks is not None and self.kv_blocks < 1:
            raise ValueError(f"generate: kv_blocks must be >= 1, got {self.kv_blocks}")
        if not 0.0 < self.kv_memory_fraction <= 1.0:
            raise ValueError(f"generate: kv_memory_fraction must be in (0, 1], got {self.kv_memory_fraction}")


@dataclass(slots=True, eq=False)
class _Gen:
    """A generation in flight."""
    seq: Sequence
    gen: prepare.Generation
    out: OutputState
    logprobs: list[TokenLogprob] | None
    prompt_logprobs: list[float] | None = None
    prompt_top: list[TokenLogprob] | None = None  # prompt_logprobs with logprobs=k (GenerateResult)
    stop_token: TokenLogprob | None = None
    emitted: int = 0  # characters of text already in outputs


@dataclass(slots=True, eq=False)
class _Fed:
    """One fed row of score requests (each member's tokens a prefix of seq.prompt)."""
    seq: Sequence
    members: list[prepare.ScoreRow] = field(default_factory=list)


def pool_blocks(engine, cfg: CoreConfig, max_lens: list[int] | None = None) -> int:
    """KV blocks of the pool: cfg.kv_blocks, or a share of the free GPU memory, or on CPU room for
    max_batch_size of the longest `max_lens` (or for the step token budget) plus one block per row
    (the scheduler's admission headroom)."""
    if cfg.kv_blocks is not None:
        return cfg.kv_blocks
    if engine.device.type == "cuda":
        if engine.tp_workers is not None:  # the smallest pool of all ranks (rank 0 schedules for all)
            args = (cfg.block_size, cfg.kv_memory_fraction)
            return engine.tp_workers.collective(("pool_blocks", *args), lambda: cuda_pool_blocks(engine, *args))
        return cuda_pool_blocks(engine, cfg.block_size, cfg.kv_memory_fraction)
    if max_lens is None:
        return max(blocks_for(engine.max_seq_len, cfg.block_size),
                   blocks_for(cfg.max_batch_tokens, cfg.block_size)) + cfg.max_batch_size
    need = sorted((blocks_for(n, cfg.block_size) for n in max_lens), reverse=True)
    return max(1, sum(need[:cfg.max_batch_size]) + min(cfg.max_batch_size, len(max_lens)))


def cuda_pool_blocks(engine, block_size: int, fraction: float) -> int:
    """KV blocks that `fraction` of this GPU's free memory holds; tensor parallel: the smallest
    such number over the ranks (a collective: every rank calls it)."""
    c = engine.model.cfg  # under tensor parallelism: this rank's kv heads
    free, _ = torch.cuda.mem_get_info(engine.device)
    per_block = PagedKVCache.bytes_per_block(c.num_layers, block_size, c.num_kv_heads, c.head_dim, engine.dtype)
    n = max(1, int(free * fraction) // per_block)
    if engine.tp is not None:
        t = torch.tensor([n], dtype=torch.int64, device=engine.device)
        n = int(engine.tp.all_reduce(t, op=torch.distributed.ReduceOp.MIN).item())
    return n


class EngineCore:
    """Score rows and generations of any adapters in one continuously batched scheduler."""

    def __init__(self, engine, cfg: CoreConfig | None = None, max_lens: list[int] | None = None):
        """max_lens: KV positions of the generations to come, to size a CPU pool (Engine.generate)."""
        cfg = cfg or CoreConfig()
        self.engine, self.cfg = engine, cfg
        self.core_id = engine.next_core_id()  # names this core's KV cache on every rank
        # The engine keeps the KV pool of its CUDA graphs (graphs hold the pool's addresses): a
        # core with the same block size (and the same kv_blocks, or none asked) reuses the pool,
        # and with cuda_graphs every bucket captured so far; an eager core reuses the idle pool
        # too, instead of sizing a second one from the memory the first still holds. A pool in
        # use by another core is never shared: this core then gets its own.
        if cfg.cuda_graphs:
            check_graphs_supported(engine)
        held = engine.decode_graphs
        self.pool = held if held is not None and not held.busy and held.fits(cfg.block_size, cfg.kv_blocks) else None
        self.graphs: DecodeGraphs | None = self.pool if cfg.cuda_graphs else None
        self.cache: PagedKVCache | None = None  # allocated by the first step that generates
        if self.pool is not None:
            self.num_blocks, self.cache = self.pool.num_blocks, self.pool.cache
            self.pool.busy = True
        else:
            self.num_blocks = pool_blocks(engine, cfg, max_lens)
        self._held = held
        self.sched = Scheduler(SchedulerConfig(self.num_blocks, cfg.block_size, cfg.max_batch_size,
                                               cfg.max_batch_tokens, keep_finished=False))
        self.sampler = cfg.sampler or default_impl(engine.device)
        self._gens: dict[int, _Gen] = {}
        self._scores: dict[int, _Fed] = {}  # request id -> the fed row it rides on
        self._fed: dict[int, _Fed] = {}  # fed rows by sequence id
        self._open: dict[tuple, _Fed] = {}  # (slot, tokens) and (slot,) -> a waiting fed row
        self._next_id, self._next_fed = 0, -1  # fed rows' sequence ids are negative
        self.steps: Counter[str] = Counter()  # forward steps by kind: prefill, decode, mixed
        self.batch_rows = 0  # sequences summed over steps (batch occupancy)
        self.tokens_fed = 0  # prefill and score tokens fed so far

    # ---- requests ------------------------------------------------------------------------------
    def add_request(self, request: GenerateRequest | ScoreRequest, request_id: int | None = None) -> int:
        """Validate and queue a request; returns its id (request_id if given: an int >= 0 not in use).
        Errors are RequestErrors naming "GenerateRequest #id" / "ScoreRequest #id", index = id."""
        if request_id is None:
            while self._next_id in self._gens or self._next_id in self._scores:
                self._next_id += 1
            request_id = self._next_id
            self._next_id += 1
        elif not isinstance(request_id, int) or request_id < 0 or request_id in self._gens or request_id in self._scores:
            raise InputError(f"add_request: request_id must be an int >= 0 that is not in use, got {request_id!r}")
        try:
            if isinstance(request, GenerateRequest):
                self._add_generation(request, request_id)
            elif isinstance(request, ScoreRequest):
                self._add_score(request, request_id)
            else:
                raise InputError(f"add_request takes a GenerateRequest or a ScoreRequest, got {type(request).__name__}")
        except RequestError as err:  # the caller learns which request: a CLI names its input line
            err.index = request_id
            raise
        return request_id

    def _add_generation(self, req: GenerateRequest, rid: int) -> None:
        where = f"GenerateRequest #{rid}"
        if isinstance(self.engine.model, GPT2Model):
            raise RequestError(f"{where}: generation is not supported for GPT-2; warmfast runs GPT-2 for "
                               "scoring only (Engine.score)")
        g = prepare.generation(self.engine, req, where)
        p = g.params
        out = OutputState(StopCriteria(p.max_new_tokens, self.engine.tok.eos_ids, p.stop),
                          IncrementalDetokenizer(self.engine.tok.hf), stream=self.cfg.stream)
        seq = Sequence(rid, g.prompt, p.max_new_tokens, g.slot)
        self.sched.add(seq, where)
        self._gens[rid] = _Gen(seq, g, out, [] if p.logprobs is not None else None)
        self._hold(g.slot)

    def _add_score(self, req: ScoreRequest, rid: int) -> None:
        self.add_score_row(prepare.score_row(self.engine, req, rid, f"ScoreRequest #{rid}"))

    def add_score_row(self, row: prepare.ScoreRow) -> None:
        """Queue an already validated score row (prepare.score_row); row.index is its request id."""
        if row.index in self._gens or row.index in self._scores:
            raise InputError(f"add_score_row: request id {row.index} is in use")
        key = (row.slot, tuple(row.tokens))
        fed = self._open.get(key) or self._open.get((row.slot,))
        if fed is not None and fed.seq.status == "waiting":
            toks = fed.seq.prompt
            if toks[:len(row.tokens)] == row.tokens:
                pass  # rides on the longer fed row as it is
            elif row.tokens[:len(toks)] == toks:
                fed.seq.prompt = row.tokens  # the fed row grows to this row's tokens
            else:
                fed = None
        else:
            fed = None
        if fed is None:
            fed = _Fed(Sequence(self._next_fed, row.tokens, 0, row.slot))
            self._next_fed -= 1
            self.sched.add(fed.seq)
            self._fed[fed.seq.seq_id] = fed
        fed.members.append(row)
        self._open[key] = self._open[(row.slot,)] = fed
        self._scores[row.index] = fed
        self._hold(row.slot)

    def abort(self, request_id: int) -> bool:
        """Drop a request that has not finished; its KV blocks go back to the pool. False if the
        id is unknown or already finished (its result was in a step's outputs)."""
        if request_id in self._gens:
            g = self._gens.pop(request_id)
            self.sched.abort(g.seq)
            self._let_go(g.seq.slot)
            return True
        fed = self._scores.pop(request_id, None)
        if fed is None:
            return False
        self._let_go(fed.seq.slot)
        fed.members = [r for r in fed.members if r.index != request_id]
        if not fed.members:
            self.sched.abort(fed.seq)
            self._close_fed(fed)
            del self._fed[fed.seq.seq_id]
        return True

    def _hold(self, slot: int) -> None:
        """An unfinished request uses adapter `slot`: Engine.unload_adapter refuses it meanwhile."""
        if self.engine.adapter_slots is not None:
            self.engine.adapter_slots.acquire(slot)

    def _let_go(self, slot: int) -> None:
        if self.engine.adapter_slots is not None:
            self.engine.adapter_slots.release(slot)

    def has_unfinished(self) -> bool:
        return self.sched.has_work()

    @property
    def num_unfinished(self) -> int:
        return len(self._gens) + len(self._scores)

    def close(self) -> None:
        """Hand the engine's KV pool back (another core may use it from now on), and drop what is
        unfinished (its adapters can be unloaded again)."""
        for rid in list(self._gens) + list(self._scores):
            self.abort(rid)
        if self.pool is not None:
            self.pool.busy = False
        if self.engine.tp_workers is not None and self.cache is not None:
            self.engine.tp_workers.drop_cache(self.core_id)  # the other ranks free their copy
        self.cache = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- one step ------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[RequestOutput]:
        """One scheduler iteration: the outputs it produced (nothing when nothing is unfinished)."""
        if not self.sched.has_work():
            return []
        work = self.sched.schedule()
        dec = sorted(work.decode, key=lambda s: s.slot)  # adapters as contiguous segments
        pre = sorted(work.prefill, key=lambda s: s.slot)
        self.steps[work.kind] += 1
        self.batch_rows += len(dec) + len(pre)
        for s in pre:
            self.tokens_fed += s.num_tokens
            if s.prefill_only:
                self._close_fed(self._fed[s.seq_id])
        plan, uses = self._plan(dec, pre)
        out = self._execute(plan, dec)
        outputs = self._finish_scores(pre, uses, plan, out)
        gens = [self._gens[s.seq_id] for s in dec] + [self._gens[s.seq_id] for s in pre if not s.prefill_only]
        if gens:
            outputs += self._sample(gens, out.logits)
        return outputs

    def _close_fed(self, fed: _Fed) -> None:
        """fed is running now: later score rows no longer join it."""
        for key in [(fed.seq.slot,)] + [(fed.seq.slot, tuple(r.tokens)) for r in fed.members]:
            if self._open.get(key) is fed:
                del self._open[key]

    def _plan(self, dec: list[Sequence], pre: list[Sequence]) -> tuple[StepPlan, list]:
        """The step as data (engine/executor.py), and who uses its scored positions, in order:
        score rows (prepare.ScoreRow) and generations that asked for prompt log-probs (_Gen)."""
        cached = bool(dec) or not all(s.prefill_only for s in pre)  # a generation in the step: the
        #                                       paged cache and sampling; score rows only: neither
        plan = StepPlan(self.core_id, self.num_blocks, self.cfg.block_size, cached, sample=cached)
        uses, off = [], 0
        for s in pre:
            plan.pre_rows.append(s.prompt if s.prefill_only else s.tokens)
            plan.pre_slots.append(s.slot)
            if cached:  # a score row's keys go to the scratch block (index num_blocks), never read back
                plan.pre_tables.append(self.sched.table(s) if not s.prefill_only else
                                       [self.num_blocks] * blocks_for(s.num_tokens, self.cfg.block_size))
            if s.prefill_only:
                for r in self._fed[s.seq_id].members:
                    start = off + r.first_scored
                    plan.score_index.extend(range(start, start + len(r.targets)))
                    plan.score_targets.extend(r.targets)
                    uses.append(r)
            else:
                g = self._gens[s.seq_id]
                if g.gen.params.prompt_logprobs and g.prompt_logprobs is None:
                    n = len(s.prompt) - 1
                    plan.score_index.extend(range(off, off + n))
                    plan.score_targets.extend(s.prompt[1:])
                    if g.gen.params.logprobs is not None:  # the prompt's top-k needs full logits
                        plan.full_index.extend(range(off, off + n))
                    uses.append(g)
                plan.sample_ends.append(off + s.num_tokens - 1)
            off += s.num_tokens
        for s in dec:
            plan.dec_tokens.append(s.output[-1])
            plan.dec_positions.append(s.num_tokens - 1)
            plan.dec_slots.append(s.slot)
            plan.dec_tables.append(self.sched.table(s))
        return plan, uses

    def _execute(self, plan: StepPlan, dec: list[Sequence]) -> StepOut:
        """Run the plan here (and, tensor parallel, on every other rank: engine/tensor_parallel.py)."""
        eng = self.engine
        if plan.cached and self.cache is None:
            self._cache()
        if eng.tp_workers is not None:
            return eng.tp_workers.collective(("step", plan), lambda: executor.execute(
                eng, plan, self.cache if plan.cached else None))
        if (self.graphs is not None and not plan.pre_rows and plan.dec_tokens
                and len(dec) <= self.cfg.max_batch_size):
            hidden = self.graphs.run(dec, plan.dec_tables, self.cfg.max_batch_size)
            return executor.lm_head(eng, plan, hidden)
        return executor.execute(eng, plan, self.cache if plan.cached else None)

    def _cache(self) -> PagedKVCache:
        if self.cache is None:
            eng, cfg = self.engine, self.cfg
            self.cache = executor.new_cache(eng, self.num_blocks, cfg.block_size)
            if cfg.cuda_graphs:
                self.graphs = DecodeGraphs(eng, self.cache, self.num_blocks, cfg.block_size,
                                           blocks_for(eng.max_seq_len, cfg.block_size))
                if self._held is None or not self._held.busy:  # the new pool replaces the idle old one
                    self.pool = eng.decode_graphs = self.graphs
                    self.pool.busy = True
        return self.cache

    def _finish_scores(self, pre: list[Sequence], uses: list, plan: StepPlan, out: StepOut) -> list[RequestOutput]:
        """Score rows' results, and prompt log-probs of generations that asked for them."""
        outputs = []
        for s in pre:  # score rows are done in the step that admits them
            if s.prefill_only:
                self.sched.finish(s)
                del self._fed[s.seq_id]
        lp, greedy = [], []
        if plan.score_index:
            lp = out.score_lp.cpu().tolist()
            greedy = (out.score_argmax.cpu() == torch.tensor(plan.score_targets)).tolist()
        k = f = 0
        for u in uses:
            if isinstance(u, _Gen):
                n = len(u.seq.prompt) - 1
                u.prompt_logprobs = lp[k:k + n]
                if u.gen.params.logprobs is not None and n == 0:  # a one-token prompt: nothing to score
                    u.prompt_top = []
                elif u.gen.params.logprobs is not None:
                    u.prompt_top = _token_logprobs(out.full_logits[f:f + n], plan.score_targets[k:k + n],
                                                   [u.gen.params.logprobs] * n)
                    f += n
            else:
                n = len(u.targets)
                res = ScoreResult(logprob=float(sum(lp[k:k + n])), token_logprobs=lp[k:k + n],
                                  is_greedy=all(greedy[k:k + n]), num_tokens=n)
                del self._scores[u.index]
                self._let_go(u.slot)
                outputs.append(RequestOutput(u.index, [], "", None, finished=True, result=res))
            k += n
        return outputs

    def _sample(self, gens: list[_Gen], logits: torch.Tensor) -> list[RequestOutput]:
        """Each generation's next token from its logits [B, V] (the whole vocabulary), drawn at
        step = the number of tokens it has generated so far (the same step after a preemption)."""
        tokens = sample_logits(logits, [g.gen.params for g in gens], [g.gen.key for g in gens],
                               [len(g.seq.output) for g in gens], self.sampler)
        lps = _token_logprobs(logits, tokens, [g.gen.params.logprobs for g in gens])
        outputs = []
        for g, tok, lp in zip(gens, tokens, lps):
            g.seq.output.append(tok)
            n_before = len(g.out.token_ids)
            done = g.out.append(tok)
            new = g.out.token_ids[n_before:]  # [] when tok was EOS
            new_lp = None
            if g.logprobs is not None:
                new_lp = [lp] if new else []
                g.logprobs.extend(new_lp)
                if not new:
                    g.stop_token = lp
            rid = g.seq.seq_id
            if done:
                self.sched.finish(g.seq)
                del self._gens[rid]
                self._let_go(g.seq.slot)
                text = g.out.text
                res = GenerateResult(text=text, token_ids=list(g.out.token_ids), finish_reason=g.out.finish_reason,
                                     logprobs=g.logprobs, prompt_logprobs=g.prompt_logprobs,
                                     prompt_top=g.prompt_top, stop_token=g.stop_token)
                outputs.append(RequestOutput(rid, new, text[g.emitted:], new_lp, finished=True, result=res))
            else:
                delta = ""
                if self.cfg.stream:
                    stable = g.out.stable_text()
                    delta, g.emitted = stable[g.emitted:], len(stable)
                outputs.append(RequestOutput(rid, new, delta, new_lp))
        return outputs


def _token_logprobs(logits: torch.Tensor, tokens: list[int], ks: list[int | None]) -> list[TokenLogprob | None]:
    """log_softmax of the raw logits [B, V] at each chosen token, and the top-k for rows that ask."""
    rows = [i for i, k in enumerate(ks) if k is not None]
    out: list[TokenLogprob | None] = [None] * len(ks)
    if not rows:
        return out
    lp = torch.log_softmax(logits[rows].float(), dim=-1)  # [n, V]
    chosen = lp.gather(1, torch.tensor([tokens[i] for i in rows], device=lp.device)[:, None])[:, 0].tolist()
    kmax = max(ks[i] for i in rows)
    top_v, top_i = (lp.topk(kmax, dim=-1) if kmax else (None, None))
    for j, i in enumerate(rows):
        top = ()
        if ks[i]:
            top = tuple(zip(top_i[j, :ks[i]].tolist(), top_v[j, :ks[i]].tolist()))
        out[i] = TokenLogprob(tokens[i], chosen[j], top)
    return out
