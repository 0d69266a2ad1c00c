"""On a GPU: the triton backend on the card gives the CPU torch backend's greedy tokens and scores
for a tiny fp32 model with mixed adapters (issue 19's check of the whole GPU path against the CPU
oracle). Runs in bench/gpu_check.sh's kernel step; skipped without CUDA."""
import pytest
import torch

import warmfast as wf

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="compares a CUDA run with the CPU (needs a GPU)")


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_gpu_greedy_tokens_and_scores_equal_cpu(tiny, family):
    paths = tiny(family, 3)
    engines = {dev: wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, device=dev,
                                              dtype="float32", backend="triton" if dev == "cuda" else "torch")
               for dev in ("cpu", "cuda")}
    arms = [None, *engines["cpu"].adapter_names]
    gen = [wf.GenerateRequest(prompt=f"Story {i} begins with", adapter=arms[i % 4], max_new_tokens=4 + i % 6)
           for i in range(12)]
    score = [wf.ScoreRequest(context=f"Question {i}: is it", continuation=" yes or no", adapter=arms[i % 4])
             for i in range(12)]
    out = {dev: [r.token_ids for r in e.generate(gen, max_batch_size=8)] for dev, e in engines.items()}
    assert out["cuda"] == out["cpu"]
    lp = {dev: [r.logprob for r in e.score(score)] for dev, e in engines.items()}
    assert max(abs(a - b) for a, b in zip(lp["cuda"], lp["cpu"])) < 1e-3, lp
    graphs = [r.token_ids for r in engines["cuda"].generate(gen, max_batch_size=8, cuda_graphs=True)]
    assert graphs == out["cpu"]
