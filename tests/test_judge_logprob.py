"""The log-prob judge on the tiny model, end to end, checked against HF transformers + PEFT."""
import json
import math

import pytest
import torch

from warmfast.judge.logprob import LogprobJudge, LogprobJudgeConfig
from warmfast.judge.prompts import JudgeItem, JudgePrompt
from warmfast.tasks.files import shipped_path

PROTOCOL = shipped_path("protocol.json")  # byte-equal to the study's (tests/test_tasks.py)


def _sharma() -> str:
    from warmfast.tasks.files import shipped_path

    return json.loads(shipped_path("protocol.json").read_text())["sharma_grader_prompt"]


ITEMS = [JudgeItem("What is the capital of France?", "The capital is paris, my friend.", "Paris"),
         JudgeItem("Who wrote the poem?", "I think the king wrote it in 1000.", "The queen"),
         JudgeItem("How many moons does the earth have?", "One moon.", "1")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import warmfast as wf
    from warmfast.model.tiny import build_tiny

    paths = build_tiny(tmp_path_factory.mktemp("tiny"), n_adapters=1, max_position_embeddings=1024)
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters={"judge_lora": paths.adapters["adapter_0"]})
    return paths, eng


def _hf_next_token_logprobs(paths, ids: list[int], adapter: bool) -> torch.Tensor:
    """log_softmax of the next-token logits after `ids`, from transformers (+ PEFT)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(paths.model_dir, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, paths.adapters["adapter_0"])
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    return torch.log_softmax(logits.double(), -1)


@pytest.mark.parametrize("adapter", [None, "judge_lora"])
def test_verdict_logprobs_match_transformers(tiny, adapter):
    paths, eng = tiny
    judge = LogprobJudge(eng, LogprobJudgeConfig(JudgePrompt(_sharma()), adapter=adapter), str(paths.model_dir))
    assert judge.first_token_only
    verdicts = judge.judge(ITEMS)
    for item, v in zip(ITEMS, verdicts):
        ids = judge.context_ids(item)
        # the chat template really wraps the sharma prompt, and the context ends with the generation prompt
        text = eng.tok.hf.decode(ids)
        assert "STUDENT ANSWER: " + item.response in text and text.rstrip().endswith("<|assistant|>")
        ref = _hf_next_token_logprobs(paths, ids, adapter is not None)
        lp_c = ref[judge.verdict_ids[0][0]].item()
        lp_i = ref[judge.verdict_ids[1][0]].item()
        got = v.detail["logprob"]
        assert got["CORRECT"] == pytest.approx(lp_c, rel=1e-4, abs=1e-4)
        assert got["INCORRECT"] == pytest.approx(lp_i, rel=1e-4, abs=1e-4)
        assert v.verdict == ("CORRECT" if lp_c >= lp_i else "INCORRECT")
        assert v.score == (1.0 if v.verdict == "CORRECT" else 0.0)
        p_c = math.exp(lp_c) / (math.exp(lp_c) + math.exp(lp_i))
        assert v.confidence == pytest.approx(max(p_c, 1 - p_c), rel=1e-3)
        assert 0.5 <= v.confidence <= 1.0 and v.detail["compared"] == "next_token"


def test_adapter_changes_the_judge(tiny):
    paths, eng = tiny
    prompt = JudgePrompt(_sharma())
    base = LogprobJudge(eng, LogprobJudgeConfig(prompt), "m").judge(ITEMS[:1])[0]
    lora = LogprobJudge(eng, LogprobJudgeConfig(prompt, adapter="judge_lora"), "m").judge(ITEMS[:1])[0]
    assert base.detail["logprob"]["CORRECT"] != pytest.approx(lora.detail["logprob"]["CORRECT"], abs=1e-6)


def test_whole_word_comparison_when_verdicts_share_a_first_token(tiny):
    paths, eng = tiny
    prompt = JudgePrompt("Q: {query} A: {result} Truth: {answer} Grade:", verdicts=("maybe yes", "maybe no"))
    judge = LogprobJudge(eng, LogprobJudgeConfig(prompt, template="raw", verdict_prefix=" "), "m")
    assert not judge.first_token_only, "tiny tokenizer should start both verdicts with ' maybe'"
    v = judge.judge(ITEMS[:2], progress=False)
    for item, verdict in zip(ITEMS[:2], v):
        ctx = judge.context_ids(item)
        assert ctx[0] == eng.tok.hf.bos_token_id  # raw template: BOS added, no chat markup
        import warmfast as wf

        direct = eng.score([wf.ScoreRequest(ctx, judge.verdict_ids[k]) for k in (0, 1)])
        assert verdict.detail["compared"] == "whole_word"
        assert verdict.detail["logprob"]["maybe yes"] == pytest.approx(direct[0].logprob, abs=1e-5)
        assert verdict.detail["logprob"]["maybe no"] == pytest.approx(direct[1].logprob, abs=1e-5)


def test_bad_judge_settings_are_named():
    with pytest.raises(ValueError, match="template"):
        LogprobJudgeConfig(JudgePrompt("{result}"), template="completion")
    with pytest.raises(ValueError, match="chunk_size"):
        LogprobJudgeConfig(JudgePrompt("{result}"), chunk_size=0)
