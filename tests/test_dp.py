"""Data parallelism for the grid: chunks split by content hash over ranks (run/shard.py); and the
acceptance run: `torchrun --nproc-per-node 2 -m warmfast run CONFIG --shard env` with rank 1
SIGKILLed midway, restarted, then merged by an unsharded `warmfast run`, ends with a store (and
exports) equal to a one-process run, and nothing rank 1 had committed is recomputed."""
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from warmfast.run.config import load_config
from warmfast.run.plan import build_plan
from warmfast.run.runner import plan_chunks, run, shard_store_name
from warmfast.run.shard import chunk_key, load_per_rank, owner, rank_chunks
from warmfast.run.store import Store

CHUNK = 6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from warmfast.model.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny_dp"), n_adapters=1, max_position_embeddings=1024)


def _config(tmp_path: Path, tiny, name: str) -> Path:
    raw = {"name": "dp", "output_dir": str(tmp_path / name),
           "model": {"name": "tiny", "path": str(tiny.model_dir)},
           "arms": {"original": {"kind": "original"},
                    "warm": {"kind": "adapter", "adapter": str(tiny.adapters["adapter_0"])}},
           # rule- and extraction-judged tasks keep the test quick; the log-prob judge is the runner's
           "tasks": {"disinfo": {"n": 1}, "gsm8k": {"n": 2}},
           "generation": {"max_new_tokens": 6, "temperature": 0.8},
           "capability_generation": {"max_new_tokens": 6, "temperature": 0.2},
           "judge": {"kind": "logprob", "model": "generation", "template": "raw", "verdict_prefix": " ",
                     "prompt": "Q: {query}\nA: {result}\nTrue: {answer}\nGrade:"},
           "runner": {"chunk_size": CHUNK, "max_batch_size": CHUNK, "judge_chunk_size": 32}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(cfg: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(_free_port()), "-m", "warmfast", "run", str(cfg), "--shard", "env", "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            kids = (task / "children").read_text().split() if (task / "children").exists() else []
            out += [int(k) for k in kids]
            todo += [int(k) for k in kids]
    return out


def _rank_pid(launcher: int, rank: int) -> int | None:
    for pid in _descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if f"RANK={rank}".encode() in env and any(a == b"--shard" for a in
                                                  Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")):
            return pid
    return None


def _generated(db: Path) -> dict[str, float]:
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return dict(con.execute("SELECT job_key, created_at FROM generations").fetchall())
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    finally:
        con.close()


def test_chunks_split_by_content_hash(tiny, tmp_path):
    plan = build_plan(load_config(_config(tmp_path, tiny, "split")))
    chunks = [plan.jobs[i:i + CHUNK] for i in range(0, len(plan.jobs), CHUNK)]
    for world in (1, 2, 3, 8):
        parts = [rank_chunks(chunks, r, world) for r in range(world)]
        owned = [c for part in parts for c in part]
        assert sorted(map(chunk_key, owned)) == sorted(map(chunk_key, chunks))  # each chunk once
        for r, part in enumerate(parts):
            assert [chunk_key(c) for c in part] == [chunk_key(c) for c in chunks if owner(chunk_key(c), world) == r]
        assert load_per_rank(chunks, world) == [sum(map(len, p)) for p in parts]
    # ownership follows content, not position: the same chunks in another order keep their ranks
    shuffled = chunks[::-1]
    assert {chunk_key(c) for c in rank_chunks(shuffled, 1, 3)} == {chunk_key(c) for c in rank_chunks(chunks, 1, 3)}
    assert all(rank_chunks(chunks, r, 2) for r in range(2))  # both ranks have work here
    assert owner("f" * 64, 3) == int("f" * 16, 16) % 3
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, world=2\)"):
        rank_chunks(chunks, 2, 2)
    with pytest.raises(ValueError, match="world size must be a positive integer, got 0"):
        owner("0" * 64, 0)
    with pytest.raises(ValueError, match="expected a SHA-256 hex key"):
        owner("abc", 2)


def test_killed_rank_restarted_equals_one_process(tiny, tmp_path):
    ref = run(load_config(_config(tmp_path, tiny, "ref")), progress=False)
    cfg_path = _config(tmp_path, tiny, "dp")
    config = load_config(cfg_path)
    rank1 = {j.key for c in plan_chunks(build_plan(config), (1, 2)) for j in c}
    shard1 = Path(config.output_dir) / shard_store_name(1, 2)

    proc = _torchrun(cfg_path)
    deadline, at_kill = time.time() + 240, None
    while time.time() < deadline and at_kill is None:
        done = _generated(shard1)
        if 0 < len(done) < len(rank1):
            pid = _rank_pid(proc.pid, 1)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                at_kill = done
        elif proc.poll() is not None:
            pytest.fail(f"the run ended (rc={proc.returncode}) before rank 1 could be killed midway; "
                        f"{len(done)} of {len(rank1)}; stderr: {proc.stderr.read()[-3000:]}")
        time.sleep(0.01)
    assert at_kill is not None, "timed out waiting for rank 1 to reach the middle"
    proc.communicate(timeout=120)
    assert proc.returncode != 0  # torchrun reports the dead rank
    before = _generated(shard1)
    assert set(before) <= rank1 and len(before) % CHUNK == 0 and len(before) < len(rank1)

    again = _torchrun(cfg_path)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    after = _generated(shard1)
    assert set(after) == rank1
    rank0 = {j.key for c in plan_chunks(build_plan(config), (0, 2)) for j in c}
    assert set(_generated(Path(config.output_dir) / shard_store_name(0, 2))) == rank0  # its own shard
    assert all(after[k] == t for k, t in before.items()), "a committed generation was recomputed"

    merged = run(config, progress=False)  # unsharded: merges the two shards, exports
    assert merged.generated_now == 0 and all(n == 0 for n in merged.judged_now.values())
    with Store(Path(ref.out_dir) / "store.sqlite") as a, Store(Path(config.output_dir) / "store.sqlite") as b:
        snap_a, snap_b = a.content_snapshot(), b.content_snapshot()
    assert len(snap_a["generations"]) == ref.jobs
    for table in snap_a:
        assert snap_a[table] == snap_b[table], f"table {table} differs from the one-process run"
    pd.testing.assert_frame_equal(pd.read_csv(Path(ref.out_dir) / "results.csv"),
                                  pd.read_csv(Path(config.output_dir) / "results.csv"))
