"""The paged generator: greedy == HF generate per adapter, sampling batch-invariance over a mixed
batch of 50 requests, preemption with a tiny block pool == the unconstrained run, clear errors."""
import pytest

import warmfast as wf
from hf_reference import HFReference
from warmfast.engine.generator import generate, open_core

PROMPTS = ["The capital of France is", "I feel sad today. Which river runs through London?",
           "Explain the difference between a poem and a story", "café naïve 1 2 3"]


@pytest.fixture(scope="module", params=["llama", "qwen2", "mistral"])
def setup(request, tiny):
    paths = tiny(request.param, 3)
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, device="cpu", dtype="float32")
    return paths, eng


@pytest.fixture(scope="module")
def llama4(tiny):
    paths = tiny("llama", 4)
    return wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, device="cpu", dtype="float32")


def test_greedy_equals_hf_generate_for_every_adapter(setup):
    paths, eng = setup
    hf = HFReference(paths)
    arms = [None, *eng.adapter_names]
    reqs = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=10) for p in PROMPTS for a in arms]
    # a small pool and batch size force several prefill/decode waves and block growth
    results = generate(eng, reqs, max_batch_size=5, block_size=4)
    outputs = set()
    for req, res in zip(reqs, results):
        ids = eng.tok.encode_context(req.prompt)
        ref = hf.greedy(list(ids), req.adapter, req.max_new_tokens)
        eos = [i for i, t in enumerate(ref) if t in eng.tok.eos_ids]
        if eos:  # HF keeps the EOS token; we drop it and report finish_reason "stop"
            assert res.token_ids == ref[:eos[0]] and res.finish_reason == "stop"
        else:
            assert res.token_ids == ref and res.finish_reason == "length"
        assert res.text == eng.tok.decode(res.token_ids)
        outputs.add(tuple(res.token_ids))
    assert len(outputs) > len(PROMPTS)  # adapters change what is generated


def sampled(eng, n: int = 50):
    arms = [None, *eng.adapter_names]
    modes = [dict(temperature=0.9), dict(temperature=1.2, top_k=20), dict(temperature=0.8, top_p=0.9),
             dict(temperature=1.0, min_p=0.05), dict(temperature=0.0)]
    return [wf.GenerateRequest(prompt=PROMPTS[i % 4] + " " * (i % 3), adapter=arms[i % len(arms)],
                               max_new_tokens=6 + i % 9, seed=i % 7, **modes[i % 5]) for i in range(n)]


def test_sampled_request_alone_equals_inside_mixed_batch(llama4):
    eng = llama4
    reqs = sampled(eng)
    assert len({r.adapter for r in reqs}) == 5  # base + 4 adapters
    together = generate(eng, reqs, max_batch_size=64)
    for i in (0, 1, 2, 3, 6, 17, 33, 49):
        alone = generate(eng, [reqs[i]])[0]
        assert alone.token_ids == together[i].token_ids, i
    # the draws are random: other seeds give other tokens for the sampled requests
    reseeded = generate(eng, [wf.GenerateRequest(**{**r.__dict__, "seed": r.seed + 100}) for r in reqs[:8]])
    assert sum(a.token_ids != b.token_ids for a, b in zip(reseeded, together[:8])) >= 4


def test_preemption_with_a_tiny_pool_equals_the_unconstrained_run(llama4):
    eng = llama4
    reqs = sampled(eng, 24)
    free = generate(eng, reqs, max_batch_size=64)
    core = _run(eng, reqs, max_batch_size=12, block_size=4, kv_blocks=14)
    assert core.sched.num_preemptions > 0
    assert core.sched.num_finished == len(reqs) and not core.sched.running and not core.sched.waiting
    assert core.sched.blocks.num_free == 14
    for r, f in zip(core.results, free):
        assert r.token_ids == f.token_ids and r.finish_reason == f.finish_reason


def test_stop_strings_and_length(setup):
    _, eng = setup
    base = generate(eng, [wf.GenerateRequest(prompt=PROMPTS[0], max_new_tokens=12)])[0]
    assert len(base.text) > 3
    stop = base.text[2:4]
    cut = generate(eng, [wf.GenerateRequest(prompt=PROMPTS[0], max_new_tokens=12, stop=[stop])])[0]
    assert cut.finish_reason == "stop" and cut.text == base.text[:base.text.find(stop)]
    one = generate(eng, [wf.GenerateRequest(prompt=PROMPTS[0], max_new_tokens=1)])[0]
    assert len(one.token_ids) <= 1 and one.finish_reason in ("stop", "length")


def test_messages_use_the_chat_template(setup):
    _, eng = setup
    msgs = [{"role": "user", "content": "Which river runs through London?"}]
    a = generate(eng, [wf.GenerateRequest(messages=msgs, max_new_tokens=5)])[0]
    ids = eng.tok.chat(msgs, "test")
    b = generate(eng, [wf.GenerateRequest(prompt=ids, max_new_tokens=5)])[0]
    assert a.token_ids == b.token_ids


