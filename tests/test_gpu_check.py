"""bench/gpu_check.sh: the dry run (the same steps on this CPU: install, kernel tests, kernel
benches, the end-to-end benches on one in-memory model, the table), the global deadline, and the
summary table's reading of records."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check_summary as summary  # noqa: E402


def run_check(tmp_path, *args, **env):
    out, work = tmp_path / "out", tmp_path / "work"
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), *args], capture_output=True, text=True,
                       timeout=900, env={**os.environ, "OUT": str(out), "WF_WORKDIR": str(work),
                                         "PY": sys.executable, **env})
    return r, out


def test_dry_run_exercises_every_step(tmp_path):
    r, out = run_check(tmp_path, "--dry-run")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.tar.gz"]
    s = json.loads((out / "gpu_check.json").read_text())
    steps = {st["step"]: st for st in s["steps"]}
    assert list(steps) == ["env", "install", "kernels", "bench", "e2e", "profile"]
    assert all(st["rc"] == 0 for st in steps.values()), steps
    assert s["env"]["dry_run"] and s["env"]["card"] is None
    assert s["kernel_tests"]["tests"] > 0 and s["kernel_tests"]["failures"] == 0
    score = s["e2e_score"][0]
    assert score["preset"] == "tiny" and "hf_peft_loop" not in score["tokens_per_s"]  # --no-hf-loop
    assert score["arms_per_batch_min"] >= 2  # every warmfast batch mixes adapters
    gens = {g["rows"]: g for g in s["e2e_generate"]}
    assert set(gens) == {3, 6}
    assert "hf_peft_mixed" in gens[3]["tokens_per_s"] and "hf_peft_mixed" not in gens[6]["tokens_per_s"]
    assert gens[6]["hf"].startswith("skipped")
    (prof,) = s["profile"]  # bench/gpu_profile.py: every phase timed (no kernel events on a CPU)
    assert set(prof["phases"]) == {"score", "generate_eager"}
    assert all(ph["wall_s"] > 0 and ph["tokens_per_s"] > 0 for ph in prof["phases"].values())
    with tarfile.open(out / "gpu_check.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"env.log", "install.log", "kernels.log", "bench.log", "e2e.log", "profile.log", "kernel_tests.xml",
            "steps.jsonl", "gpu_check.json"} <= names
    table = r.stdout[r.stdout.index("== table"):]
    for word in ("measure", "goal", "HF+PEFT mixed", "kernel tests on the card", "mixed scoring", "generation b3",
                 "profile generate_eager"):
        assert word in table


def test_deadline_skips_and_records_steps_that_cannot_fit(tmp_path):
    r, out = run_check(tmp_path, "--dry-run", WF_DEADLINE_S="2", WF_SKIP="bench")
    assert r.returncode != 0  # steps not run are not a pass
    s = json.loads((out / "gpu_check.json").read_text())
    notes = {st["step"]: st["note"] for st in s["steps"]}
    assert notes["bench"] == "skipped by WF_SKIP"
    for name in ("env", "install", "kernels", "e2e", "profile"):
        assert notes[name].startswith("skipped: out of time"), notes
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.tar.gz"]


def _gpu_summary(score_tps, gen):
    return {"env": {"card": "NVIDIA H200", "torch": "2.11", "triton": "3.6.0", "date": "d"}, "steps": [],
            "kernel_tests": {"tests": 10, "failures": 1, "errors": 0, "skipped": 0},
            "e2e_score": [{"tokens_per_s": score_tps, "arms_per_batch_mean": 9.0}],
            "e2e_generate": gen}


def test_table_puts_each_measure_beside_goal_and_hf():
    gen = [{"rows": 64, "max_batch": 64, "prompt": 128, "new": 128,
            "tokens_per_s": {"warmfast": 6000.0, "warmfast_cuda_graphs": 9000.0, "hf_peft_mixed": 150.0},
            "cuda_graphs_rows_equal_eager": "63/64"},
           {"rows": 256, "skipped": "out of time (global deadline)"}]
    rows = {r[0]: r for r in summary.table_rows(_gpu_summary({"warmfast": 40000.0, "hf_peft_mixed": 10000.0}, gen))}
    assert rows["kernel tests on the card"][1:] == ("9/10 pass", "all pass", "", "", "NOT met")
    score = rows["mixed scoring, tokens/s (9.0 arms/batch)"]
    assert score[1:] == ("40,000", "45,000 (3.9x HF)", "10,000", "4.00x", "NOT met")
    eager = rows["generation b64 128+128, greedy, eager"]
    assert eager[1:] == ("6,000", "8,000", "150", "40.00x", "met")  # graphs reach 9,000 >= 8,000
    assert rows["generation b64: graph tokens == eager"][-1] == "NOT met"
    assert rows["generation, 256 requests"][1] == "skipped"


def test_summary_survives_missing_and_truncated_files(tmp_path):
    (tmp_path / "records").mkdir()
    (tmp_path / "env.json").write_text('{"card": nu')  # killed while writing
    s = summary.summarize(str(tmp_path))
    assert "unreadable" in s["env"] and s["kernel_tests"] is None and s["e2e_score"] == []
    rows = summary.table_rows(s)
    assert ("kernel tests on the card", "not run", "all pass", "", "", "not run") in rows
