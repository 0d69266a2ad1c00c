"""The whole engine on backend="triton" (Triton interpreter on CPU) equals backend="torch" and HF+PEFT."""
import pytest

import warmfast as wf
from hf_reference import HFReference

REQS = [("The capital of France is", " Paris."), ("I feel sad. Which river?", " The Thames")]


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_triton_backend_scores_equal_torch_and_hf(tiny, arch):
    paths = tiny(arch, 3)
    tri = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, backend="triton")
    ref = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, backend="torch")
    assert tri.backend == "triton" and ref.backend == "torch"
    arms = [None, *paths.adapters]
    reqs = [wf.ScoreRequest(c, x, a) for c, x in REQS for a in arms]
    hf = HFReference(paths)
    for req, a, b in zip(reqs, tri.score(reqs), ref.score(reqs)):
        assert abs(a.logprob - b.logprob) <= 1e-4 * abs(b.logprob)
        assert a.is_greedy == b.is_greedy
        assert abs(a.logprob - sum(hf.token_logprobs(req.context, req.continuation, req.adapter))) <= 1e-4 * abs(b.logprob)


def test_triton_backend_greedy_generation_equals_torch(tiny):
    paths = tiny("llama", 3)
    tri = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, backend="triton")
    ref = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, backend="torch")
    reqs = [wf.GenerateRequest(prompt="Hello my friend", adapter=a, max_new_tokens=4)
            for a in [None, "adapter_0", "adapter_2"]]
    assert [o.token_ids for o in tri.generate(reqs)] == [o.token_ids for o in ref.generate(reqs)]
