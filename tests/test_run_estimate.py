"""`warmfast run CONFIG --estimate`: expected hours of the grid on a card from bench records, or
from reference figures that every line using them labels as not measured."""
import json
import re
from pathlib import Path

import pytest

from warmfast.cli import main
from warmfast.run.config import load_config
from warmfast.run.estimate import TYPICAL_ANSWER_FRACTION, grid_work

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"


def _hours(text: str) -> tuple[float, float]:
    m = re.search(r"expected: ([\d.]+) h typical, ([\d.]+) h if every answer", text)
    return float(m.group(1)), float(m.group(2))


def test_without_records_uses_labelled_reference_figures(tmp_path, capsys):
    assert main(["run", str(PAPER), "--estimate", "--card", "H200", "--records", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[REFERENCE, not measured]" in out and "NOT measured: no bench record of card 'H200'" in out
    typical, most = _hours(out)
    assert 0 < typical < most
    assert "tasks.triviaqa: data not here" in out  # paper.yaml's triviaqa path is a placeholder


def test_measured_records_give_the_hours(tmp_path, capsys):
    def record(name, **kw):
        (tmp_path / f"{name}.json").write_text(json.dumps({"card": "NVIDIA H200", "date": "2026-12-04T00:00:00+00:00", **kw}))

    record("e2e_score_cuda_llama8b_1", bench="e2e_score", tokens_per_s={"warmfast": 40000.0, "hf_peft_mixed": 11000.0})
    record("e2e_generate_cuda_llama8b_n64_1", bench="e2e_generate", rows=64, max_batch=64,
           tokens_per_s={"warmfast": 5000.0, "warmfast_cuda_graphs": 7000.0, "hf_peft_mixed": 135.0})
    record("e2e_generate_cuda_llama8b_n64_0", bench="e2e_generate", rows=64, max_batch=64,  # older: not used
           date="2026-12-03T00:00:00+00:00", tokens_per_s={"warmfast": 9000.0, "warmfast_cuda_graphs": 9500.0})
    record("e2e_generate_cuda_llama8b_n256_1", bench="e2e_generate", rows=256, max_batch=256,
           tokens_per_s={"warmfast": 20000.0})
    record("e2e_score_cuda_other", bench="e2e_score", card="NVIDIA A100", tokens_per_s={"warmfast": 1.0})
    assert main(["run", str(PAPER), "--estimate", "--card", "H200", "--records", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "REFERENCE" not in out and "measured on NVIDIA H200" in out
    assert "generation 7,000 tokens/s at batch 64" in out  # max_batch_size 128: nearest is 64, newest run, graphs
    w = grid_work(load_config(PAPER))
    typical = ((w.prompt_tokens + w.judge_tokens) / 40000 + w.max_new_tokens * TYPICAL_ANSWER_FRACTION / 7000) / 3600
    most = ((w.prompt_tokens + w.judge_tokens) / 40000 + w.max_new_tokens / 7000) / 3600
    assert _hours(out) == (pytest.approx(typical, abs=0.006), pytest.approx(most, abs=0.006))
    assert w.jobs > 100000 and w.prompt_tokens > 0 and w.judge_tokens > 0
