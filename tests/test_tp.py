"""Tensor parallelism inside the engine, on CPU with gloo, through the public API only:
`Engine.from_pretrained(..., tensor_parallel=N)` starts N-1 worker processes and drives them each
step, and its scores, tokens and log-probs equal one process's (fp32, 1e-5 relative) for tiny
llama, mistral and qwen2 with mixed adapters (B non-zero): score and generate calls, randomised
add/step/abort interleavings of the core (every KV block back after each case), a pool small
enough to preempt, live adapter loads, the Triton backend and bf16.

TP=4 needs 4 kv heads per layer (kv heads are split, never replicated), so its model is built
with num_kv_heads=4; TP=2 uses the default tiny models (4 heads, 2 kv heads: one GQA group per
rank). Worker start-up (a Python process importing torch) dominates the time on a small machine,
so each engine is started once per module.
"""
import random
from collections import Counter

import pytest

import warmfast as wf
from test_core import alone, pool_of_requests, run_case
from warmfast.engine.core import CoreConfig, EngineCore
from warmfast.model import parallel

ARCHS = ["llama", "mistral", "qwen2"]
TEXTS = [
    ("The capital of France is", " Paris, the city of light."),
    ("I feel sad today. Which river runs through London?", " The Thames."),
    ("Explain the difference between a poem and a story", " A poem has lines; a story has a plot."),
]
PROMPTS = ["The capital of France is", "Why is the sky blue? Explain", "My friend, 21, has a fever and"]


def score_requests(adapter_names: list[str], vocab: int) -> list[wf.ScoreRequest]:
    arms = [None, *adapter_names]
    reqs = [wf.ScoreRequest(c, x, arm) for c, x in TEXTS for arm in arms]
    rng = random.Random(3)
    for arm in ("base", *adapter_names):  # token ids over the whole vocabulary: every vocab shard
        reqs.append(wf.ScoreRequest([rng.randrange(7, vocab) for _ in range(rng.randint(2, 20))],
                                    [rng.randrange(0, vocab) for _ in range(rng.randint(1, 8))], arm))
    rng.shuffle(reqs)  # adapters interleaved: the engine regroups them
    return reqs


def gen_requests(adapter_names: list[str], n_prompts: int) -> list[wf.GenerateRequest]:
    arms = [None, *adapter_names]
    greedy = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=8, logprobs=2) for p in PROMPTS[:n_prompts]
              for a in arms]
    sampled = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=6, temperature=0.9, seed=5)
               for p in PROMPTS[:n_prompts - 1] for a in arms]
    return greedy + sampled


def results(eng, budget: int = 64, n_prompts: int = 3) -> dict:
    """An engine's scores and generations. budget: scoring tokens per batch (small: many batches,
    rows longer than the budget alone)."""
    scores = eng.score(score_requests(eng.adapter_names, eng.model.cfg.vocab_size), max_batch_tokens=budget)
    gens = eng.generate(gen_requests(eng.adapter_names, n_prompts))
    return {"logprob": [r.logprob for r in scores], "token_logprobs": [r.token_logprobs for r in scores],
            "is_greedy": [r.is_greedy for r in scores], "tokens": [g.token_ids for g in gens],
            "text": [g.text for g in gens],
            "gen_logprobs": [[(t.token_id, t.logprob, t.top) for t in g.logprobs or []] for g in gens]}


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def assert_same(got: dict, ref: dict, where) -> None:
    for i, (a, b) in enumerate(zip(got["logprob"], ref["logprob"], strict=True)):
        assert rel(a, b) < 1e-5, (where, i, a, b)
    for ta, tb in zip(got["token_logprobs"], ref["token_logprobs"]):
        assert all(abs(x - y) <= 1e-5 * max(1.0, abs(y)) for x, y in zip(ta, tb, strict=True)), where
    assert got["is_greedy"] == ref["is_greedy"], where
    assert got["tokens"] == ref["tokens"] and got["text"] == ref["text"], where
    for la, lb in zip(got["gen_logprobs"], ref["gen_logprobs"], strict=True):
        for (ta, a, topa), (tb, b, topb) in zip(la, lb, strict=True):
            assert ta == tb and abs(a - b) <= 1e-5 * max(1.0, abs(b)), where
            assert [t for t, _ in topa] == [t for t, _ in topb], where
    # the test can fail: adapters change the scores, some tokens are greedy, some not
    assert len({round(x, 4) for x in ref["logprob"]}) > len(ref["logprob"]) // 2


def assert_sliced(eng, ref_eng, n: int) -> None:
    """Rank 0 really holds 1/n of the heads, the q|k|v rows and the vocab rows."""
    c, rc = eng.model.cfg, ref_eng.model.cfg
    assert (c.num_heads, c.num_kv_heads) == (rc.num_heads // n, rc.num_kv_heads // n)
    assert eng.model.weights.layers[0].qkv.shape[0] * n == ref_eng.model.weights.layers[0].qkv.shape[0]
    assert abs(eng.model.weights.embed.shape[0] - ref_eng.model.weights.embed.shape[0] / n) < 1


def load(paths, n: int = 1, **kw):
    return wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, tensor_parallel=n, **kw)


# One tensor-parallel engine per process at a time (its ranks are this process's one
# torch.distributed group): the tests that open their own come first, each closing it; the shared
# 2-rank llama (module fixture, closed at the module's end) serves the tests after them.

@pytest.mark.parametrize("arch", ["mistral", "qwen2"])
def test_tp2_equals_one_process(tiny, arch):
    paths = tiny(arch, 3)
    one = load(paths)
    with load(paths, 2) as two:
        assert_same(results(two), results(one), arch)
        assert_sliced(two, one, 2)


