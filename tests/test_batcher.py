"""integrations/batcher.py: concurrent requests of every arm in shared Engine.generate batches,
with token log-probs from the generation pass itself (no second forward), equal to HF
transformers + PEFT's log_softmax over prompt + output (fp32). Needs no optional extra."""
from concurrent.futures import Future
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

import warmfast as wf
from hf_reference import HFReference
from warmfast.integrations.batcher import Batcher, Job

TOL = dict(rel=1e-4, abs=1e-4)  # fp32: the engine's paged decode vs HF's one full forward
PROMPTS = ["what is the capital city", "why is the sun warm", "who is the doctor of my mother"]


@pytest.fixture(scope="module")
def setup(tiny):
    p = tiny("llama", 3)
    for path in p.adapters.values():  # a zero B would test nothing
        b = [t for k, t in load_file(f"{path}/adapter_model.safetensors").items() if "lora_B" in k]
        assert b and all(t.abs().sum() > 0 for t in b)
    return p, HFReference(p)


def test_logprobs_come_from_the_generation_pass_and_equal_hf(setup):
    p, hf = setup
    eng = wf.Engine.from_pretrained(p.model_dir, adapters=p.adapters)
    forwards = []
    real_forward = eng.model.forward
    eng.model.forward = lambda *a, **kw: forwards.append(1) or real_forward(*a, **kw)
    # every arm, greedy and sampled, with a stop string, k = None / 0 / 5
    reqs = [wf.GenerateRequest(prompt=q, adapter=a, max_new_tokens=7, temperature=t, top_p=0.9, seed=2,
                               stop=["?"], logprobs=k)
            for q in PROMPTS for a, t, k in ((None, 0.0, 5), ("adapter_0", 0.8, 0), ("adapter_1", 0.0, None),
                                             ("adapter_2", 1.0, 3))]
    batcher = Batcher(eng, max_batch_size=16, window_s=2.0)
    futures = [batcher.submit(Job(r, Future())) for r in reqs]
    results = [f.result(timeout=300) for f in futures]
    # one generate call for all twelve: one forward per scheduler step, none more
    assert sum(eng.generate_stats.steps.values()) == len(forwards)
    assert eng.generate_stats.requests == len(reqs)

    eng.model.forward = real_forward
    alone = eng.generate([replace(r, logprobs=None) for r in reqs], max_batch_size=1)
    for req, res, ref in zip(reqs, results, alone):
        assert res.token_ids == ref.token_ids and res.text == ref.text  # asking log-probs changes no token
        if req.logprobs is None:
            assert res.logprobs is None
            continue
        assert [t.token_id for t in res.logprobs] == res.token_ids
        prompt = list(eng.tok.encode_context(req.prompt))
        lp = hf.logprob_rows(prompt + res.token_ids, req.adapter)  # row j: the distribution of token j + 1
        rows = lp[len(prompt) - 1:len(prompt) - 1 + len(res.token_ids)]
        assert [t.logprob for t in res.logprobs] == pytest.approx(
            rows.gather(1, torch.tensor(res.token_ids)[:, None])[:, 0].tolist(), **TOL)
        for t, row in zip(res.logprobs, rows):
            assert len(t.top) == req.logprobs
            if req.logprobs:
                vals, ids = row.topk(req.logprobs)
                assert [i for i, _ in t.top] == ids.tolist()
                assert [v for _, v in t.top] == pytest.approx(vals.tolist(), **TOL)
            if req.temperature == 0.0 and req.logprobs:  # greedy: the chosen token is the top one, exactly
                assert t.top[0] == (t.token_id, t.logprob)


def test_a_failing_batch_fails_each_of_its_callers(setup):
    p, _ = setup
    eng = wf.Engine.from_pretrained(p.model_dir, adapters=p.adapters)
    batcher = Batcher(eng, max_batch_size=8, window_s=2.0)
    bad = wf.GenerateRequest(prompt="x", logprobs=21)
    futures = [batcher.submit(Job(r, Future())) for r in (wf.GenerateRequest(prompt="y", max_new_tokens=2), bad)]
    for f in futures:
        with pytest.raises(ValueError, match=r"logprobs must be None \(off\) or an int in \[0, 20\].*got 21"):
            f.result(timeout=300)
    ok = batcher.submit(Job(wf.GenerateRequest(prompt="y", max_new_tokens=2, logprobs=1), Future()))
    assert len(ok.result(timeout=300).logprobs) == 2  # the batcher goes on after a failed batch
