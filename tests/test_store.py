"""The SQLite store: content keys, idempotent inserts, WAL mode, durability across a killed writer."""
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from warmfast.run.store import (Generation, JobRecord, Judgement, Store, StoreError, canonical_json,
                                content_key, judgement_key)


def _job(i: int, arm: str = "warm") -> JobRecord:
    spec = {"model": "m", "arm": arm, "adapter": f"/a/{arm}", "messages": [{"role": "user", "content": f"q{i}"}],
            "sampling": {"temperature": 0.8, "max_new_tokens": 300}, "seed": i, "task": "trivia"}
    return JobRecord.from_spec("generate", "m", arm, "trivia", spec, {"prompt": f"q{i}", "row": i})


def test_content_key_ignores_key_order_and_sees_every_value():
    a = {"x": 1, "y": [1, 2], "z": {"b": 0.8, "a": "é"}}
    b = {"z": {"a": "é", "b": 0.8}, "y": [1, 2], "x": 1}
    assert content_key(a) == content_key(b)
    assert canonical_json(a) == canonical_json(b)
    assert content_key(a) != content_key({**a, "x": 2})
    assert content_key(a) != content_key({**a, "y": [2, 1]})
    with pytest.raises(ValueError):
        content_key({"t": float("nan")})


def test_job_record_rejects_a_key_that_does_not_hash_its_spec():
    job = _job(0)
    with pytest.raises(ValueError, match="does not hash its spec"):
        JobRecord("0" * 64, job.kind, job.model, job.arm, job.task, job.spec, job.meta)
    with pytest.raises(ValueError, match="arm"):
        JobRecord.from_spec("generate", "m", "", "trivia", {"a": 1}, {})


def test_store_is_wal_and_inserts_are_idempotent(tmp_path):
    path = tmp_path / "run" / "store.sqlite"
    with Store(path) as st:
        jobs = [_job(i) for i in range(5)] + [_job(i, "cold") for i in range(5)]
        assert st.add_jobs(jobs) == 10
        assert st.add_jobs(jobs) == 0          # same content, same keys: nothing new
        assert st.add_jobs([_job(7)]) == 1
        assert st.count_jobs() == 11
        assert st.job(jobs[3].key) == jobs[3]
        gens = [Generation(j.key, f"out {j.key[:4]}", [1, 2, 3], "stop", 3) for j in jobs[:4]]
        assert st.add_generations(gens) == 4
        assert st.add_generations(gens[:2]) == 0
        assert st.done_generations([j.key for j in jobs]) == {j.key for j in jobs[:4]}
        got = st.generations([j.key for j in jobs])
        assert got[jobs[1].key] == gens[1] and jobs[6].key not in got
        assert st.generations([jobs[1].key], with_tokens=False)[jobs[1].key].token_ids == []
        jk = judgement_key(jobs[0].key, "evaluation", {"kind": "logprob", "model": "x"}, gens[0].text)
        assert jk != judgement_key(jobs[0].key, "evaluation", {"kind": "logprob", "model": "y"}, gens[0].text)
        jdg = Judgement(jk, jobs[0].key, "evaluation", "logprob", "CORRECT", 1.0, 0.73, {"lp": [-0.1, -2.0]})
        assert st.add_judgements([jdg, jdg]) == 1
        assert st.judgements([jk]) == {jk: jdg}
        st.cache_response("k1", {"model": "gpt"}, {"text": "CORRECT"})
        st.cache_response("k1", {"model": "gpt"}, {"text": "other"})  # first answer kept
        assert st.cached_response("k1") == {"text": "CORRECT"}
        assert st.cached_response("k2") is None
        with pytest.raises(KeyError, match="no job"):
            st.job("f" * 64)
    raw = sqlite3.connect(str(path))
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_content_snapshot_ignores_timestamps_but_not_content(tmp_path):
    stores = [Store(tmp_path / f"s{i}.sqlite") for i in range(3)]
    for i, st in enumerate(stores):
        st.add_jobs([_job(1), _job(2)])
        st.add_generations([Generation(_job(2).key, "b" if i < 2 else "c", [5], "length", 1)])
        st.add_generations([Generation(_job(1).key, "a", [4], "stop", 1)])
    assert stores[0].content_snapshot() == stores[1].content_snapshot()
    assert stores[0].content_snapshot() != stores[2].content_snapshot()


def test_not_a_store_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="bad.sqlite"):
        Store(bad)


def test_a_killed_writer_loses_only_uncommitted_work(tmp_path):
    """A child commits batches, then is SIGKILLed mid-way: every committed batch is there."""
    path = tmp_path / "store.sqlite"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_store import _job
        from warmfast.run.store import Store, Generation
        st = Store({str(path)!r})
        jobs = [_job(i) for i in range(40)]
        st.add_jobs(jobs)
        for b in range(0, 40, 8):
            st.add_generations([Generation(j.key, "t" + str(b), [b], "stop", 1) for j in jobs[b:b + 8]])
            print(b, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    for _ in range(5):
        proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Store(path) as st:
        assert st.count_jobs() == 40
        assert len(st.done_generations()) == 40
