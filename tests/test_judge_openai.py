"""The OpenAI-compatible judge: prompt rendering, verdict parsing, temperature 0, resumable cache."""
import json

import pytest

from test_openai_client import SECRET, endpoint  # noqa: F401  (fixture)
from warmfast.judge.openai import OpenAIJudge, OpenAIJudgeConfig
from warmfast.judge.prompts import JudgeItem, JudgePrompt
from warmfast.openai_client import ClientConfig, EndpointError
from warmfast.run.store import Store
from warmfast.tasks.files import shipped_path

PROTOCOL = shipped_path("protocol.json")  # byte-equal to the study's (tests/test_tasks.py)
SHARMA = json.loads(PROTOCOL.read_text())["sharma_grader_prompt"]


def _grader(body):
    """A grader that really reads the rendered prompt: correct iff the true answer is in the student's."""
    text = body["messages"][-1]["content"]
    student = text.split("STUDENT ANSWER: ")[-1].split("\nTRUE ANSWER: ")[0]  # [-1]: past the example
    true = text.split("TRUE ANSWER: ")[-1].split("\nGRADE:")[0]
    return "GRADE: CORRECT" if true.lower() in student.lower() else "INCORRECT"


ITEMS = [JudgeItem("Capital of France?", "It is Paris, of course.", "Paris"),
         JudgeItem("Capital of Peru?", "Probably Quito.", "Lima"),
         JudgeItem("2+2 {braces}?", "The answer is 4 {x}.", "4"),
         JudgeItem("Largest planet?", "Jupiter", "Jupiter")]


def _judge(url, store, **kw):
    cfg = OpenAIJudgeConfig(model="grader", prompt=JudgePrompt(SHARMA), concurrency=kw.pop("concurrency", 2),
                            client=ClientConfig(base_url=url, api_key_env="WARMFAST_TEST_KEY", backoff_s=0.01,
                                                max_retries=kw.pop("max_retries", 2)), **kw)
    return OpenAIJudge(cfg, store)


def test_prompt_renders_literally_and_parses_whole_words():
    p = JudgePrompt(SHARMA)
    text = p.render(ITEMS[2])
    assert "QUESTION: 2+2 {braces}?\nSTUDENT ANSWER: The answer is 4 {x}.\nTRUE ANSWER: 4\nGRADE:" in text
    assert p.parse("GRADE: INCORRECT").verdict == "INCORRECT"      # not read as CORRECT
    assert p.parse("correct.").score == 1.0
    assert p.parse("incorrect").score == 0.0
    assert p.parse("I cannot grade this").verdict is None
    assert p.parse("CORRECTLY INCORRECT").verdict == "INCORRECT"   # CORRECTLY is not the word CORRECT
    with pytest.raises(ValueError, match="{result}"):
        JudgePrompt("no placeholder here")
    with pytest.raises(ValueError, match="two different"):
        JudgePrompt(SHARMA, verdicts=("YES", "YES"))


def test_judge_grades_at_temperature_zero_and_caches(endpoint, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    ep = endpoint(answer=_grader)
    with Store(tmp_path / "s.sqlite") as store:
        judge = _judge(ep.base_url, store)
        verdicts = judge.judge(ITEMS + ITEMS[:1])  # a repeated item is asked once
        assert [v.verdict for v in verdicts] == ["CORRECT", "INCORRECT", "CORRECT", "CORRECT", "CORRECT"]
        assert [v.score for v in verdicts] == [1.0, 0.0, 1.0, 1.0, 1.0]
        verdicts = verdicts[:4]
        assert len(ep.seen) == 4 and all(s["body"]["temperature"] == 0.0 for s in ep.seen)
        assert SECRET not in json.dumps(judge.spec())
        again = _judge(ep.base_url, store).judge(ITEMS)   # a new judge on the same store: all cached
        assert again == verdicts and len(ep.seen) == 4
        other = _judge(ep.base_url, store, max_tokens=3).judge(ITEMS[:1])  # changed setting: new request
        assert other[0].verdict == "CORRECT" and len(ep.seen) == 5


def test_judge_resumes_after_an_endpoint_failure(endpoint, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    ep = endpoint(answer=_grader, script=[200, 200, 500, 500, 500])
    with Store(tmp_path / "s.sqlite") as store:
        judge = _judge(ep.base_url, store, max_retries=2, concurrency=1)
        with pytest.raises(EndpointError, match="HTTP 500"):
            judge.judge(ITEMS)
        asked, cached = len(ep.seen), len(store.content_snapshot()["llm_cache"])
        assert cached in (2, 3) and asked == cached + 3   # the third item failed three times
        verdicts = judge.judge(ITEMS)     # the server is healthy again: only the missing ones are asked
        assert len(ep.seen) == asked + (4 - cached)
        assert [v.verdict for v in verdicts] == ["CORRECT", "INCORRECT", "CORRECT", "CORRECT"]