def test_clear_errors(setup):
    _, eng = setup
    long = [5] * (eng.max_seq_len - 3)
    with pytest.raises(ValueError, match=r"GenerateRequest #1: prompt \(\d+ tokens\) \+ max_new_tokens \(10\) "
                                         r"= \d+ exceeds the maximum sequence length"):
        generate(eng, [wf.GenerateRequest(prompt="hi", max_new_tokens=2),
                       wf.GenerateRequest(prompt=long, max_new_tokens=10)])
    with pytest.raises(ValueError, match=r"GenerateRequest #0: .* needs \d+ KV blocks of 4 tokens, but the cache has only 2"):
        generate(eng, [wf.GenerateRequest(prompt=PROMPTS[1], max_new_tokens=8)], block_size=4, kv_blocks=2)
    with pytest.raises(ValueError, match="block_size must be a power of two, got 12"):
        generate(eng, [wf.GenerateRequest(prompt="hi")], block_size=12)
    with pytest.raises(ValueError, match="cuda_graphs=True needs device cuda"):
        generate(eng, [wf.GenerateRequest(prompt="hi", max_new_tokens=2)], cuda_graphs=True)
    with pytest.raises(KeyError, match="unknown adapter 'nope'"):
        generate(eng, [wf.GenerateRequest(prompt="hi", adapter="nope")])
    with pytest.raises(ValueError, match=r"GenerateRequest #0: seed must be an int in \[0, 2\^64\)"):
        generate(eng, [wf.GenerateRequest(prompt="hi", seed=-1, temperature=1.0)])
    with pytest.raises(ValueError, match="prompt token ids must be a non-empty list"):
        generate(eng, [wf.GenerateRequest(prompt=[], max_new_tokens=2)])


def test_triton_sampler_in_the_loop_equals_cpp(llama4):
    reqs = sampled(llama4, 6)
    a = generate(llama4, reqs, sampler="cpp")
    b = generate(llama4, reqs, sampler="triton")
    assert [r.token_ids for r in a] == [r.token_ids for r in b]


def test_triton_backend_equals_torch_backend(tiny, llama4):
    # prefill (varlen kernel), paged decode kernel, segmented LoRA and the Triton sampler, all
    # through the interpreter: same tokens as the torch backend with the C++ sampler
    paths = tiny("llama", 4)
    eng_t = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, backend="triton")
    reqs = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=4, temperature=t, seed=3)
            for p, a, t in [(PROMPTS[0], None, 0.0), (PROMPTS[1], "adapter_1", 0.9),
                            (PROMPTS[2], "adapter_3", 0.0), (PROMPTS[0], "adapter_1", 1.1)]]
    a = generate(eng_t, reqs, block_size=4, sampler="triton")
    b = generate(llama4, reqs, block_size=4)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]


def _run(eng, reqs, max_batch_size=64, **knobs):
    """The core of one generate() call, run to the end; core.results in request order."""
    core = open_core(eng, reqs, max_batch_size, **knobs)
    core.results = [None] * len(reqs)
    while core.has_unfinished():
        for out in core.step():
            if out.finished:
                core.results[out.request_id] = out.result
    core.close()
    return core


def test_mixed_steps_equal_one_big_batch(llama4):
    # at most 5 sequences at a time: every finish lets a waiting request in, prefilled in the same
    # forward as the running rows' decode; the tokens are those of one batch holding all of them
    reqs = sampled(llama4, 24)
    wide = _run(llama4, reqs, max_batch_size=64)
    narrow = _run(llama4, reqs, max_batch_size=5)
    assert narrow.steps["mixed"] > 5 and narrow.steps["mixed"] > wide.steps["mixed"]
    for a, b in zip(narrow.results, wide.results):
        assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason


def test_triton_backend_mixed_steps_equal_torch(tiny, llama4):
    paths = tiny("llama", 4)
    eng_t = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, backend="triton")
    reqs = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=n, temperature=t, seed=5)
            for p, a, n, t in [(PROMPTS[0], "adapter_2", 2, 0.0), (PROMPTS[1], None, 5, 0.9),
                               (PROMPTS[2], "adapter_2", 3, 0.0), (PROMPTS[3], "adapter_0", 3, 0.0)]]
    tri = _run(eng_t, reqs, max_batch_size=2, block_size=4, kv_blocks=32, sampler="triton")
    ref = _run(llama4, reqs, max_batch_size=64, block_size=4)
    assert tri.steps["mixed"] > 0
    assert [r.token_ids for r in tri.results] == [r.token_ids for r in ref.results]


def test_generate_stats_describe_the_last_call(llama4):
    reqs = sampled(llama4, 24)
    res = generate(llama4, reqs, max_batch_size=12, block_size=4, kv_blocks=14)
    st = llama4.generate_stats
    assert st.requests == 24 and st.tokens == sum(len(r.token_ids) for r in res)
    assert st.preemptions > 0 and st.kv_blocks == 14 and st.cuda_graph_buckets == []
    assert set(st.steps) <= {"prefill", "decode", "mixed"} and st.steps["decode"] > 0
    assert "preemptions" in st.summary() and f"{st.tokens} tokens for 24 requests" in st.summary()
    generate(llama4, [])
    assert llama4.generate_stats is None  # never a stale report



def test_batch_occupancy_counts_each_sequence_once_per_step(llama4):
    # without preemption a sequence sits in exactly one step per token it generates (its prefill
    # step draws the first), so the rows summed over steps equal the tokens generated
    reqs = sampled(llama4, 24)
    res = generate(llama4, reqs, max_batch_size=12)
    st = llama4.generate_stats
    assert st.preemptions == 0
    assert st.batch_rows == sum(len(r.token_ids) for r in res) == st.tokens
    steps = sum(st.steps.values())
    assert st.occupancy == pytest.approx(st.tokens / (steps * 12)) and 0 < st.occupancy <= 1
    assert f"batch occupancy {st.occupancy:.0%} of 12" in st.summary()
