"""Decode graphs are captured once per engine and batch bucket, not per generate() call.

A CPU machine cannot capture a CUDA graph, so the capture is replaced by a stand-in whose
"replay" runs the same eager forward on the graph's static buffers: the bookkeeping around it
(which pool and graphs a call reuses, the buffer filling and padding rows, the first-use check
against the eager step) runs as on a GPU, and the tokens must equal a run without graphs."""
import pytest
import torch

import warmfast as wf
from warmfast.engine import core as engine_core
from warmfast.engine import cuda_graphs, generator


class _ReplayEager:
    """Stand-in for torch.cuda.CUDAGraph: replay() reruns the forward into the captured output."""

    def __init__(self, forward, out):
        self.forward, self.out = forward, out

    def replay(self):
        self.out.copy_(self.forward())


@pytest.fixture
def fake_capture(monkeypatch):
    def capture(self, buf, batch, ops):
        def forward():
            return self.engine.model.forward(ops, batch, self.cache)
        out = forward().clone()
        return _ReplayEager(forward, out), out

    monkeypatch.setattr(cuda_graphs.DecodeGraphs, "_capture", capture)
    monkeypatch.setattr(engine_core, "check_graphs_supported", lambda engine: None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the real-graph test below runs instead")
def test_graphs_captured_once_per_engine_and_bucket(tiny, fake_capture):
    paths = tiny("llama", 3)
    # the triton backend (interpreted here), as on a GPU: its ops keep no per-tensor caches that a
    # static buffer refilled in place would make stale (TorchOps caches RoPE cos/sin by identity)
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, device="cpu", dtype="float32",
                                    backend="triton")
    arms = [None, *eng.adapter_names]
    reqs = [wf.GenerateRequest(prompt=f"Story number {i} begins", adapter=arms[i % 4], max_new_tokens=2 + i % 3)
            for i in range(5)]
    eager = [r.token_ids for r in eng.generate(reqs, max_batch_size=8, block_size=4)]
    knobs = dict(max_batch_size=8, block_size=4, cuda_graphs=True)

    first = eng.generate(reqs, **knobs)
    graphs = eng.decode_graphs
    assert [r.token_ids for r in first] == eager
    captured = graphs.captures
    assert captured == len(graphs.graphs) >= 2  # rows finish at different steps: several buckets
    assert set(graphs.graphs) <= set(cuda_graphs.buckets_for(8))
    assert eng.generate_stats.cuda_graph_buckets == sorted(graphs.graphs)

    again = eng.generate(reqs, **knobs)  # same buckets: the pool and graphs are reused
    assert [r.token_ids for r in again] == eager
    assert eng.decode_graphs is graphs and graphs.captures == captured

    pool = graphs.cache
    eng.generate(reqs, **{**knobs, "kv_blocks": graphs.num_blocks})  # the same pool asked for by size
    assert eng.decode_graphs is graphs and graphs.cache is pool and graphs.captures == captured

    # an eager call reuses the idle pool (not a second one sized from what the first holds)
    with engine_core.EngineCore(eng, engine_core.CoreConfig(max_batch_size=8, block_size=4)) as plain:
        assert plain.cache is pool and plain.graphs is None
    # a pool in use by another call is not shared: this call gets its own pool and graphs
    graphs.busy = True
    try:
        busy = eng.generate(reqs, **knobs)
        assert eng.decode_graphs is graphs and graphs.captures == captured
    finally:
        graphs.busy = False
    assert [r.token_ids for r in busy] == eager

    other = eng.generate(reqs, max_batch_size=8, block_size=8, cuda_graphs=True)  # another block size
    assert [r.token_ids for r in other] == eager
    assert eng.decode_graphs is not graphs and eng.decode_graphs.block_size == 8


def test_buckets_cover_every_batch_size():
    for cap in (1, 3, 64, 100, 512):
        b = cuda_graphs.buckets_for(cap)
        assert b[-1] == cap and all(x <= cap for x in b)
        assert all(any(x >= n for x in b) for n in range(1, cap + 1))


def test_generate_runs_under_inference_mode(tiny, monkeypatch):
    paths = tiny("llama", 3)
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, device="cpu", dtype="float32")
    seen = []
    real = engine_core.EngineCore._execute

    def forward(self, *args):
        seen.append(torch.is_inference_mode_enabled())
        return real(self, *args)

    monkeypatch.setattr(engine_core.EngineCore, "_execute", forward)
    generator.generate(eng, [wf.GenerateRequest(prompt="hi there", max_new_tokens=2)])
    assert seen == [True, True]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captures real CUDA graphs (runs on a GPU)")
def test_real_graphs_equal_eager_and_are_reused(tiny):
    paths = tiny("llama", 3)
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, device="cuda", dtype="float32",
                                    backend="triton")
    arms = [None, *eng.adapter_names]
    reqs = [wf.GenerateRequest(prompt=f"Story number {i} begins", adapter=arms[i % 4], max_new_tokens=3 + i % 5)
            for i in range(11)]
    eager = [r.token_ids for r in eng.generate(reqs, max_batch_size=16)]
    assert [r.token_ids for r in eng.generate(reqs, max_batch_size=16, cuda_graphs=True)] == eager
    captured = eng.decode_graphs.captures
    assert captured >= 2
    assert [r.token_ids for r in eng.generate(reqs, max_batch_size=16, cuda_graphs=True)] == eager
    assert eng.decode_graphs.captures == captured
