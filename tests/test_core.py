"""The step-driven engine core: randomised interleavings of add_request / step / abort, with score
rows and generations of several adapters (LoRA B non-zero) in the same steps, give every request
what it gives alone (greedy and sampled tokens equal: the Philox contract keys sampling by seed,
sampling key and step; scores and log-probs within fp32 tolerance), and every KV block comes back
(pool checked after each case, scheduler invariants after every action)."""
import random
from collections import Counter

import pytest
import torch

import warmfast as wf
from warmfast.engine.core import CoreConfig, EngineCore
from warmfast.engine.kv_cache import blocks_for
from warmfast.engine.prepare import prompt_ids

N_CASES = 200
PROMPTS = ["The capital of France is", "Why is the sky blue?", "café naïve 1 2 3", "Once upon a time",
           "I feel sad today.", "Explain a poem"]


@pytest.fixture(scope="module")
def eng(tiny):
    paths = tiny("llama", 3)
    return wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, device="cpu", dtype="float32")


def pool_of_requests(eng, rng: random.Random) -> list:
    """Generations (greedy and sampled, logprobs and stop strings sometimes) and score rows (shared
    contexts, so rows ride on each other's fed rows), over the base and every adapter."""
    arms = [None, *eng.adapter_names]
    reqs = []
    for i in range(28):
        prompt = PROMPTS[i % len(PROMPTS)] if i % 3 else [rng.randrange(3, 500) for _ in range(rng.randint(1, 9))]
        mode = [dict(), dict(temperature=0.9), dict(temperature=1.1, top_k=20), dict(temperature=0.8, top_p=0.9),
                dict(temperature=1.0, min_p=0.05)][i % 5]
        reqs.append(wf.GenerateRequest(prompt=prompt, adapter=arms[i % len(arms)], max_new_tokens=rng.randint(1, 12),
                                       seed=i % 4, logprobs=[None, 0, 3][i % 3], prompt_logprobs=i % 4 == 1,
                                       stop=["e"] if i % 7 == 6 else [], **mode))
    for i in range(28):  # each (context, adapter) pair with several continuations, prefixes of each other
        ctx = PROMPTS[i % 2]
        cont = [" yes", " no", " yes it is", " maybe", [7, 8, 9]][(i // 2) % 5]
        reqs.append(wf.ScoreRequest(ctx, cont, arms[(i // 10) % len(arms)]))
    return reqs


def alone(eng, req):
    if isinstance(req, wf.ScoreRequest):
        return eng.score([req])[0]
    return eng.generate([req])[0]


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-4 * max(1.0, abs(b))


def check_same(req, got, ref, where):
    if isinstance(req, wf.ScoreRequest):
        assert got.num_tokens == ref.num_tokens and got.is_greedy == ref.is_greedy, where
        assert close(got.logprob, ref.logprob), (where, got.logprob, ref.logprob)
        assert all(close(x, y) for x, y in zip(got.token_logprobs, ref.token_logprobs)), where
        return
    assert got.token_ids == ref.token_ids and got.finish_reason == ref.finish_reason, where
    assert got.text == ref.text, where
    if req.logprobs is None:
        assert got.logprobs is None, where
    else:
        assert len(got.logprobs) == len(got.token_ids), where
        for a, b in zip(got.logprobs, ref.logprobs):
            assert a.token_id == b.token_id and close(a.logprob, b.logprob), where
            assert len(a.top) == req.logprobs and all(close(x[1], y[1]) for x, y in zip(a.top, b.top)), where
    if req.prompt_logprobs:
        assert len(got.prompt_logprobs) == len(ref.prompt_logprobs), where
        assert all(close(x, y) for x, y in zip(got.prompt_logprobs, ref.prompt_logprobs)), where


def run_case(eng, reqs, refs, seed: int, seen) -> None:
    rng = random.Random(seed)
    picked = rng.sample(range(len(reqs)), rng.randint(2, 9))
    cfg = CoreConfig(max_batch_size=rng.choice([1, 2, 3, 8]), max_batch_tokens=rng.choice([16, 64, 512]),
                     block_size=rng.choice([1, 1, 2, 4, 8]), stream=rng.random() < 0.5)
    gens = [reqs[k] for k in picked if isinstance(reqs[k], wf.GenerateRequest)]
    need = max([blocks_for(len(prompt_ids(eng, r, "")) + r.max_new_tokens - 1, cfg.block_size) for r in gens],
               default=1)
    cfg.kv_blocks = rng.choice([None, need, need + need // 2])
    if rng.random() < 0.4:  # tight: one-token blocks, room for the longest generation: the others preempt
        cfg.block_size, cfg.max_batch_size = 1, 8
        cfg.kv_blocks = max([len(prompt_ids(eng, r, "")) + r.max_new_tokens - 1 for r in gens], default=1) \
            + rng.randint(0, 2)
    core = EngineCore(eng, cfg)
    ids, streamed, finished, aborted = {}, {}, {}, set()
    todo = list(picked)
    while todo or core.has_unfinished():
        action = rng.random()
        if todo and (action < 0.3 or not core.has_unfinished()):
            k = todo.pop(0)
            ids[core.add_request(reqs[k])] = k
        elif action < 0.34 and ids:
            rid = rng.choice(list(ids))
            if rid not in finished and rid not in aborted:
                assert core.abort(rid), (seed, rid)
                aborted.add(rid)
            else:
                assert not core.abort(rid)
        else:
            outs = core.step()
            seen["score+generate steps"] += any(isinstance(reqs[ids[o.request_id]], wf.ScoreRequest) for o in outs) \
                and any(isinstance(reqs[ids[o.request_id]], wf.GenerateRequest) for o in outs)
            for out in outs:
                assert out.request_id not in aborted and out.request_id not in finished, (seed, out)
                s = streamed.setdefault(out.request_id, ([], [], []))
                s[0].extend(out.token_ids)
                s[1].append(out.text)
                s[2].extend(out.logprobs or [])
                if out.finished:
                    finished[out.request_id] = out.result
        core.sched.check()
    core.close()
    seen["preemptions"] += core.sched.num_preemptions
    seen["mixed steps"] += core.steps["mixed"]
    seen["aborts"] += len(aborted)
    seen["finished"] += len(finished)
    assert core.sched.blocks.num_free == core.num_blocks, seed  # every KV block came back
    assert not core.sched.blocks.tables and core.num_unfinished == 0, seed
    assert set(finished) | aborted == set(ids) and not set(finished) & aborted, seed
    for rid, res in finished.items():
        k = ids[rid]
        check_same(reqs[k], res, refs[k], (seed, k))
        if isinstance(reqs[k], wf.GenerateRequest):  # the outputs add up to the result
            toks, texts, lps = streamed[rid]
            assert toks == res.token_ids, (seed, k)
            assert lps == (res.logprobs or []), (seed, k)
            if cfg.stream:
                assert "".join(texts) == res.text, (seed, k, texts, res.text)


def test_random_interleavings_equal_each_request_alone(eng):
    rng = random.Random(1234)
    reqs = pool_of_requests(eng, rng)
    refs = [alone(eng, r) for r in reqs]
    assert len({tuple(r.token_ids) for r in refs if isinstance(r, wf.GenerateResult)}) > 10
    # the adapters really differ (B non-zero): one score row under two adapters
    a, b = eng.score([wf.ScoreRequest(PROMPTS[0], " yes", None), wf.ScoreRequest(PROMPTS[0], " yes", "adapter_0")])
    assert abs(a.logprob - b.logprob) > 1e-4
    seen = Counter()
    for seed in range(N_CASES):
        run_case(eng, reqs, refs, seed, seen)
    # the cases reach what they are meant to test
    assert seen["preemptions"] >= 15 and seen["aborts"] >= 50, seen
    assert seen["mixed steps"] >= 50 and seen["score+generate steps"] >= 50, seen


def test_generated_logprobs_equal_hf_log_softmax(tiny, eng):
    from hf_reference import HFReference

    paths = tiny("llama", 3)
    hf = HFReference(paths)
    for adapter, temp in [(None, 0.0), ("adapter_1", 0.9), ("adapter_2", 0.0)]:
        req = wf.GenerateRequest(prompt=PROMPTS[1], adapter=adapter, max_new_tokens=6, temperature=temp, seed=3,
                                 logprobs=4, prompt_logprobs=True)
        res = eng.generate([req])[0]
        prompt = list(eng.tok.encode_context(req.prompt))
        ids = torch.tensor([prompt + res.token_ids])
        logits = hf._run(adapter, lambda: hf.model(ids).logits[0])
        lp = torch.log_softmax(logits.float(), -1)  # [T, V]
        for j, t in enumerate(res.logprobs):
            row = lp[len(prompt) - 1 + j]
            assert t.token_id == res.token_ids[j]
            assert abs(t.logprob - row[t.token_id].item()) < 1e-4
            vals, top = row.topk(4)
            assert [i for i, _ in t.top] == top.tolist()
            assert all(abs(v - w) < 1e-4 for (_, v), w in zip(t.top, vals.tolist()))
        want = [lp[p, prompt[p + 1]].item() for p in range(len(prompt) - 1)]
        assert len(res.prompt_logprobs) == len(want)
        assert all(abs(a - b) < 1e-4 for a, b in zip(res.prompt_logprobs, want))


def test_one_step_mixes_score_rows_prefills_and_decodes(eng):
    with eng.core(max_batch_size=8) as core:
        g = core.add_request(wf.GenerateRequest(prompt=PROMPTS[0], adapter="adapter_0", max_new_tokens=4))
        core.step()  # prefill: g now decodes
        s1 = core.add_request(wf.ScoreRequest(PROMPTS[1], " yes", "adapter_1"))
        s2 = core.add_request(wf.ScoreRequest(PROMPTS[1], " yes it is", "adapter_1"))  # rides on s1's row
        g2 = core.add_request(wf.GenerateRequest(prompt=PROMPTS[2], adapter=None, max_new_tokens=2))
        assert len(core.sched.waiting) == 2  # s2 joined s1's fed row
        outs = {o.request_id: o for o in core.step()}
        assert core.steps["mixed"] == 1 and core.batch_rows == 1 + 3  # g, the fed row, g2
        assert set(outs) == {g, s1, s2, g2} and outs[s1].finished and outs[s2].finished
        assert outs[s1].result.logprob == pytest.approx(eng.score([wf.ScoreRequest(PROMPTS[1], " yes", "adapter_1")])[0].logprob, rel=1e-5)
        assert outs[s2].result.token_logprobs[0] == pytest.approx(outs[s1].result.token_logprobs[0], rel=1e-6)
        while core.has_unfinished():
            core.step()
        assert core.sched.blocks.num_free == core.num_blocks


def test_stream_deltas_add_up_and_never_split_a_character(eng):
    reqs = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=12, temperature=1.0, seed=i, logprobs=1)
            for i, (p, a) in enumerate([(PROMPTS[2], None), (PROMPTS[0], "adapter_2"), (PROMPTS[4], "adapter_0")])]
    want = eng.generate(reqs)
    parts = {i: [] for i in range(len(reqs))}
    done = {}
    for out in eng.stream(reqs, max_batch_size=2):
        parts[out.request_id].append(out)
        if out.finished:
            done[out.request_id] = out.result
    for i, w in enumerate(want):
        assert done[i].token_ids == w.token_ids and done[i].text == w.text
        assert "".join(o.text for o in parts[i]) == w.text
        assert [t for o in parts[i] for t in o.token_ids] == w.token_ids
        for o in parts[i][:-1]:  # a delta never ends inside a multi-byte character
            assert not o.text.endswith("\ufffd") or eng.tok.decode(w.token_ids).count("\ufffd")


def test_add_request_errors_name_the_request(eng):
    with eng.core() as core:
        with pytest.raises(ValueError, match=r"GenerateRequest #5: .*exceeds the maximum sequence length"):
            core.add_request(wf.GenerateRequest(prompt=[5] * eng.max_seq_len, max_new_tokens=4), request_id=5)
        with pytest.raises(KeyError, match="ScoreRequest #0: unknown adapter 'nope'"):
            core.add_request(wf.ScoreRequest("a", " b", "nope"))
        rid = core.add_request(wf.ScoreRequest("a", " b"))
        with pytest.raises(ValueError, match=f"request_id must be an int >= 0 that is not in use, got {rid}"):
            core.add_request(wf.ScoreRequest("a", " c"), request_id=rid)
        with pytest.raises(ValueError, match=r"logprobs must be None \(off\) or an int in \[0, 20\]"):
            core.add_request(wf.GenerateRequest(prompt="a", logprobs=50))
        assert core.abort(rid) and not core.abort(rid) and not core.has_unfinished()
