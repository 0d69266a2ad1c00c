"""bench/e2e_grid.py runs at toy size and writes a consistent record (chunked vs one call)."""
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_grid_bench_record(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import e2e_grid

    rec = e2e_grid.main(["--preset", "tiny", "--adapters", "2", "--rank", "4", "--rows", "12", "--chunk", "5",
                         "--max-batch", "4", "--prompt", "8", "--new", "6", "--out", str(tmp_path)])
    chunked, cont, feed = rec["systems"]["chunked"], rec["systems"]["continuous"], rec["systems"]["runner_feed"]
    assert chunked["calls"] == 3 and cont["calls"] == 1
    assert chunked["tokens"] == cont["tokens"] == feed["tokens"] > 0  # same jobs, greedy: batching changes no token
    assert 0 < chunked["occupancy"] <= 1 and 0 < cont["occupancy"] <= 1 and 0 < feed["occupancy"] <= 1
    assert feed["steps"] <= chunked["steps"]  # the runner's feed never drains between chunks
    (path,) = tmp_path.glob("e2e_grid_cpu_tiny_*.json")
    assert json.loads(path.read_text())["systems"] == rec["systems"]
    sys.modules.pop("e2e_grid", None)
