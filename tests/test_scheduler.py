"""Continuous batching: admission by free blocks, preemption by recomputation, nothing dropped
or duplicated, checked by simulating a model that emits deterministic tokens."""
import random

import pytest

from warmfast.engine.scheduler import Scheduler, SchedulerConfig, Sequence


def simulate(cfg: SchedulerConfig, lengths: list[tuple[int, int]], stop_at: dict[int, int] | None = None):
    """Run the scheduler to completion; the 'model' emits token (seq_id * 1000 + position)."""
    stop_at = stop_at or {}
    sch = Scheduler(cfg)
    for i, (plen, new) in enumerate(lengths):
        sch.add(Sequence(i, list(range(plen)), new))
    steps, fed, kinds = 0, {i: [] for i in range(len(lengths))}, []
    while sch.has_work():
        work = sch.schedule()
        assert len(work.seqs) <= cfg.max_batch_size
        if len(work.prefill) > 1:  # the budget counts the decode rows too
            assert len(work.decode) + sum(s.num_tokens for s in work.prefill) <= cfg.max_batch_tokens
        kinds.append(work.kind)
        for s in work.seqs:
            table = sch.table(s)
            assert len(table) * cfg.block_size >= s.num_tokens  # room for every fed position
            fed[s.seq_id].append(("prefill" if s in work.prefill else "decode", s.num_tokens))
            s.output.append(s.seq_id * 1000 + s.num_tokens)
            if len(s.output) >= s.max_new_tokens or stop_at.get(s.seq_id) == len(s.output):
                sch.finish(s)
        sch.check()
        steps += 1
        assert steps < 100_000
    simulate.kinds = kinds
    return sch, fed


def test_everything_finishes_once_with_a_roomy_pool():
    lengths = [(5, 3), (17, 9), (1, 1), (33, 20)]
    sch, fed = simulate(SchedulerConfig(num_blocks=64, block_size=4), lengths)
    assert sorted(s.seq_id for s in sch.finished) == [0, 1, 2, 3]
    assert sch.num_preemptions == 0
    for s in sch.finished:
        plen, new = lengths[s.seq_id]
        assert s.output == [s.seq_id * 1000 + plen + j for j in range(new)]
        assert fed[s.seq_id][0] == ("prefill", plen)
    assert sch.blocks.num_free == 64


@pytest.mark.parametrize("seed", range(6))
def test_tiny_pool_preempts_and_still_finishes_everything(seed):
    rng = random.Random(seed)
    lengths = [(rng.randint(1, 20), rng.randint(1, 25)) for _ in range(30)]
    stop_at = {i: rng.randint(1, 25) for i in range(0, 30, 3)}  # some stop early (EOS)
    cfg = SchedulerConfig(num_blocks=12, block_size=4, max_batch_size=8, max_batch_tokens=40)
    sch, fed = simulate(cfg, lengths, stop_at)
    assert sorted(s.seq_id for s in sch.finished) == list(range(30))
    assert len(sch.finished) == 30 and not sch.waiting and not sch.running
    assert sch.num_preemptions > 0
    assert "mixed" in simulate.kinds  # admissions ride along with decode steps
    for s in sch.finished:
        plen, new = lengths[s.seq_id]
        n = min(new, stop_at.get(s.seq_id, new))
        # the emitted stream is unaffected by preemption: one token per position, none repeated
        assert s.output == [s.seq_id * 1000 + plen + j for j in range(n)]
        if s.preemptions:  # readmitted with a recomputing prefill of prompt + output so far
            assert [k for k, _ in fed[s.seq_id]].count("prefill") == s.preemptions + 1
    assert sch.blocks.num_free == 12


def test_admission_respects_blocks_batch_size_and_token_budget():
    sch = Scheduler(SchedulerConfig(num_blocks=8, block_size=4, max_batch_size=3, max_batch_tokens=10))
    for i, plen in enumerate([4, 4, 4, 4]):
        sch.add(Sequence(i, [0] * plen, 2))
    first = sch.schedule()
    assert first.kind == "prefill" and [s.seq_id for s in first.seqs] == [0, 1]  # 12 > 10 tokens
    for s in first.seqs:
        s.output.append(1)
    second = sch.schedule()  # decode 0 and 1, and admit 2 beside them: batch size 3 reached
    assert second.kind == "mixed" and [s.seq_id for s in second.decode] == [0, 1]
    assert [s.seq_id for s in second.prefill] == [2]
    for s in second.seqs:
        s.output.append(1)
    assert sch.schedule().kind == "decode"


def test_impossible_request_is_refused_up_front():
    sch = Scheduler(SchedulerConfig(num_blocks=4, block_size=4))
    with pytest.raises(ValueError, match=r"request #3: prompt \(10 tokens\) \+ max_new_tokens \(8\) "
                                         r"needs 5 KV blocks of 4 tokens, but the cache has only 4"):
        sch.add(Sequence(3, [0] * 10, 8), "request #3")
    sch.add(Sequence(0, [0] * 10, 7))  # 16 positions: exactly the pool
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        SchedulerConfig(num_blocks=4, max_batch_size=0)


def test_admission_keeps_one_block_of_growth_per_running_sequence():
    sch = Scheduler(SchedulerConfig(num_blocks=6, block_size=4))
    sch.add(Sequence(0, [0] * 4, 8))
    sch.add(Sequence(1, [0] * 16, 4))  # 4 blocks: would fit the 5 free ones, but leave no headroom
    first = sch.schedule()
    assert [s.seq_id for s in first.seqs] == [0] and sch.blocks.num_free == 5
    first.seqs[0].output.append(1)
    assert sch.schedule().kind == "decode"  # seq 1 waits instead of being admitted to be preempted
    sch.finish(first.seqs[0])
    assert [s.seq_id for s in sch.schedule().seqs] == [1]  # an empty cache always admits


def test_prefill_only_rows_take_no_blocks_and_abort_frees_everything():
    # score rows (max_new_tokens 0) ride beside generations: admitted under the token budget,
    # never given KV blocks, so a pool that holds one generation still takes every score row
    sch = Scheduler(SchedulerConfig(num_blocks=6, block_size=4, max_batch_size=8, max_batch_tokens=64))
    gen = Sequence(0, list(range(10)), 8)  # 17 positions: 5 blocks
    rows = [Sequence(-1 - i, list(range(30)), 0) for i in range(4)]  # 30 tokens each, no blocks
    sch.add(gen)
    for r in rows:
        sch.add(r)
    work = sch.schedule()
    assert work.prefill == [gen, rows[0]]  # the token budget (10 + 30 + 30 > 64) holds the rest back
    assert sch.blocks.num_free == 6 - 3 and rows[0].seq_id not in sch.blocks.tables
    sch.finish(rows[0])
    gen.output.append(1)
    work = sch.schedule()
    assert work.decode == [gen] and work.prefill == rows[1:3]  # 1 + 30 + 30 <= 64
    sch.finish(rows[1])
    sch.finish(rows[2])
    sch.abort(rows[3])  # waiting
    sch.abort(gen)  # running, holding blocks
    sch.check()
    assert not sch.has_work() and sch.blocks.num_free == 6 and not sch.blocks.tables
    with pytest.raises(RuntimeError, match="is aborted"):
        sch.abort(gen)
