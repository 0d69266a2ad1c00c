"""Data x tensor parallel on CPU with gloo: 4 ranks = 2 data-parallel groups of one 2-rank
tensor-parallel engine each.

- `torchrun --nproc-per-node 4 -m warmfast run CONFIG --shard env` with `model.tensor_parallel: 2`:
  each group's TP rank 0 writes store.shard<g>of2.sqlite (the other ranks open no store), the log-prob
  judge runs through the group's engine in lockstep, and the merged store equals a one-process run.
- `Engine.from_pretrained(..., tensor_parallel=2)` in a world of 4 builds the two groups itself;
  each group scores its own requests (a different number of batches) as one process does.
- Clear errors: a world size that is not a multiple of the TP degree, a shard that cannot be one.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

import warmfast as wf
from test_openai_client import SECRET, endpoint  # noqa: F401  (fixture)
from test_tp import free_port, gloo_world, rel
from warmfast.cli import main
from warmfast.model.parallel import TensorParallelError, check_world
from warmfast.run.cli import data_parallel_shard
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


def test_torchrun_two_groups_of_tp2_equal_one_process(tiny_model, tmp_path):
    ref = run(load_config(_config(tmp_path, tiny_model, "ref")), progress=False)
    cfg_path = _config(tmp_path, tiny_model, "dptp", tensor_parallel=2)
    config = load_config(cfg_path)
    done = _torchrun(cfg_path, 4, "--shard", "env")
    assert done.returncode == 0, done.stderr[-4000:]
    out = Path(config.output_dir)
    # one store per data-parallel group, written by its TP rank 0; no rank opened any other store
    assert sorted(p.name for p in out.glob("store*.sqlite")) == ["store.shard0of2.sqlite", "store.shard1of2.sqlite"]
    plan = build_plan(config)
    for g in range(2):
        with Store(out / f"store.shard{g}of2.sqlite") as s:
            keys = {row[0] for row in s.content_snapshot()["generations"]}
        assert keys == {j.key for c in plan_chunks(plan, (g, 2)) for j in c} and keys
    assert done.stdout.count("jobs: ") == 2  # the two leaders report, the followers do not
    judged = [int(n) for n in re.findall(r"judge logprob_judge: (\d+) new verdicts", done.stdout)]
    assert len(judged) == 2 and min(judged) > 0
    # each follower served its leader's engine calls: generation chunks and the judge's score calls
    served = {(int(g), int(n)) for g, n in
              re.findall(r"TP rank 1 of data-parallel group (\d): served (\d+) engine calls", done.stderr)}
    assert {g for g, _ in served} == {0, 1} and all(n >= 2 for _, n in served), done.stderr[-2000:]

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


def test_http_judge_on_tp_rank0_alone_and_a_leader_failure_stops_the_group(
        tiny_model, tmp_path, endpoint, monkeypatch):  # noqa: F811
    """One TP group (world 2, no --shard): the leader judges over HTTP while rank 1 waits; when the
    endpoint cannot be reached the leader fails outside an engine call and rank 1 stops too."""
    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    ep = endpoint(answer=lambda body: "CORRECT" if len(body["messages"][-1]["content"]) % 2 else "INCORRECT")
    raw = yaml.safe_load(_config(tmp_path, tiny_model, "http", tensor_parallel=2).read_text())
    raw["tasks"] = {"disinfo": {"n": 1}}
    raw["runner"] = {"chunk_size": 28, "max_batch_size": 28}
    raw["judge"] = {"kind": "openai", "base_url": ep.base_url, "model": "grader-1",
                    "api_key_env": "WARMFAST_TEST_KEY", "backoff_s": 0.01, "max_retries": 1, "timeout_s": 5}
    cfg = tmp_path / "http.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    done = _torchrun(cfg, 2)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("jobs: 56 (generated now: 56") == 1 and "openai_judge: 56 new verdicts" in done.stdout
    assert 0 < len(ep.seen) <= 56  # asked by the leader alone (identical prompts once)
    assert "TP rank 1 of data-parallel group 0: served 2 engine calls" in done.stderr  # 2 chunks, no judge
    out = tmp_path / "http"
    assert sorted(p.name for p in out.glob("store*.sqlite")) == ["store.sqlite"] and (out / "results.csv").is_file()

    raw["judge"]["base_url"] = "http://127.0.0.1:9/v1"  # nothing listens there
    raw["output_dir"] = str(tmp_path / "http_down")
    cfg.write_text(yaml.safe_dump(raw))
    failed = _torchrun(cfg, 2)
    assert failed.returncode != 0
    assert "TP rank 1 stops: its TP rank 0 (global rank 0) failed: EndpointUnreachable" in failed.stderr, \
        failed.stderr[-4000:]
    with Store(tmp_path / "http_down" / "store.sqlite") as st:  # the generations are kept for the next try
        assert len(st.done_generations()) == 56


# ---- the API: Engine.from_pretrained(tensor_parallel=2) in a world of 4 --------------------------
TEXTS = [("The capital of France is", " Paris."), ("Why is the sky blue?", " Light scatters."),
         ("My friend has a fever and", " should rest."), ("Explain a poem", " Lines and rhythm.")]


def _requests(group: int, adapters: list[str]) -> list[wf.ScoreRequest]:
    texts = TEXTS[:2] if group == 0 else TEXTS  # the groups make different numbers of calls
    return [wf.ScoreRequest(c, x, a) for c, x in texts for a in [None, *adapters]]


def _api_worker(rank: int, world: int, port: int, model_dir: str, adapters: dict, out_path: str) -> None:
    from warmfast.model.parallel import parallel_layout

    seen = {}
    with gloo_world(rank, world, port):
        try:
            wf.Engine.from_pretrained(model_dir, adapters=adapters, tensor_parallel=3)
        except TensorParallelError as err:
            seen["error"] = str(err)
        eng = wf.Engine.from_pretrained(model_dir, adapters=adapters, tensor_parallel=2)
        layout = parallel_layout(2)  # the layout the engine made (created once, returned again)
        assert eng.tp is layout.tp
        group = layout.dp_rank
        scores = []
        for _ in range(1 + group):  # group 1 also calls twice as often: the groups are independent
            scores = eng.score(_requests(group, eng.adapter_names), max_batch_tokens=16)
        seen.update(group=group, tp_rank=eng.tp.rank, src=eng.tp.src, heads=eng.model.cfg.num_heads,
                    logprob=[r.logprob for r in scores], greedy=[r.is_greedy for r in scores])
        with open(f"{out_path}.{rank}", "w") as f:
            json.dump(seen, f)


def test_from_pretrained_makes_tp_groups_in_a_larger_world(tiny_model, tmp_path):
    adapters = {k: str(v) for k, v in tiny_model.adapters.items()}
    out = str(tmp_path / "api")
    mp.spawn(_api_worker, args=(4, free_port(), str(tiny_model.model_dir), adapters, out), nprocs=4, join=True)
    single = wf.Engine.from_pretrained(tiny_model.model_dir, adapters=adapters)
    for rank in range(4):
        seen = json.loads(Path(f"{out}.{rank}").read_text())
        assert "tensor_parallel=3 but the torch.distributed world size is 4, which is not a multiple" in seen["error"]
        assert (seen["group"], seen["tp_rank"], seen["src"]) == (rank // 2, rank % 2, rank - rank % 2)
        assert seen["heads"] * 2 == single.model.cfg.num_heads  # a real shard
        ref = single.score(_requests(seen["group"], single.adapter_names))
        assert len(seen["logprob"]) == len(ref) and seen["greedy"] == [r.is_greedy for r in ref]
        for a, r in zip(seen["logprob"], ref):
            assert rel(a, r.logprob) < 1e-5
    assert len({round(r.logprob, 4) for r in ref}) > len(ref) // 2  # adapters change the scores


# ---- clear errors, before any process group exists -----------------------------------------------
def test_world_not_a_multiple_of_the_tp_degree(tiny_model, tmp_path, monkeypatch, capsys):
    check_world(2, 4)
    with pytest.raises(TensorParallelError, match="tensor_parallel=2 but the torch.distributed world size is 3, "
                                                  "which is not a multiple of it"):
        check_world(2, 3)
    cfg = _config(tmp_path, tiny_model, "bad")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main(["run", str(cfg), "--shard", "env", "--tensor-parallel", "2", "--no-progress"]) == 2
    assert "tensor_parallel=2 but the torch.distributed world size is 3" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert main(["run", str(cfg), "--shard", "0/2", "--tensor-parallel", "2", "--no-progress"]) == 2
    assert "--shard 0/2 with tensor_parallel=2 in a torchrun world of 4 ranks" in capsys.readouterr().err
    assert main(["run", str(cfg), "--tensor-parallel", "2", "--no-progress"]) == 2
    assert "use --shard env" in capsys.readouterr().err
    monkeypatch.delenv("WORLD_SIZE")
    assert main(["run", str(cfg), "--tensor-parallel", "2", "--no-progress"]) == 2
    assert "model.tensor_parallel=2 needs torchrun" in capsys.readouterr().err
    assert main(["run", str(cfg), "--tensor-parallel", "0"]) == 2
    assert "--tensor-parallel must be a positive integer, got 0" in capsys.readouterr().err
    assert not dist.is_initialized() and not (tmp_path / "bad").exists()  # nothing was started
    assert data_parallel_shard("env", (3, 4), 2, 4) == (1, 2) and data_parallel_shard("env", (2, 8), 4, 8) == (0, 2)
    assert data_parallel_shard("1/3", (1, 3), 2, 2) == (1, 3)  # one TP group per launch, explicit shard


def test_tensor_parallel_config_outside_torchrun(tiny_model, tmp_path):
    raw = yaml.safe_load(_config(tmp_path, tiny_model, "zero").read_text())
    raw["model"]["tensor_parallel"] = 0
    (tmp_path / "zero.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"zero.yaml: model.tensor_parallel: must be a positive integer, got 0"):
        load_config(tmp_path / "zero.yaml")
    # one process with tensor_parallel: 2 fails when it needs the engine, naming the fix
    config = load_config(_config(tmp_path, tiny_model, "alone", tensor_parallel=2))
    with pytest.raises(ConfigError, match=r"model.tensor_parallel: 2 ranks per engine need torchrun"):
        run(config, progress=False)
