"""The paged generator under tensor parallelism (CPU, gloo, 2 ranks): every rank returns exactly the
tokens of one process, with mixed adapters, sampling filters and a pool small enough to preempt."""
import json
import socket

import torch.multiprocessing as mp

import warmfast as wf
from test_tp import gloo_world

PROMPTS = ["The capital of France is", "Why is the sky blue? Explain", "My friend, 21, has a fever and"]


def requests(adapter_names):
    arms = [None, *adapter_names]
    modes = [dict(), dict(temperature=0.9, top_p=0.9), dict(temperature=1.1, top_k=12, min_p=0.02)]
    return [wf.GenerateRequest(prompt=p, adapter=arms[(i + j) % len(arms)], max_new_tokens=7, seed=i,
                               **modes[(i + j) % 3])
            for i, p in enumerate(PROMPTS) for j in range(4)]


def run(model_dir, adapters, tensor_parallel: int) -> dict:
    from warmfast.engine.generator import open_core

    eng = wf.Engine.from_pretrained(model_dir, adapters=adapters, tensor_parallel=tensor_parallel)
    reqs = requests(eng.adapter_names)
    core = open_core(eng, reqs, max_batch_size=8, block_size=4, kv_blocks=10)
    results = [None] * len(reqs)
    while core.has_unfinished():
        for out in core.step():
            if out.finished:
                results[out.request_id] = out.result
    return {"tokens": [r.token_ids for r in results], "text": [r.text for r in results],
            "preemptions": core.sched.num_preemptions, "kv_heads": eng.model.cfg.num_kv_heads}


def _worker(rank, world, port, model_dir, adapters, out):
    with gloo_world(rank, world, port), open(f"{out}.{rank}", "w") as f:
        json.dump(run(model_dir, adapters, world), f)


def test_tp2_generation_equals_one_process(tiny, tmp_path):
    paths = tiny("llama", 3)
    model_dir, adapters = str(paths.model_dir), {k: str(v) for k, v in paths.adapters.items()}
    single = run(model_dir, adapters, 1)
    assert single["preemptions"] > 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "gen_tp2")
    mp.spawn(_worker, args=(2, port, model_dir, adapters, out), nprocs=2, join=True)
    for r in range(2):
        got = json.load(open(f"{out}.{r}"))
        assert got["kv_heads"] * 2 == single["kv_heads"]  # each rank really holds half the cache
        assert got["tokens"] == single["tokens"] and got["text"] == single["text"], r
