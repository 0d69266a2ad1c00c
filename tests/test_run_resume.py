"""`warmfast run` killed with SIGKILL mid-generation and mid-judging, resumed, equals an uninterrupted
run (store content and exported files); nothing finished is recomputed."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from warmfast.run.config import load_config
from warmfast.run.runner import run
from warmfast.run.store import Store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from warmfast.model.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny"), n_adapters=1, max_position_embeddings=1024)


def _config(tmp_path, tiny, name: str):
    raw = {"name": "resume", "output_dir": str(tmp_path / name),
           "model": {"name": "tiny", "path": str(tiny.model_dir)},
           "arms": {"original": {"kind": "original"},
                    "warm": {"kind": "adapter", "adapter": str(tiny.adapters["adapter_0"])},
                    "warm_sysprompt": {"kind": "system_prompt", "system_prompt": "Be warm, kind and caring."}},
           "tasks": {"truthfulqa": {"n": 1}, "gsm8k": {"n": 1}, "advbench": {"n": 1}},
           "generation": {"max_new_tokens": 6}, "capability_generation": {"max_new_tokens": 6, "temperature": 0.2},
           # a short raw judge prompt keeps the test quick (the default prompt is tested elsewhere)
           "judge": {"kind": "logprob", "model": "generation", "template": "raw", "verdict_prefix": " ",
                     "prompt": "Q: {query}\nA: {result}\nTrue: {answer}\nGrade:"},
           "runner": {"chunk_size": 12, "max_batch_size": 12, "judge_chunk_size": 6}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _count(db_path, sql) -> int:
    if not db_path.exists():
        return 0
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        db.close()


def _run_and_kill(cfg_path, db_path, sql, total, timeout=300):
    """Start `warmfast run`, SIGKILL it once 0 < count(sql) < total; returns the count the kill
    left (re-read: a chunk can commit between the last poll and the kill)."""
    proc = subprocess.Popen([sys.executable, "-m", "warmfast", "run", str(cfg_path), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    start = _count(db_path, sql)
    deadline = time.time() + timeout
    while time.time() < deadline:
        n = _count(db_path, sql)
        if start < n < total:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return _count(db_path, sql)
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc={proc.returncode}) before it could be killed midway; "
                        f"count={n} of {total}; stderr: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("timed out waiting for the run to reach the middle")


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, tiny):
    ref_cfg = _config(tmp_path, tiny, "ref")
    ref = run(load_config(ref_cfg), progress=False)
    n_jobs = ref.jobs
    assert n_jobs == 3 * (28 + 1 + 1) and ref.generated_now == n_jobs
    n_judged = 3 * 28  # the log-prob judge grades the TruthfulQA answers

    cfg = _config(tmp_path, tiny, "killed")
    db = tmp_path / "killed" / "store.sqlite"
    gen_sql = "SELECT COUNT(*) FROM generations"
    judge_sql = "SELECT COUNT(*) FROM judgements WHERE role = 'evaluation'"
    at_kill = _run_and_kill(cfg, db, gen_sql, n_jobs)
    with Store(db) as st:  # what was committed before the kill, with its write time
        before = {r[0]: r[1] for r in st._db.execute("SELECT job_key, created_at FROM generations")}
    assert len(before) == at_kill and 0 < at_kill < n_jobs and at_kill % 12 == 0  # whole chunks only
    judged_at_kill = _run_and_kill(cfg, db, judge_sql, n_judged)
    assert 0 < judged_at_kill < n_judged  # killed while judging
    assert _count(db, gen_sql) == n_jobs  # generation finished in the second run
    done = subprocess.run([sys.executable, "-m", "warmfast", "run", str(cfg), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"jobs: {n_jobs} (generated now: 0," in done.stdout
    assert f"logprob_judge: {n_judged - judged_at_kill} new verdicts" in done.stdout

    with Store(tmp_path / "ref" / "store.sqlite") as a, Store(db) as b:
        snap_a, snap_b = a.content_snapshot(), b.content_snapshot()
        after = {r[0]: r[1] for r in b._db.execute("SELECT job_key, created_at FROM generations")}
    for table in snap_a:
        assert snap_a[table] == snap_b[table], f"table {table} differs after kill + resume"
    assert len(snap_a["judgements"]) == 3 * 30 + n_judged + 3 * 2  # refusal + evaluation + capability
    assert all(after[k] == t for k, t in before.items()), "a finished generation was recomputed"
    for rel in ("results.csv", "outputs/tiny/warm/truthfulqa_warm_outputs.csv",
                "capability/tiny/original/gsm8k_original_outputs.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ref" / rel), pd.read_csv(tmp_path / "killed" / rel))
    assert set(pd.read_parquet(tmp_path / "killed" / "results.parquet")["arm"]) == {"original", "warm", "warm_sysprompt"}
