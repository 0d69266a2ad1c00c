"""Continuous batching over the paged KV cache, with preemption by recomputation.

Each step decodes one token for every running sequence and, in the same forward, prefills the
waiting sequences that fit (oldest first, while their blocks plus one block of growth for each
running sequence, the batch size and the token budget allow; into an empty cache a sequence is
always admitted). So a step is a decode, a prefill (nothing running yet) or both ("mixed"): a
request that arrives while others decode never stalls them for a step of its own.
When a decode needs a block and none is free, the most recently admitted running sequence is
preempted: its blocks are freed and it returns to the front of the queue keeping the tokens it
has generated; on readmission its prompt + output is prefilled again (recomputation). A step that
preempted admits nothing (the victim would be readmitted at once).
A prefill-only sequence (max_new_tokens 0: a score row) is admitted under the same batch-size and
token budgets, takes no KV blocks (its keys are never read again) and finishes in the step that
admitted it. `abort` takes a sequence out wherever it is and frees its blocks.
Every sequence is in exactly one of waiting / running / finished, so none is dropped or run
twice; `check()` asserts it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from warmfast.engine.kv_cache import BlockManager, blocks_for
from warmfast.errors import RequestError


@dataclass(slots=True)
class SchedulerConfig:
    num_blocks: int
    block_size: int = 16
    max_batch_size: int = 64  # rows per step
    max_batch_tokens: int = 8192  # prefill tokens per step (a longer single prompt goes alone)
    keep_finished: bool = True  # False: a long-lived core forgets finished sequences (counts them)

    def __post_init__(self):
        for name in ("num_blocks", "block_size", "max_batch_size", "max_batch_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"SchedulerConfig.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(slots=True, eq=False)
class Sequence:
    seq_id: int  # unique among the scheduler's sequences (the core's request id)
    prompt: list[int]
    max_new_tokens: int  # 0: prefill only (a score row)
    slot: int = -1  # adapter slot, -1 = base model
    output: list[int] = field(default_factory=list)
    status: str = "waiting"  # waiting | running | finished
    preemptions: int = 0

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    @property
    def num_tokens(self) -> int:
        return len(self.prompt) + len(self.output)

    @property
    def prefill_only(self) -> bool:
        return self.max_new_tokens == 0

    @property
    def max_len(self) -> int:
        """KV positions the sequence may need: the last sampled token is never fed back."""
        return len(self.prompt) + self.max_new_tokens - 1


@dataclass(slots=True)
class Scheduled:
    decode: list[Sequence]  # feed each one's last token
    prefill: list[Sequence]  # feed every token (a new sequence, or a preempted one recomputed)

    @property
    def kind(self) -> str:
        return "mixed" if self.decode and self.prefill else "prefill" if self.prefill else "decode"

    @property
    def seqs(self) -> list[Sequence]:
        return self.decode + self.prefill


class Scheduler:
    def __init__(self, cfg: SchedulerConfig):
        self.cfg = cfg
        self.blocks = BlockManager(cfg.num_blocks, cfg.block_size)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order
        self.finished: list[Sequence] = []
        self.num_finished = 0
        self.num_preemptions = 0

    def add(self, seq: Sequence, where: str = "") -> None:
        need = 0 if seq.prefill_only else blocks_for(seq.max_len, self.cfg.block_size)
        if need > self.cfg.num_blocks:
            raise RequestError(f"{where or f'sequence {seq.seq_id}'}: prompt ({len(seq.prompt)} tokens) "
                               f"+ max_new_tokens ({seq.max_new_tokens}) needs {need} KV blocks of "
                               f"{self.cfg.block_size} tokens, but the cache has only "
                               f"{self.cfg.num_blocks}; raise kv_blocks or lower max_new_tokens",
                               index=seq.seq_id)
        seq.status = "waiting"
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> Scheduled:
        """The next step's work: a decode of every running sequence (growing their tables, which
        may preempt), plus the admissions that fit beside it."""
        if not self.has_work():
            raise RuntimeError("Scheduler.schedule: nothing is waiting or running")
        preemptions = self.num_preemptions
        decode = self._grow_for_decode() if self.running else []
        admitted = self._admit(len(decode)) if self.num_preemptions == preemptions else []
        if not decode and not admitted:
            raise RuntimeError("Scheduler: the first waiting sequence does not fit an empty cache "
                               "(add() should have refused it)")
        return Scheduled(decode, admitted)

    def _admit(self, tokens: int) -> list[Sequence]:
        """Waiting sequences that fit beside `tokens` decode tokens, oldest first."""
        admitted = []
        while self.waiting and len(self.running) < self.cfg.max_batch_size:
            seq = self.waiting[0]
            if admitted and tokens + seq.num_tokens > self.cfg.max_batch_tokens:
                break
            if not seq.prefill_only:
                need = self.blocks.shortfall(seq.seq_id, seq.num_tokens)
                # headroom: after this admission every running sequence can still take one more
                # block, so the next decode step does not preempt what was just prefilled (thrashing)
                growing = sum(not s.prefill_only for s in self.running)
                headroom = growing + 1 if growing else 0
                if need + headroom > self.blocks.num_free:
                    break
                self.blocks.reserve(seq.seq_id, seq.num_tokens)
            self.waiting.popleft()
            seq.status = "running"
            self.running.append(seq)
            admitted.append(seq)
            tokens += seq.num_tokens
        return admitted

    def _grow_for_decode(self) -> list[Sequence]:
        """Give every running sequence room for one more position, preempting from the back."""
        scheduled: list[Sequence] = []
        tables, block_size = self.blocks.tables, self.cfg.block_size
        queue = deque(self.running)
        while queue:
            seq = queue.popleft()
            if len(tables[seq.seq_id]) * block_size >= len(seq.prompt) + len(seq.output):
                scheduled.append(seq)  # its last block has room: the common case, no block moves
                continue
            while not self.blocks.can_hold(seq.seq_id, seq.num_tokens):
                victim = queue.pop() if queue else seq
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                self.blocks.reserve(seq.seq_id, seq.num_tokens)
                scheduled.append(seq)
        return scheduled

    def _preempt(self, seq: Sequence) -> None:
        self.blocks.release(seq.seq_id)
        self.running.remove(seq)
        seq.status = "waiting"
        seq.preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)  # victims are taken newest first: older ones end up in front

    def finish(self, seq: Sequence) -> None:
        if seq.status != "running":
            raise RuntimeError(f"Scheduler.finish: sequence {seq.seq_id} is {seq.status}, not running")
        self.blocks.release(seq.seq_id)
        self.running.remove(seq)
        seq.status = "finished"
        self.num_finished += 1
        if self.cfg.keep_finished:
            self.finished.append(seq)

    def abort(self, seq: Sequence) -> None:
        """Take seq out of the queue or the running set and free its blocks."""
        if seq.status == "waiting":
            self.waiting.remove(seq)
        elif seq.status == "running":
            self.running.remove(seq)
        else:
            raise RuntimeError(f"Scheduler.abort: sequence {seq.seq_id} is {seq.status}")
        self.blocks.release(seq.seq_id)
        seq.status = "aborted"

    def table(self, seq: Sequence) -> list[int]:
        return self.blocks.table(seq.seq_id)

    def check(self) -> None:
        """Invariants: block accounting, and each sequence in exactly one place."""
        self.blocks.check()
        ids = [s.seq_id for s in self.waiting] + [s.seq_id for s in self.running] + \
              [s.seq_id for s in self.finished]
        if len(ids) != len(set(ids)):
            raise AssertionError(f"Scheduler: a sequence is queued twice: {sorted(ids)}")
        if set(self.blocks.tables) - {s.seq_id for s in self.running}:
            raise AssertionError("Scheduler: blocks are held by a sequence that is not running")
