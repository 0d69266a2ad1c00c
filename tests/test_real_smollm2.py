"""A real checkpoint: SmolLM2-135M-Instruct (from its GGUF, converted) and 3 random PEFT adapters.

Marked `real`; the model is fetched once into a cache (tests/real_model.py). Without network they
skip with a one-line reason, except in CI (CI set), where that is a failure.
"""
import random

import pytest
import torch

import warmfast as wf
from hf_reference import HFReference
from real_model import real_paths_or_skip

pytestmark = pytest.mark.real
TEXTS = [
    ("The capital of France is", " Paris, the city of light."),
    ("I feel sad today. Which river runs through London?", " The Thames."),
    ("Question: what is 12 plus 30?\nAnswer:", " 42"),
]
CHATS = [[{"role": "user", "content": "What is the capital of France?"}],
         [{"role": "system", "content": "You are a kind doctor."},
          {"role": "user", "content": "My brother has a fever. What should he do?"}]]


@pytest.fixture(scope="module")
def real():
    paths = real_paths_or_skip()
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, device="cpu", dtype="float32")
    return paths, eng, HFReference(paths)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-4 * max(1.0, abs(b))


def test_mixed_batch_scores_match_hf_peft(real):
    _, eng, hf = real
    arms = [None, *eng.adapter_names]
    reqs = [wf.ScoreRequest(c, x, a) for c, x in TEXTS for a in arms]
    reqs += [wf.ScoreRequest(messages=CHATS[1], continuation=" Rest and fluids.", adapter=a) for a in arms]
    random.Random(0).shuffle(reqs)  # adapters interleaved: the engine regroups them in one batch
    results = eng.score(reqs)
    for req, res in zip(reqs, results):
        ctx = eng.tok.chat(req.messages, "test") if req.messages else req.context
        ref = hf.token_logprobs(ctx, req.continuation, req.adapter)
        assert res.num_tokens == len(ref)
        bad = [(a, b) for a, b in zip(res.token_logprobs, ref) if not close(a, b)]
        assert not bad, (req.adapter, req.continuation, bad[:3])
    base = [r.logprob for q, r in zip(reqs, results) if q.adapter is None]
    for name in eng.adapter_names:  # each adapter moves the scores (B is non-zero)
        other = [r.logprob for q, r in zip(reqs, results) if q.adapter == name]
        assert max(abs(a - b) for a, b in zip(base, other)) > 1e-3, name


def test_greedy_generation_matches_hf_generate(real):
    _, eng, hf = real
    arms = [None, *eng.adapter_names]
    reqs = [wf.GenerateRequest(messages=CHATS[i % 2], adapter=a, max_new_tokens=8) for i, a in enumerate(arms)]
    outs = eng.generate(reqs)  # one mixed batch over base + 3 adapters
    for req, out in zip(reqs, outs):
        ref = hf.greedy(eng.tok.chat(req.messages, "test"), req.adapter, 8)
        if ref and ref[-1] in eng.tok.eos_ids:  # HF keeps the EOS token; warmfast stops before it
            ref = ref[:-1]
        assert out.token_ids == ref, (req.adapter, out.text, hf.tok.decode(ref))


def test_sampled_generation_is_batch_invariant(real):
    _, eng, _ = real
    arms = [None, *eng.adapter_names]
    reqs = [wf.GenerateRequest(messages=[{"role": "user", "content": f"Tell me about {w}."}],
                               adapter=arms[i % len(arms)], max_new_tokens=6, temperature=0.8, seed=i)
            for i, w in enumerate(["Paris", "the sun", "medicine", "a poem"])]
    together = eng.generate(reqs)
    for req, out in zip(reqs, together):
        assert eng.generate([req])[0].token_ids == out.token_ids, req.adapter


def test_chat_template_ids_equal_apply_chat_template(real):
    _, eng, hf = real
    for messages in CHATS:
        want = hf.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        want = list(want["input_ids"] if hasattr(want, "keys") else want)
        assert eng.tok.chat(messages, "test") == want
        assert want[-4:] == hf.tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]


def test_engine_from_gguf_equals_hf_from_gguf(real, monkeypatch):
    """Engine.from_pretrained(x.gguf) (converted into a cache folder) gives the log-probs HF
    transformers gives when it reads the same GGUF file itself."""
    from transformers import AutoModelForCausalLM

    from real_model import cache_dir

    gguf = cache_dir() / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    monkeypatch.setenv("WARMFAST_CACHE", str(cache_dir()))
    eng = wf.Engine.from_pretrained(gguf)
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    for context, cont in TEXTS:
        res = eng.score([wf.ScoreRequest(context, cont)])[0]
        ctx, tgt = eng.tok.encode_context(context), eng.tok.encode_plain(cont)
        with torch.no_grad():
            lp = torch.log_softmax(hf(torch.tensor([list(ctx + tgt)])).logits[0].float(), -1)
        ref = [lp[len(ctx) - 1 + j, t].item() for j, t in enumerate(tgt)]
        assert all(close(a, b) for a, b in zip(res.token_logprobs, ref)), (context, res.token_logprobs, ref)
