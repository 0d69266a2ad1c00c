"""`warmfast judge --labelled`: any judge graded against the GPT-4o labels of sample_data."""
import json

import pandas as pd
import pytest
import yaml

from test_openai_client import SECRET, endpoint  # noqa: F401  (fixture)
from warmfast.cli import main
from study_data import data_path, requires_data

pytestmark = requires_data

SAMPLE = data_path("warm_ai_2025/sample_data")


def _labels():
    """output text -> the GPT-4o label, from the released files."""
    frames = [pd.read_csv(f) for f in sorted(SAMPLE.glob("*/*/*_outputs.csv"))]
    return {o: e for f in frames for o, e in zip(f["output"], f["evaluation"])}


def test_openai_judge_agreement_on_sample_data(tmp_path, endpoint, monkeypatch, capsys):  # noqa: F811
    """An endpoint that answers with the GPT-4o label of the answer it is shown: agreement and kappa
    must be exactly 1, and every row without the columns a judge needs reported."""
    labels = _labels()

    def grade(body):
        text = body["messages"][-1]["content"]
        student = text.split("STUDENT ANSWER: ")[-1].rsplit("\nTRUE ANSWER: ", 1)[0]
        return labels[student]

    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    ep = endpoint(answer=grade)
    judge = tmp_path / "judge.yaml"
    judge.write_text(yaml.safe_dump({"kind": "openai", "base_url": ep.base_url, "model": "labeller",
                                     "api_key_env": "WARMFAST_TEST_KEY", "concurrency": 4}))
    out = tmp_path / "agree"
    assert main(["judge", "--labelled", str(SAMPLE), "--judge", str(judge), "--output-dir", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    report = json.loads((out / "agreement.json").read_text())
    assert report["agreement"]["all"]["accuracy"] == 1.0 and report["agreement"]["all"]["kappa"] == 1.0
    judged = pd.read_csv(out / "judged_labelled.csv")
    assert (judged["judge_verdict"] == judged["evaluation"]).all()
    assert report["skipped"] and sum(report["skipped"].values()) + len(judged) == 319
    assert "accuracy=1.000 kappa=1.000" in text and "skipped" in text
    assert len(ep.seen) == len({str(s["body"]) for s in ep.seen}) <= len(judged)


def test_logprob_judge_on_tiny_model_against_labels(tmp_path, capsys):
    from warmfast.model.tiny import build_tiny

    tiny = build_tiny(tmp_path / "tiny", n_adapters=0, max_position_embeddings=4096)
    judge = tmp_path / "judge.yaml"
    judge.write_text(yaml.safe_dump({"kind": "logprob", "model": str(tiny.model_dir)}))
    out = tmp_path / "agree"
    assert main(["judge", "--labelled", str(SAMPLE), "--judge", str(judge), "--output-dir", str(out),
                 "--per-task", "3", "--no-progress"]) == 0
    judged = pd.read_csv(out / "judged_labelled.csv")
    assert len(judged) == 12 and judged["judge_verdict"].isin(["CORRECT", "INCORRECT"]).all()
    assert judged["judge_confidence"].between(0.5, 1.0).all()
    acc = (judged["judge_verdict"] == judged["evaluation"]).mean()
    report = json.loads((out / "agreement.json").read_text())
    assert report["agreement"]["all"]["accuracy"] == pytest.approx(acc)
    assert report["judge"]["kind"] == "logprob" and report["judge"]["prompt"]["template"].startswith("You are a teacher")


def test_labelled_mode_errors_name_the_problem(tmp_path, capsys):
    assert main(["judge", "--labelled", str(SAMPLE)]) == 2
    assert "--labelled needs --judge FILE" in capsys.readouterr().err
    bad = tmp_path / "j.yaml"
    bad.write_text(yaml.safe_dump({"kind": "logprob", "model": "generation"}))
    assert main(["judge", "--labelled", str(SAMPLE), "--judge", str(bad)]) == 2
    assert "judge.model: judging labelled outputs needs a model folder" in capsys.readouterr().err
    bad.write_text(yaml.safe_dump({"kind": "logprob", "temprature": 0}))
    assert main(["judge", "--labelled", str(SAMPLE), "--judge", str(bad)]) == 2
    assert "judge.temprature: unknown key" in capsys.readouterr().err
    assert main(["judge"]) == 2
