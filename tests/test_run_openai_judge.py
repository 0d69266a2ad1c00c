"""A run judged by an OpenAI-compatible endpoint (a local http.server), through the CLI:
`warmfast run --generate-only`, then `warmfast judge`; replies cached, nothing asked twice."""
import pandas as pd
import pytest
import yaml

from test_openai_client import SECRET, endpoint  # noqa: F401  (fixture)
from warmfast.cli import main
from warmfast.run.store import Store


def _grade(body):
    """Deterministic grader that really reads the prompt: CORRECT iff the student answer has an even
    number of characters and the true answer is shown."""
    text = body["messages"][-1]["content"]
    student = text.split("STUDENT ANSWER: ")[-1].split("\nTRUE ANSWER: ")[0]
    assert text.split("TRUE ANSWER: ")[-1].split("\nGRADE:")[0].strip()
    return "CORRECT" if len(student) % 2 == 0 else "INCORRECT"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from warmfast.model.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny"), n_adapters=1, max_position_embeddings=1024)


def test_openai_judged_run_via_cli(tmp_path, tiny, endpoint, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    ep = endpoint(answer=_grade, script=[429, 500])  # the first requests meet a rate limit and an error
    raw = {"name": "oa", "output_dir": str(tmp_path / "run"),
           "model": {"name": "tiny", "path": str(tiny.model_dir)},
           "arms": {"original": {"kind": "original"},
                    "warm": {"kind": "adapter", "adapter": str(tiny.adapters["adapter_0"])}},
           "tasks": {"disinfo": {"n": 1}},
           "generation": {"max_new_tokens": 5},
           "judge": {"kind": "openai", "base_url": ep.base_url, "model": "grader-1",
                     "api_key_env": "WARMFAST_TEST_KEY", "backoff_s": 0.01, "max_retries": 3, "concurrency": 3},
           "runner": {"chunk_size": 28}}
    cfg = tmp_path / "oa.yaml"
    cfg.write_text(yaml.safe_dump(raw))

    assert main(["run", str(cfg), "--generate-only", "--no-progress"]) == 0
    assert "generated now: 56" in capsys.readouterr().out and ep.seen == []
    assert main(["judge", str(cfg), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "generated now: 0" in out and "openai_judge: 56 new verdicts" in out
    bodies = {str(s["body"]) for s in ep.seen}
    assert len(ep.seen) == len(bodies) + 2  # identical requests asked once; two retried requests
    assert all(s["body"]["temperature"] == 0.0 and s["body"]["model"] == "grader-1" for s in ep.seen)

    df = pd.read_csv(tmp_path / "run" / "outputs" / "tiny" / "warm" / "disinfo_warm_outputs.csv", keep_default_na=False)
    assert len(df) == 28
    expected = ["CORRECT" if len(o) % 2 == 0 else "INCORRECT" for o in df["output"]]
    assert df["evaluation"].tolist() == expected
    assert df["judge"].str.startswith("openai_judge:").all()
    with Store(tmp_path / "run" / "store.sqlite") as st:
        assert len(st.content_snapshot()["llm_cache"]) == len(bodies)
        assert SECRET not in str(st.content_snapshot())

    assert main(["judge", str(cfg), "--no-progress"]) == 0  # everything judged: no request at all
    assert "openai_judge: 0 new verdicts" in capsys.readouterr().out and len(ep.seen) == len(bodies) + 2


def test_unreachable_judge_endpoint_stops_the_run_with_its_url(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    from warmfast.openai_client import EndpointUnreachable
    from warmfast.run.config import config_from_dict
    from warmfast.run.runner import run

    raw = {"name": "oa", "output_dir": str(tmp_path / "run"),
           "model": {"name": "tiny", "path": str(tiny.model_dir)},
           "arms": {"original": {"kind": "original"}}, "tasks": {"disinfo": {"n": 1}},
           "generation": {"max_new_tokens": 2},
           "judge": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                     "api_key_env": "WARMFAST_TEST_KEY", "backoff_s": 0.01, "max_retries": 1, "timeout_s": 2}}
    with pytest.raises(EndpointUnreachable, match=r"cannot reach http://127\.0\.0\.1:9/v1/chat/completions"):
        run(config_from_dict(raw), progress=False)
    with Store(tmp_path / "run" / "store.sqlite") as st:  # the generations are kept for the next try
        assert len(st.done_generations()) == 28


def test_missing_api_key_stops_before_any_generation(tmp_path, tiny, monkeypatch, capsys):
    monkeypatch.delenv("WARMFAST_ABSENT_KEY", raising=False)
    raw = {"name": "oa", "output_dir": str(tmp_path / "run"),
           "model": {"name": "tiny", "path": str(tiny.model_dir)},
           "arms": {"original": {"kind": "original"}}, "tasks": {"disinfo": {"n": 1}},
           "judge": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                     "api_key_env": "WARMFAST_ABSENT_KEY"}}
    cfg = tmp_path / "oa.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg), "--no-progress"]) == 2
    assert "judge.api_key_env: the variable WARMFAST_ABSENT_KEY is not set" in capsys.readouterr().err
    with Store(tmp_path / "run" / "store.sqlite") as st:
        assert st.count_jobs() == 28 and not st.done_generations()


def test_missing_judge_model_stops_before_any_generation(tmp_path, tiny, capsys):
    raw = {"name": "lp", "output_dir": str(tmp_path / "run"),
           "model": {"name": "tiny", "path": str(tiny.model_dir)},
           "arms": {"original": {"kind": "original"}}, "tasks": {"disinfo": {"n": 1}},
           "judge": {"kind": "logprob", "model": str(tmp_path / "no-judge-here")}}
    cfg = tmp_path / "lp.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg), "--no-progress"]) == 2
    assert f"judge.model: no config.json in {tmp_path / 'no-judge-here'}" in capsys.readouterr().err
    with Store(tmp_path / "run" / "store.sqlite") as st:
        assert not st.done_generations()
