"""Tensor parallelism: clear errors (no process group, world size mismatch, heads not divisible, a
missing checkpoint shard) on every rank without a hang, and `torchrun ... warmfast score
--tensor-parallel 2` writing what one process writes."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import warmfast as wf
from test_tp import free_port, gloo_world, rel
from warmfast.model.config import ModelConfig
from warmfast.model.parallel import TensorParallelError, check_divisible


def test_tensor_parallel_without_a_process_group(tiny):
    paths = tiny("llama", 1)
    assert not dist.is_initialized()
    with pytest.raises(TensorParallelError, match=r"tensor_parallel=2 needs an initialised torch.distributed"):
        wf.Engine.from_pretrained(paths.model_dir, tensor_parallel=2)
    with pytest.raises(TensorParallelError, match="positive integer, got 0"):
        wf.Engine.from_pretrained(paths.model_dir, tensor_parallel=0)


def test_divisibility_names_the_config_value():
    base = dict(architecture="LlamaForCausalLM", vocab_size=100, hidden_size=64, intermediate_size=96,
                num_layers=1, num_heads=8, num_kv_heads=2, head_dim=8, rms_norm_eps=1e-5,
                rope_theta=1e4, max_position_embeddings=64, source="x/config.json")
    check_divisible(ModelConfig(**base), 2)
    with pytest.raises(TensorParallelError, match=r"x/config.json: num_key_value_heads=2 is not divisible by tensor_parallel=4"):
        check_divisible(ModelConfig(**base), 4)
    with pytest.raises(TensorParallelError, match="intermediate_size=96 is not divisible by tensor_parallel=64"):
        check_divisible(ModelConfig(**{**base, "num_heads": 64, "num_kv_heads": 64}), 64)


def _worker(rank: int, world: int, port: int, cases: dict, out_path: str) -> None:
    seen = {}
    with gloo_world(rank, world, port):
        for name, (model_dir, n) in cases.items():
            try:
                wf.Engine.from_pretrained(model_dir, tensor_parallel=n)
                seen[name] = ["no error", ""]
            except (TensorParallelError, FileNotFoundError) as err:
                seen[name] = [type(err).__name__, str(err)]
        with open(f"{out_path}.{rank}", "w") as f:
            json.dump(seen, f)


def test_errors_on_every_rank(tiny, tmp_path):
    ok = tiny("llama", 1)
    odd = tiny("llama", 1, hidden_size=48, num_heads=3, num_kv_heads=1)
    sharded = tiny("llama", 1, shard_size="60KB")
    broken = tmp_path / "broken"
    shutil.copytree(sharded.model_dir, broken)
    shards = sorted(broken.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[-1].unlink()
    cases = {"world": (str(ok.model_dir), 4), "heads": (str(odd.model_dir), 2), "shard": (str(broken), 2)}
    out = str(tmp_path / "err")
    mp.spawn(_worker, args=(2, free_port(), cases, out), nprocs=2, join=True)
    for r in range(2):
        seen = json.load(open(f"{out}.{r}"))
        kind, msg = seen["world"]
        assert kind == "TensorParallelError" and "tensor_parallel=4 but the torch.distributed world size is 2" in msg
        kind, msg = seen["heads"]
        assert kind == "TensorParallelError" and "num_attention_heads=3 is not divisible by tensor_parallel=2" in msg
        kind, msg = seen["shard"]
        assert kind == "MissingPathError" and f"shard {shards[-1]} listed in" in msg and "does not exist" in msg


def test_cli_torchrun_score_equals_one_process(tiny, tmp_path):
    paths = tiny("qwen2", 3)
    rows = [{"context": c, "continuation": x, "adapter": a}
            for c, x in [("The capital of France is", " Paris."), ("Why is the sky blue?", " Light scatters.")]
            for a in [None, *paths.adapters]]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    adapters = [a for name, p in paths.adapters.items() for a in ("--adapter", f"{name}={p}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port()), "-m", "warmfast", "score", "--model", str(paths.model_dir), *adapters,
           "--input", str(inp), "--output", str(tmp_path / "out.jsonl"), "--tensor-parallel", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters)
    ref = eng.score([wf.ScoreRequest(r["context"], r["continuation"], r["adapter"]) for r in rows])
    assert len(got) == len(rows)
    for g, r in zip(got, ref):
        assert rel(g["logprob"], r.logprob) < 1e-5 and g["is_greedy"] == r.is_greedy


def test_rank_slices_are_slices_of_the_full_model(tiny):
    # loading needs no process group: each rank's tensors equal the matching slice of the full model
    from warmfast.model.adapters import load_adapter, stack_adapters
    from warmfast.model.parallel import TPGroup, lora_slicer, vocab_range, weight_slicer
    from warmfast.model.weights import load_weights

    paths = tiny("qwen2", 3, num_kv_heads=4)  # q/k/v bias, tied embeddings
    cfg = ModelConfig.from_folder(paths.model_dir)
    cpu = torch.device("cpu")
    full = load_weights(paths.model_dir, cfg, torch.float32, cpu)
    adapters = [load_adapter(n, p, cfg) for n, p in paths.adapters.items()]
    full_lora = stack_adapters(adapters, cfg, torch.float32, cpu)
    n = 4
    q, kv, inter = cfg.q_size // n, cfg.kv_size // n, cfg.intermediate_size // n
    for r in range(n):
        tp = TPGroup(rank=r, size=n)
        part = load_weights(paths.model_dir, cfg, torch.float32, cpu, shard=weight_slicer(cfg, tp))
        a, b = vocab_range(cfg.vocab_size, n, r)
        assert torch.equal(part.embed, full.embed[a:b]) and part.lm_head.data_ptr() == part.embed.data_ptr()
        for lp, lf in zip(part.layers, full.layers):
            qkv_rows = [range(q * r, q * (r + 1)), range(cfg.q_size + kv * r, cfg.q_size + kv * (r + 1)),
                        range(cfg.q_size + cfg.kv_size + kv * r, cfg.q_size + cfg.kv_size + kv * (r + 1))]
            rows = torch.tensor([i for rg in qkv_rows for i in rg])
            assert torch.equal(lp.qkv, lf.qkv[rows]) and torch.equal(lp.qkv_bias, lf.qkv_bias[rows])
            assert torch.equal(lp.o, lf.o[:, q * r:q * (r + 1)])
            I = cfg.intermediate_size
            gu = torch.cat([torch.arange(inter * r, inter * (r + 1)), I + torch.arange(inter * r, inter * (r + 1))])
            assert torch.equal(lp.gate_up, lf.gate_up[gu])
            assert torch.equal(lp.down, lf.down[:, inter * r:inter * (r + 1)])
            assert torch.equal(lp.input_norm, lf.input_norm) and torch.equal(lp.post_norm, lf.post_norm)
        part_lora = stack_adapters(adapters, cfg, torch.float32, cpu, shard=lora_slicer(cfg, tp))
        for lp, lf in zip(part_lora, full_lora):
            assert set(lp) == set(lf)
            for group in lf:
                sp, sf = lp[group], lf[group]
                assert sf.B.abs().sum() > 0  # non-zero B: the slice is not trivially equal
                if group in ("qkv", "gate_up"):
                    assert torch.equal(sp.A, sf.A)
                    idx = torch.cat([torch.arange(o0 + (o1 - o0) // n * r, o0 + (o1 - o0) // n * (r + 1))
                                     for o0, o1 in zip(sf.slice_offsets, sf.slice_offsets[1:])])
                    assert torch.equal(sp.B, sf.B[:, idx])
                    assert sp.slice_offsets[-1] * n == sf.slice_offsets[-1]
                else:
                    w = sf.A.shape[2] // n
                    assert torch.equal(sp.A, sf.A[:, :, w * r:w * (r + 1)]) and torch.equal(sp.B, sf.B)


def test_cli_tensor_parallel_outside_torchrun(tiny, tmp_path, monkeypatch, capsys):
    from warmfast.cli import main

    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"context": "The capital of France is", "continuation": " Paris."}) + "\n")
    assert main(["score", "--model", str(tiny("llama", 1).model_dir), "--input", str(inp),
                 "--output", str(tmp_path / "out.jsonl"), "--tensor-parallel", "2"]) == 2
    assert re.search(r"launch with torchrun .*lacks \['RANK', 'WORLD_SIZE'", capsys.readouterr().err)
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_score_refuses_a_world_of_several_tp_groups(tiny, tmp_path):
    # 4 ranks, tensor parallel 2: two groups would each score (and write) every row
    paths = tiny("llama", 1)
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"context": "Hello", "continuation": " world"}) + "\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "4", "--master-port",
           str(free_port()), "-m", "warmfast", "score", "--model", str(paths.model_dir),
           "--input", str(inp), "--output", str(tmp_path / "out.jsonl"), "--tensor-parallel", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    assert "--tensor-parallel 2 needs a world of exactly 2 ranks, got 4" in done.stderr
    assert not (tmp_path / "out.jsonl").exists()
