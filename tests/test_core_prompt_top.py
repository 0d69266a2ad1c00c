"""The two result fields the server's echo needs (engine/core.py): GenerateResult.prompt_top (the
prompt tokens' top-k from the same log_softmax as the chosen token's log-prob) and stop_token (the
EOS that ended a generation, with its log-prob). Tiny Llama + adapters with non-zero LoRA B."""
import torch

import warmfast as wf


def test_prompt_top_matches_prompt_logprobs_and_hf_log_softmax(tiny):
    import transformers as tf

    p = tiny("llama", n_adapters=3)
    eng = wf.Engine.from_pretrained(p.model_dir)
    ids = list(eng.tok.encode_context("the small cat walks home at night"))
    res = eng.generate([wf.GenerateRequest(prompt=ids, max_new_tokens=1, prompt_logprobs=True, logprobs=3)])[0]
    assert len(res.prompt_top) == len(ids) - 1 == len(res.prompt_logprobs)
    hf = tf.AutoModelForCausalLM.from_pretrained(p.model_dir, dtype=torch.float32)
    with torch.no_grad():
        lp = torch.log_softmax(hf(torch.tensor([ids])).logits[0, :-1].float(), dim=-1)  # [n-1, V]
    for i, tl in enumerate(res.prompt_top):
        assert tl.token_id == ids[i + 1]
        assert abs(tl.logprob - res.prompt_logprobs[i]) < 1e-5
        assert abs(tl.logprob - lp[i, ids[i + 1]].item()) < 1e-4
        top_ids = [t for t, _ in tl.top]
        assert top_ids == lp[i].topk(3).indices.tolist()
        if top_ids[0] == tl.token_id:  # a greedy token: its log-prob is its top entry, exactly
            assert tl.top[0][1] == tl.logprob


def test_stop_token_is_the_eos_that_ended_the_generation(tiny):
    p = tiny("llama", n_adapters=3)
    eng = wf.Engine.from_pretrained(p.model_dir, adapters={"a": p.adapters["adapter_1"]})
    reqs = [wf.GenerateRequest(prompt=f"tale {i}", adapter="a" if i % 2 else None, max_new_tokens=120,
                               temperature=1.0, seed=i, logprobs=2) for i in range(24)]
    results = eng.generate(reqs)
    stopped = [r for r in results if r.finish_reason == "stop"]
    assert stopped, "no generation met EOS: raise the count or max_new_tokens"
    for r in results:
        assert len(r.logprobs) == len(r.token_ids)
        if r.finish_reason == "stop":
            assert r.stop_token.token_id in eng.tok.eos_ids and r.stop_token.logprob <= 0.0
            assert r.stop_token.token_id not in r.token_ids[-1:]
        else:
            assert r.stop_token is None
    no_lp = eng.generate([wf.GenerateRequest(prompt=r.prompt, adapter=r.adapter, max_new_tokens=120,
                                             temperature=1.0, seed=r.seed) for r in reqs[:4]])
    assert all(r.stop_token is None for r in no_lp)  # only with logprobs asked
