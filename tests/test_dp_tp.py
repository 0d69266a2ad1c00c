"""Data x tensor parallel on CPU with gloo.

- `torchrun --nproc-per-node 2 -m warmfast run CONFIG --shard env` with `model.tensor_parallel: 2`:
  two data-parallel processes, each an engine of 2 ranks (one worker each); each writes
  store.shard<g>of2.sqlite, the log-prob judge runs through its engine, and the merged store
  equals a one-process run.
- One process with `model.tensor_parallel: 2` and an HTTP judge: it judges while its worker idles;
  when the endpoint cannot be reached the run fails with that error, keeps its generations, and
  leaves no worker or process group behind.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch.distributed as dist
import yaml

from test_openai_client import SECRET, endpoint  # noqa: F401  (fixture)
from serve_process import free_port
from warmfast.cli import main
from warmfast.openai_client import EndpointUnreachable
from warmfast.run.config import ConfigError, load_config
from warmfast.run.plan import build_plan
from warmfast.run.runner import plan_chunks, run
from warmfast.run.store import Store

CHUNK = 6


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from warmfast.model.tiny import build_tiny

    # 4 heads, 2 kv heads: one GQA group per TP rank
    return build_tiny(tmp_path_factory.mktemp("tiny_dptp"), n_adapters=1, max_position_embeddings=1024)


def _config(tmp_path: Path, tiny, name: str, tensor_parallel: int = 1) -> Path:
    raw = {"name": "dptp", "output_dir": str(tmp_path / name),
           "model": {"name": "tiny", "path": str(tiny.model_dir), "tensor_parallel": tensor_parallel},
           "arms": {"original": {"kind": "original"},
                    "warm": {"kind": "adapter", "adapter": str(tiny.adapters["adapter_0"])}},
           # disinfo: refusal rules + the log-prob judge (on the generation engine); gsm8k: extraction
           "tasks": {"disinfo": {"n": 1}, "gsm8k": {"n": 2}},
           "generation": {"max_new_tokens": 6, "temperature": 0.0},  # greedy, fp32
           "capability_generation": {"max_new_tokens": 6, "temperature": 0.0},
           "judge": {"kind": "logprob", "model": "generation", "template": "raw", "verdict_prefix": " ",
                     "prompt": "Q: {query}\nA: {result}\nTrue: {answer}\nGrade:"},
           "runner": {"chunk_size": CHUNK, "max_batch_size": CHUNK, "judge_chunk_size": 16}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _assert_same_store(ref_db: Path, got_db: Path) -> None:
    """Jobs and generations exactly; judgements: same keys and verdicts, log-prob floats to 1e-5."""
    with Store(ref_db) as a, Store(got_db) as b:
        sa, sb = a.content_snapshot(), b.content_snapshot()
    assert sa["jobs"] == sb["jobs"] and sa["llm_cache"] == sb["llm_cache"]
    assert sa["generations"] == sb["generations"]
    assert len(sa["judgements"]) == len(sb["judgements"]) > 0
    for ra, rb in zip(sa["judgements"], sb["judgements"]):
        key, job, role, judge, verdict, score, conf, _ = ra
        assert rb[:5] == (key, job, role, judge, verdict)
        for x, y in ((score, rb[5]), (conf, rb[6])):
            assert (x is None and y is None) or abs(x - y) <= 1e-5 * max(1.0, abs(x)), (ra, rb)


def test_torchrun_two_dp_processes_of_tp2_equal_one_process(tiny_model, tmp_path):
    ref = run(load_config(_config(tmp_path, tiny_model, "ref")), progress=False)
    cfg_path = _config(tmp_path, tiny_model, "dptp", tensor_parallel=2)
    config = load_config(cfg_path)
    done = _torchrun(cfg_path, 2, "--shard", "env")
    assert done.returncode == 0, done.stderr[-4000:]
    out = Path(config.output_dir)
    assert sorted(p.name for p in out.glob("store*.sqlite")) == ["store.shard0of2.sqlite", "store.shard1of2.sqlite"]
    plan = build_plan(config)
    for g in range(2):
        with Store(out / f"store.shard{g}of2.sqlite") as s:
            keys = {row[0] for row in s.content_snapshot()["generations"]}
        assert keys == {j.key for c in plan_chunks(plan, (g, 2)) for j in c} and keys
    assert done.stdout.count("jobs: ") == 2
    judged = [int(n) for n in re.findall(r"judge logprob_judge: (\d+) new verdicts", done.stdout)]
    assert len(judged) == 2 and min(judged) > 0

    merged = run(config, progress=False)  # one process: merges the shards; nothing left, so no engine
    assert merged.generated_now == 0 and all(n == 0 for n in merged.judged_now.values())
    _assert_same_store(Path(ref.out_dir) / "store.sqlite", out / "store.sqlite")
    pd.testing.assert_frame_equal(pd.read_csv(Path(ref.out_dir) / "results.csv"),
                                  pd.read_csv(out / "results.csv"), check_exact=False, rtol=1e-5)


def _torchrun(cfg: Path, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
           str(free_port()), "-m", "warmfast", "run", str(cfg), "--no-progress", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_http_judge_with_tp2_and_a_failing_endpoint(tiny_model, tmp_path, endpoint, monkeypatch):  # noqa: F811
    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    ep = endpoint(answer=lambda body: "CORRECT" if len(body["messages"][-1]["content"]) % 2 else "INCORRECT")
    raw = yaml.safe_load(_config(tmp_path, tiny_model, "http", tensor_parallel=2).read_text())
    raw["tasks"] = {"disinfo": {"n": 1}}
    raw["runner"] = {"chunk_size": 28, "max_batch_size": 28}
    raw["judge"] = {"kind": "openai", "base_url": ep.base_url, "model": "grader-1",
                    "api_key_env": "WARMFAST_TEST_KEY", "backoff_s": 0.01, "max_retries": 1, "timeout_s": 5}
    cfg = tmp_path / "http.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    summary = run(load_config(cfg), progress=False)
    assert summary.generated_now == 56 and summary.judged_now["openai_judge"] == 56
    assert 0 < len(ep.seen) <= 56  # identical prompts asked once
    assert not dist.is_initialized()  # the run closed its engine: the worker has stopped
    ref_raw = {**raw, "output_dir": str(tmp_path / "http_ref"), "model": {**raw["model"], "tensor_parallel": 1}}
    cfg.write_text(yaml.safe_dump(ref_raw))
    ref = run(load_config(cfg), progress=False)
    with Store(Path(ref.out_dir) / "store.sqlite") as a, Store(tmp_path / "http" / "store.sqlite") as b:
        assert a.content_snapshot()["generations"] == b.content_snapshot()["generations"]

    raw["judge"]["base_url"] = "http://127.0.0.1:9/v1"  # nothing listens there
    raw["output_dir"] = str(tmp_path / "http_down")
    cfg.write_text(yaml.safe_dump(raw))
    with pytest.raises(EndpointUnreachable):
        run(load_config(cfg), progress=False)
    assert not dist.is_initialized()
    with Store(tmp_path / "http_down" / "store.sqlite") as st:  # the generations are kept for the next try
        assert len(st.done_generations()) == 56


def test_tensor_parallel_config_must_be_positive(tiny_model, tmp_path, capsys):
    raw = yaml.safe_load(_config(tmp_path, tiny_model, "zero").read_text())
    raw["model"]["tensor_parallel"] = 0
    (tmp_path / "zero.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"zero.yaml: model.tensor_parallel: must be a positive integer, got 0"):
        load_config(tmp_path / "zero.yaml")
    assert main(["run", str(_config(tmp_path, tiny_model, "bad")), "--tensor-parallel", "0"]) == 2
    assert "--tensor-parallel must be a positive integer, got 0" in capsys.readouterr().err
