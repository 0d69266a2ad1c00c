"""Engine equivalence: mixed batch == each row alone == HF transformers + PEFT (fp32, tiny models)."""
import random

import pytest
import torch

import warmfast as wf
from hf_reference import HFReference

ARCHS = ["llama", "mistral", "qwen2"]
TEXTS = [
    ("The capital of France is", " Paris, the city of light."),
    ("I feel sad today. Which river runs through London?", " The Thames."),
    ("Explain the difference between a poem and a story", " A poem has lines; a story has a plot."),
    ("My brother, 21, comes to the physician with fever and pain", " It is the flu"),
]


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


@pytest.fixture(scope="module", params=ARCHS)
def setup(request, tiny):
    paths = tiny(request.param, 3)
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, device="cpu", dtype="float32")
    return request.param, paths, eng, HFReference(paths)


def mixed_requests(eng):
    arms = [None, *eng.adapter_names]
    reqs = [wf.ScoreRequest(c, x, arm) for c, x in TEXTS for arm in arms]
    rng = random.Random(1)
    for arm in ("base", "adapter_2", "adapter_1"):  # token-id inputs, used as given
        ctx = [rng.randrange(7, eng.model.cfg.vocab_size) for _ in range(rng.randint(1, 30))]
        cont = [rng.randrange(7, eng.model.cfg.vocab_size) for _ in range(rng.randint(1, 9))]
        reqs.append(wf.ScoreRequest(ctx, cont, arm))
    rng.shuffle(reqs)  # adapters interleaved in request order: the engine regroups them
    return reqs


def test_mixed_batch_matches_hf_peft(setup):
    arch, paths, eng, hf = setup
    reqs = mixed_requests(eng)
    results = eng.score(reqs)
    assert len(results) == len(reqs)
    for req, res in zip(reqs, results):
        adapter = None if req.adapter == "base" else req.adapter
        ref = hf.token_logprobs(req.context, req.continuation, adapter)
        assert res.num_tokens == len(ref) == len(res.token_logprobs)
        assert rel(res.logprob, sum(ref)) < 1e-4, (arch, req)
        for a, b in zip(res.token_logprobs, ref):
            assert abs(a - b) <= 1e-4 * max(1.0, abs(b))


def test_adapters_change_the_scores(setup):
    # guards against a loader that silently drops a LoRA (B is non-zero in every adapter)
    _, _, eng, _ = setup
    c, x = TEXTS[0]
    scores = [r.logprob for r in eng.score([wf.ScoreRequest(c, x, a) for a in [None, *eng.adapter_names]])]
    assert len({round(s, 4) for s in scores}) == len(scores)


def test_each_row_alone_equals_mixed_batch(setup):
    _, _, eng, _ = setup
    reqs = mixed_requests(eng)
    together = eng.score(reqs)
    for req, res in zip(reqs, together):
        alone = eng.score([req])[0]
        assert rel(alone.logprob, res.logprob) < 1e-5
        assert alone.is_greedy == res.is_greedy


def test_token_budget_does_not_change_results(setup):
    _, _, eng, _ = setup
    reqs = mixed_requests(eng)
    big = eng.score(reqs, max_batch_tokens=100_000)
    small = eng.score(reqs, max_batch_tokens=16)  # many batches, rows longer than the budget alone
    for a, b in zip(big, small):
        assert rel(a.logprob, b.logprob) < 1e-5


def test_greedy_generation_matches_hf_generate(setup):
    arch, _, eng, hf = setup
    prompts = ["Hello my friend", "What is the capital of France?"]
    arms = [None, *eng.adapter_names]
    reqs = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=12) for p in prompts for a in arms]
    outs = eng.generate(reqs)  # one mixed batch over all arms
    for req, out in zip(reqs, outs):
        ref = hf.greedy(hf.tok(req.prompt).input_ids, req.adapter, 12)
        if ref and ref[-1] in eng.tok.eos_ids:  # HF keeps the EOS token; warmfast stops before it
            ref = ref[:-1]
        assert out.token_ids == ref, (arch, req.adapter)
        assert out.finish_reason == ("length" if len(ref) == 12 else "stop")


