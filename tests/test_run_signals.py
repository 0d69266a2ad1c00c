"""`warmfast run` stopped by SIGTERM, by Ctrl-C twice and by SIGKILL at random points, then rerun:
the store and the exported files equal an uninterrupted run's. SIGTERM / one Ctrl-C finish the
current commit and say how far the run got (exit 143 / 130); a second Ctrl-C stops at once; a
second run on a busy folder refuses; a SIGKILLed run's lock is taken over by the next run."""
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from warmfast.cli import main
from warmfast.run.config import load_config
from warmfast.run.runner import run
from warmfast.run.store import Store

GENERATIONS = "SELECT COUNT(*) FROM generations"
JUDGEMENTS = "SELECT COUNT(*) FROM judgements"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from warmfast.model.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny"), n_adapters=1, max_position_embeddings=1024)


def _config(folder, tiny, name: str):
    raw = {"name": "signals", "output_dir": str(folder / name),
           "model": {"name": "tiny", "path": str(tiny.model_dir)},
           "arms": {"original": {"kind": "original"},
                    "warm": {"kind": "adapter", "adapter": str(tiny.adapters["adapter_0"])}},
           "tasks": {"gsm8k": {"n": 6}, "advbench": {"n": 2}},  # 16 jobs: capability answers, refusal rules
           "capability_generation": {"max_new_tokens": 4},
           "runner": {"chunk_size": 2, "max_batch_size": 2, "judge_chunk_size": 2}, "export": ["csv"]}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref")
    cfg = _config(folder, tiny, "run")
    summary = run(load_config(cfg), progress=False)
    with Store(summary.store_path) as st:
        return st.content_snapshot(), _exports(folder / "run"), summary.jobs


def _exports(out):
    return {p.relative_to(out): p.read_bytes() for p in sorted((out / "outputs").rglob("*.csv"))}


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


def _start(cfg):
    return subprocess.Popen([sys.executable, "-m", "warmfast", "run", str(cfg), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(proc, db, sql, target, timeout=300):
    t0 = time.monotonic()
    while _count(db, sql) < target:
        assert proc.poll() is None, f"the run ended before {target} rows: {proc.stderr.read()}"
        assert time.monotonic() - t0 < timeout, "the run made no progress"
        time.sleep(0.01)


def _resume_and_compare(cfg, reference, capsys):
    snap, exports, jobs = reference
    assert main(["-q", "run", str(cfg), "--no-progress"]) == 0, capsys.readouterr().err
    out = load_config(cfg).output_dir
    with Store(os.path.join(out, "store.sqlite")) as st:
        assert st.content_snapshot() == snap
    from pathlib import Path

    assert _exports(Path(out)) == exports


def test_sigterm_finishes_the_commit_and_resumes(tiny, tmp_path, reference, capsys):
    cfg = _config(tmp_path, tiny, "run")
    db = tmp_path / "run" / "store.sqlite"
    total = reference[2]
    target = random.Random(1).randrange(1, total // 2) * 2  # somewhere in generation
    proc = _start(cfg)
    _wait_for(proc, db, GENERATIONS, target)
    # while it runs, a second run on the folder refuses at once, touching nothing
    code = main(["-q", "run", str(cfg), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "is in use by another warmfast run" in err and f"pid {proc.pid}" in err
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    done = _count(db, GENERATIONS)
    assert last == f"warmfast run: stopped; rerun the same command to resume ({done} of {total} done; " \
                   "SIGTERM during generation)"
    assert target <= done < total
    _resume_and_compare(cfg, reference, capsys)


def test_sigterm_while_judging_stops_after_the_batch(tiny, tmp_path, reference, capsys, monkeypatch):
    """In-process and deterministic: SIGTERM arrives while the first judge batch is being stored."""
    cfg = _config(tmp_path, tiny, "run")
    db = tmp_path / "run" / "store.sqlite"
    real = Store.add_judgements

    def add_then_signal(self, judgements):
        n = real(self, judgements)
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the run: stop after this commit
        return n

    monkeypatch.setattr(Store, "add_judgements", add_then_signal)
    assert main(["-q", "run", str(cfg), "--no-progress"]) == 143
    err = capsys.readouterr().err
    assert "rerun the same command to resume (2 of " in err and "SIGTERM during" in err
    assert _count(db, GENERATIONS) == reference[2] and _count(db, JUDGEMENTS) == 2
    monkeypatch.setattr(Store, "add_judgements", real)
    _resume_and_compare(cfg, reference, capsys)


def test_ctrl_c_twice_stops_at_once_and_resumes(tiny, tmp_path, reference, capsys):
    cfg = _config(tmp_path, tiny, "run")
    db = tmp_path / "run" / "store.sqlite"
    proc = _start(cfg)
    _wait_for(proc, db, GENERATIONS, random.Random(3).randrange(1, reference[2] // 2))
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    if proc.returncode == 130 and "interrupted" in lines[-1]:  # the second Ctrl-C stopped it mid-batch
        assert lines[-1].startswith("warmfast run: interrupted (Ctrl-C)")
    else:  # the batch in flight committed between the two signals: the first one's clean stop
        # (a second Ctrl-C landing after that stop was printed ends the exiting process by SIGINT)
        assert proc.returncode in (130, -signal.SIGINT) and "rerun the same command to resume" in lines[-1], stderr
    assert "press Ctrl-C again to stop at once" in stderr
    _resume_and_compare(cfg, reference, capsys)


def test_sigkill_leaves_a_lock_the_next_run_takes_over(tiny, tmp_path, reference, capsys):
    cfg = _config(tmp_path, tiny, "run")
    db = tmp_path / "run" / "store.sqlite"
    proc = _start(cfg)
    _wait_for(proc, db, GENERATIONS, random.Random(4).randrange(1, reference[2]))
    proc.kill()
    proc.communicate(timeout=60)
    lock = tmp_path / "run" / "store.sqlite.lock"
    assert f'"pid": {proc.pid}' in lock.read_text()  # the dead run's lock is still on disk
    assert main(["run", str(cfg), "--no-progress"]) == 0
    assert f"taking over the lock of pid {proc.pid}" in capsys.readouterr().err
    assert lock.read_text() == ""  # released cleanly this time
    _resume_and_compare(cfg, reference, capsys)
