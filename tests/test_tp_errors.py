"""Tensor parallelism: clear errors and no stray processes. A setting that cannot work (degree,
divisibility, a second engine, CUDA graphs) is refused before any worker starts or at once; a load
that fails (a missing checkpoint shard) stops every rank and raises rank 0's error; a worker that
dies or fails inside a step makes the next call raise TensorParallelError naming the rank and its
error, and every later call says the engine stopped; `warmfast score/generate --tensor-parallel 2`
(no torchrun) write what one process writes."""
import json
import shutil
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

import warmfast as wf
from test_tp import rel
from warmfast.errors import InputError, MissingPathError
from warmfast.model.config import ModelConfig
from warmfast.model.parallel import TensorParallelError, check_divisible


def test_settings_refused_before_any_worker_starts(tiny):
    paths = tiny("llama", 1)
    with pytest.raises(TensorParallelError, match="positive integer, got 0"):
        wf.Engine.from_pretrained(paths.model_dir, tensor_parallel=0)
    odd = tiny("llama", 1, hidden_size=48, num_heads=3, num_kv_heads=1)
    with pytest.raises(TensorParallelError, match=r"config.json: num_attention_heads=3 is not divisible by "
                                                  r"tensor_parallel=2"):
        wf.Engine.from_pretrained(odd.model_dir, tensor_parallel=2)
    assert not dist.is_initialized()


def test_divisibility_names_the_config_value():
    base = dict(architecture="LlamaForCausalLM", vocab_size=100, hidden_size=64, intermediate_size=96,
                num_layers=1, num_heads=8, num_kv_heads=2, head_dim=8, rms_norm_eps=1e-5,
                rope_theta=1e4, max_position_embeddings=64, source="x/config.json")
    check_divisible(ModelConfig(**base), 2)
    with pytest.raises(TensorParallelError, match=r"x/config.json: num_key_value_heads=2 is not divisible by tensor_parallel=4"):
        check_divisible(ModelConfig(**base), 4)
    with pytest.raises(TensorParallelError, match="intermediate_size=96 is not divisible by tensor_parallel=64"):
        check_divisible(ModelConfig(**{**base, "num_heads": 64, "num_kv_heads": 64}), 64)


def test_a_failed_load_stops_every_rank(tiny, tmp_path):
    sharded = tiny("llama", 1, shard_size="60KB")
    broken = tmp_path / "broken"
    shutil.copytree(sharded.model_dir, broken)
    shards = sorted(broken.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[-1].unlink()
    with pytest.raises(MissingPathError, match=rf"shard {shards[-1]} listed in .* does not exist"):
        wf.Engine.from_pretrained(broken, tensor_parallel=2)
    assert not dist.is_initialized()  # the group is gone: a good engine starts next
    with wf.Engine.from_pretrained(sharded.model_dir, tensor_parallel=2) as eng:
        assert eng.score([wf.ScoreRequest("Hello", " world")])[0].num_tokens > 0


def test_one_engine_per_process_and_closed_means_closed(tiny):
    paths = tiny("llama", 1)
    eng = wf.Engine.from_pretrained(paths.model_dir, tensor_parallel=2)
    with pytest.raises(TensorParallelError, match=r"already has one \(world of 2\): close the other"):
        wf.Engine.from_pretrained(paths.model_dir, tensor_parallel=2)
    with pytest.raises(InputError, match="cuda_graphs=True needs device cuda"):
        eng.generate([wf.GenerateRequest(prompt="Hi", max_new_tokens=2)], cuda_graphs=True)
    procs = list(eng.tp_workers.procs)
    eng.close()
    assert all(p.poll() == 0 for p in procs) and not dist.is_initialized()
    with pytest.raises(TensorParallelError, match=r"engine is closed \(Engine.close\(\)\); load it again"):
        eng.score([wf.ScoreRequest("Hello", " world")])


def test_a_worker_that_dies_or_fails_is_named(tiny):
    paths = tiny("llama", 1)
    req = [wf.GenerateRequest(prompt="The capital of France is", max_new_tokens=4)]
    eng = wf.Engine.from_pretrained(paths.model_dir, tensor_parallel=2)
    assert eng.generate(req)[0].token_ids
    eng.tp_workers.procs[0].kill()  # e.g. the kernel's OOM killer
    with pytest.raises(TensorParallelError, match=r"tensor-parallel rank 1 exited with code -9"):
        eng.generate(req)
    assert not dist.is_initialized()
    with pytest.raises(TensorParallelError, match=r"stopped after an error: rank 1 exited with code -9; load it again"):
        eng.score([wf.ScoreRequest("Hello", " world")])
    # a Python error inside a worker: its message reaches rank 0
    eng = wf.Engine.from_pretrained(paths.model_dir, tensor_parallel=2)
    eng.tp_workers.send("no_such_command")
    with pytest.raises(TensorParallelError, match=r"rank 1 exited with code 1: ValueError: unknown command "
                                                  r"'no_such_command' from rank 0"):
        eng.generate(req)
    eng.close()


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "warmfast", *args], capture_output=True, text=True, timeout=300)


def test_cli_score_and_generate_with_tensor_parallel(tiny, tmp_path):
    paths = tiny("qwen2", 3)
    rows = [{"context": c, "continuation": x, "adapter": a}
            for c, x in [("The capital of France is", " Paris."), ("Why is the sky blue?", " Light scatters.")]
            for a in [None, *paths.adapters]]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    gen_in = tmp_path / "gen.jsonl"
    gen_in.write_text("".join(json.dumps({"prompt": r["context"], "adapter": r["adapter"]}) + "\n" for r in rows))
    adapters = [a for name, p in paths.adapters.items() for a in ("--adapter", f"{name}={p}")]
    model = ["--model", str(paths.model_dir), *adapters, "--tensor-parallel", "2"]
    done = _cli("score", *model, "--input", str(inp), "--output", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr[-3000:]
    done = _cli("generate", *model, "--input", str(gen_in), "--output", str(tmp_path / "gen_out.jsonl"),
                "--max-new-tokens", "5", "--ordered")
    assert done.returncode == 0, done.stderr[-3000:]
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters)
    ref = eng.score([wf.ScoreRequest(r["context"], r["continuation"], r["adapter"]) for r in rows])
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(got) == len(rows)
    for g, r in zip(got, ref):
        assert rel(g["logprob"], r.logprob) < 1e-5 and g["is_greedy"] == r.is_greedy
    ref_gen = eng.generate([wf.GenerateRequest(prompt=r["context"], adapter=r["adapter"], max_new_tokens=5)
                            for r in rows])
    got_gen = [json.loads(line) for line in (tmp_path / "gen_out.jsonl").read_text().splitlines()]
    assert [g["token_ids"] for g in got_gen] == [r.token_ids for r in ref_gen]


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