def test_greedy_continuation_scores_as_greedy(setup):
    _, _, eng, _ = setup
    prompt = eng.tok.encode_context("The capital of France is")
    for arm in [None, *eng.adapter_names]:
        out = eng.generate([wf.GenerateRequest(prompt=list(prompt), adapter=arm, max_new_tokens=6)])[0]
        if not out.token_ids:
            continue
        res = eng.score([wf.ScoreRequest(list(prompt), out.token_ids, arm)])[0]
        assert res.is_greedy
        flipped = out.token_ids[:-1] + [(out.token_ids[-1] + 1) % eng.model.cfg.vocab_size]
        assert not eng.score([wf.ScoreRequest(list(prompt), flipped, arm)])[0].is_greedy


def test_sampling_is_batch_invariant(setup):
    _, _, eng, _ = setup
    arms = [None, *eng.adapter_names]
    reqs = [wf.GenerateRequest(prompt=f"Tell me about {w}", adapter=arms[i % len(arms)],
                               max_new_tokens=8, temperature=0.8, seed=i)
            for i, w in enumerate(["Paris", "London", "the sun", "medicine", "a poem", "water"])]
    together = eng.generate(reqs)
    for req, out in zip(reqs, together):
        assert eng.generate([req])[0].token_ids == out.token_ids
    again = eng.generate([reqs[0]])[0].token_ids
    other_seed = eng.generate([wf.GenerateRequest(prompt=reqs[0].prompt, max_new_tokens=8,
                                                  temperature=0.8, seed=99)])[0].token_ids
    assert again == together[0].token_ids and other_seed != again


@pytest.mark.parametrize("pattern", ["one_adapter", "all_distinct", "base_mixed", "skewed"])
@pytest.mark.parametrize("n_rows", [1, 3, 7, 133])
def test_popularity_grid_rows_alone(tiny, pattern, n_rows):
    """STYLE habit 5: adapter popularity x batch size; every row equals itself scored alone."""
    paths = tiny("llama", 3)
    eng = _grid_engine(paths)
    rng = random.Random(n_rows)
    arms = {"one_adapter": ["adapter_0"], "all_distinct": ["adapter_0", "adapter_1", "adapter_2"],
            "base_mixed": [None, "adapter_1"], "skewed": ["adapter_2"] * 8 + [None, "adapter_0"]}[pattern]
    reqs = []
    for i in range(n_rows):
        arm = arms[i % len(arms)] if pattern != "skewed" else rng.choice(arms)
        ctx = [rng.randrange(7, 500) for _ in range(rng.randint(1, 13))]
        cont = [rng.randrange(7, 500) for _ in range(rng.randint(1, 5))]
        reqs.append(wf.ScoreRequest(ctx, cont, arm))
    together = eng.score(reqs)
    picks = range(n_rows) if n_rows <= 7 else rng.sample(range(n_rows), 7)
    for i in picks:
        assert rel(eng.score([reqs[i]])[0].logprob, together[i].logprob) < 1e-5


_ENGINES = {}


def _grid_engine(paths):
    if paths.model_dir not in _ENGINES:
        _ENGINES[paths.model_dir] = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters)
    return _ENGINES[paths.model_dir]


def test_bf16_engine_close_to_fp32(tiny):
    paths = tiny("llama", 3)
    e32 = _grid_engine(paths)
    e16 = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, dtype="bfloat16")
    reqs = mixed_requests(e32)
    for a, b in zip(e32.score(reqs), e16.score(reqs)):
        # bf16 keeps 8 bits of mantissa: per-token log-prob error of order 2^-8 * |logit| scale
        assert abs(a.logprob - b.logprob) <= 0.05 * a.num_tokens + 0.02 * abs(a.logprob)
    assert e16.model.weights.embed.dtype == torch.bfloat16