def test_tp4_equals_one_process(tiny):
    paths = tiny("llama", 3, num_kv_heads=4)
    one = load(paths)
    with load(paths, 4) as four:
        assert_same(results(four, budget=256, n_prompts=2), results(one, budget=256, n_prompts=2), "tp4")
        assert_sliced(four, one, 4)


def test_tp2_live_adapters_equal_loaded_at_start(tiny):
    """load_adapter / unload_adapter on a 2-rank engine: the workers load their slice too; scores and
    tokens equal one process that had the adapters from the start."""
    paths = tiny("llama", 3)
    one = load(paths)
    names = list(paths.adapters)
    with wf.Engine.from_pretrained(paths.model_dir, tensor_parallel=2, max_adapters=2) as two:
        two.load_adapter(names[0], paths.adapters[names[0]])
        two.load_adapter(names[2], paths.adapters[names[2]])
        two.unload_adapter(names[0])  # slot 0 is free again: the next load takes it
        two.load_adapter(names[1], paths.adapters[names[1]])
        arms = [None, names[1], names[2]]
        score = [wf.ScoreRequest(c, x, a) for c, x in TEXTS for a in arms]
        gen = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=6) for p in PROMPTS for a in arms]
        got, ref = two.score(score), one.score(score)
        assert all(rel(a.logprob, b.logprob) < 1e-5 for a, b in zip(got, ref))
        assert [g.token_ids for g in two.generate(gen)] == [g.token_ids for g in one.generate(gen)]
        assert len({round(r.logprob, 4) for r in ref}) == len(ref)  # the adapters differ


def test_tp2_triton_backend_equals_one_process(tiny):
    # the GPU path (Triton kernels, here through the interpreter) on sliced weights and LoRA stacks
    paths = tiny("mistral", 3)  # head_dim != hidden / heads
    one = load(paths)  # torch backend, one process
    with load(paths, 2, backend="triton") as two:
        assert two.backend == "triton"
        assert_same(results(two, n_prompts=1), results(one, n_prompts=1), "triton")


def test_tp2_bfloat16_close_to_one_process(tiny):
    # bf16 weights and activations, partial sums all-reduced over gloo in bf16: close to one bf16
    # process to bf16 rounding (the split changes the summation order of every row-parallel GEMM)
    paths = tiny("llama", 3)
    one = load(paths, dtype="bfloat16")
    with load(paths, 2, dtype="bfloat16") as two:
        got, ref = results(two, n_prompts=2), results(one, n_prompts=2)
    for a, b in zip(got["logprob"], ref["logprob"]):
        assert rel(a, b) < 2e-2, (a, b)
    assert [t[:1] for t in got["tokens"]] == [t[:1] for t in ref["tokens"]]
    fp32 = results(load(paths), n_prompts=2)  # bf16 really is another precision
    assert any(rel(a, b) > 1e-6 for a, b in zip(ref["logprob"], fp32["logprob"]))


def test_vocab_ranges_cover_the_vocabulary():
    for vocab in (5, 512, 1001, 151_936):
        for n in (1, 2, 3, 4, 8):
            if vocab < n:
                continue
            parts = [parallel.vocab_range(vocab, n, r) for r in range(n)]
            assert parts[0][0] == 0 and parts[-1][1] == vocab
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


@pytest.fixture(scope="module")
def llama2(tiny):
    """(one-process engine, 2-rank engine) of the tiny llama with 3 adapters."""
    paths = tiny("llama", 3)
    one, two = load(paths), load(paths, 2)
    yield one, two
    two.close()


def test_tp2_llama_equals_one_process(llama2):
    one, two = llama2
    assert_same(results(two), results(one), "llama")
    assert_sliced(two, one, 2)


def test_tp2_random_interleavings_equal_each_request_alone(llama2):
    """test_core's randomised add/step/abort cases on the 2-rank engine, against each request run
    alone on one process: greedy and sampled tokens equal, scores and log-probs (top-k too, and
    prompt log-probs) within tolerance, every KV block back after each case."""
    one, two = llama2
    reqs = pool_of_requests(one, random.Random(1234))
    refs = [alone(one, r) for r in reqs]
    seen = Counter()
    for seed in range(40):
        run_case(two, reqs, refs, seed, seen)
    assert seen["preemptions"] >= 3 and seen["aborts"] >= 10 and seen["mixed steps"] >= 10, seen
    assert seen["score+generate steps"] >= 10, seen


def test_tp2_preempting_pool_and_stream_equal_one_process(llama2):
    one, two = llama2
    arms = [None, *one.adapter_names]
    modes = [dict(), dict(temperature=0.9, top_p=0.9), dict(temperature=1.1, top_k=12, min_p=0.02)]
    reqs = [wf.GenerateRequest(prompt=p, adapter=arms[(i + j) % len(arms)], max_new_tokens=7, seed=i,
                               **modes[(i + j) % 3]) for i, p in enumerate(PROMPTS) for j in range(4)]
    got = {}
    for eng in (one, two):
        core = EngineCore(eng, CoreConfig(max_batch_size=8, block_size=4, kv_blocks=10))
        res = [None] * len(reqs)
        for i, r in enumerate(reqs):
            core.add_request(r, request_id=i)
        while core.has_unfinished():
            for out in core.step():
                if out.finished:
                    res[out.request_id] = out.result.token_ids
        assert core.sched.num_preemptions > 0
        core.close()
        streamed = {}
        for out in eng.stream(reqs[:5]):
            streamed.setdefault(out.request_id, []).extend(out.token_ids)
        got[eng.tp is None] = (res, [streamed[i] for i in range(5)])
    assert got[False] == got[True]
    assert got[True][1] == got[True][0][:5]
