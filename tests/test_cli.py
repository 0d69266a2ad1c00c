"""The engine's command line: tiny, score, generate (JSONL in, JSONL out)."""
import json
import re

import pytest

import warmfast as wf
from warmfast.cli import main


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tiny_folders_load_in_transformers_and_peft(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert main(["tiny", str(tmp_path / "t"), "--arch", "mistral", "--adapters", "2"]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "t" / "model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "t" / "model")
    assert tok.chat_template and tok("hi").input_ids[0] == tok.bos_token_id
    pm = PeftModel.from_pretrained(model, tmp_path / "t" / "adapter_1")
    b = [p for n, p in pm.named_parameters() if "lora_B" in n]
    assert b and all(p.abs().sum() > 0 for p in b)


def test_score_and_generate_cli_match_the_api(tiny, tmp_path, capsys):
    p = tiny("llama", 3)
    rows = [{"context": "The capital of France is", "continuation": " Paris.", "adapter": a}
            for a in (None, "a0", "a2")]
    write_jsonl(tmp_path / "in.jsonl", rows)
    args = ["--model", str(p.model_dir), "--adapter", f"a0={p.adapters['adapter_0']}",
            "--adapter", f"a2={p.adapters['adapter_2']}"]
    assert main(["score", *args, "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")]) == 0
    out = read_jsonl(tmp_path / "out.jsonl")
    eng = wf.Engine.from_pretrained(p.model_dir, adapters={"a0": p.adapters["adapter_0"], "a2": p.adapters["adapter_2"]})
    api = eng.score([wf.ScoreRequest(r["context"], r["continuation"], r["adapter"]) for r in rows])
    assert [o["logprob"] for o in out] == pytest.approx([r.logprob for r in api], rel=1e-6)
    assert [o["adapter"] for o in out] == [None, "a0", "a2"]

    gens = [{"prompt": "Hello", "adapter": "a0", "max_new_tokens": 5},
            {"messages": [{"role": "user", "content": "Hi"}], "max_new_tokens": 4}]
    write_jsonl(tmp_path / "g.jsonl", gens)
    assert main(["generate", *args, "--input", str(tmp_path / "g.jsonl"), "--output", str(tmp_path / "go.jsonl"),
                 "--ordered"]) == 0
    got = read_jsonl(tmp_path / "go.jsonl")
    want = eng.generate([wf.GenerateRequest(prompt="Hello", adapter="a0", max_new_tokens=5),
                         wf.GenerateRequest(messages=gens[1]["messages"], max_new_tokens=4)])
    assert [g["token_ids"] for g in got] == [w.token_ids for w in want]
    # one sequence per step (continuous batching at its narrowest) changes nothing; CUDA graphs
    # on the CPU are refused with the reason
    assert main(["generate", *args, "--input", str(tmp_path / "g.jsonl"), "--output",
                 str(tmp_path / "go1.jsonl"), "--max-batch-size", "1", "--ordered"]) == 0
    assert [g["token_ids"] for g in read_jsonl(tmp_path / "go1.jsonl")] == [w.token_ids for w in want]
    assert main(["generate", *args, "--input", str(tmp_path / "g.jsonl"), "--output",
                 str(tmp_path / "go2.jsonl"), "--cuda-graphs"]) == 2
    assert "cuda_graphs=True needs device cuda and backend triton" in capsys.readouterr().err


def test_generate_cli_writes_rows_as_they_finish(tiny, tmp_path):
    p = tiny("llama", 3)
    rows = [{"id": i, "prompt": f"Story {i} begins", "max_new_tokens": n} for i, n in enumerate([9, 1, 5])]
    rows.append({"id": 3, "prompt": "Two samples", "max_new_tokens": 3, "n": 2, "temperature": 1.0})
    write_jsonl(tmp_path / "in.jsonl", rows)
    args = ["generate", "--model", str(p.model_dir), "--input", str(tmp_path / "in.jsonl")]
    assert main([*args, "--output", str(tmp_path / "a.jsonl")]) == 0
    assert main([*args, "--output", str(tmp_path / "o.jsonl"), "--ordered"]) == 0
    done, ordered = read_jsonl(tmp_path / "a.jsonl"), read_jsonl(tmp_path / "o.jsonl")
    assert [r["id"] for r in ordered] == [0, 1, 2, 3]
    # all four start in the first step: the one-token row finishes first, the nine-token one last
    assert done[0]["id"] == 1 and done[-1]["id"] == 0 and sorted(r["id"] for r in done) == [0, 1, 2, 3]
    assert sorted(done, key=lambda r: r["id"]) == ordered  # the same rows, only the order differs
    assert len(ordered[3]["choices"]) == 2


def test_cli_bad_jsonl_names_file_and_line(tiny, tmp_path, capsys):
    p = tiny("llama", 3)

    def err_of(argv):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    (tmp_path / "bad.jsonl").write_text('{"context": "a", "continuation": " b"}\n{"context": "x"}\n')
    assert re.search(r"bad.jsonl line 2: missing field 'continuation'", err_of(
        ["score", "--model", str(p.model_dir), "--input", str(tmp_path / "bad.jsonl"),
         "--output", str(tmp_path / "o.jsonl")]))
    (tmp_path / "broken.jsonl").write_text('{"context": "a"\n')
    assert re.search(r"broken.jsonl line 1: not valid JSON", err_of(
        ["score", "--model", str(p.model_dir), "--input", str(tmp_path / "broken.jsonl"),
         "--output", str(tmp_path / "o.jsonl")]))
    assert re.search(r"--parts: unknown part\(s\) \['gird'\]", err_of(
        ["demo", "--output-dir", str(tmp_path / "d"), "--parts", "engine,gird"]))
    assert "--adapter expects NAME=DIR" in err_of(
        ["score", "--model", str(p.model_dir), "--adapter", "nodir", "--input",
         str(tmp_path / "bad.jsonl"), "--output", str(tmp_path / "o.jsonl")])


def test_demo_runs_end_to_end(tmp_path, capsys):
    # the engine part; train, grid and report are exercised by test_demo_pipeline.py
    assert main(["demo", "--outdir", str(tmp_path / "demo"), "--parts", "engine"]) == 0
    out = capsys.readouterr().out
    assert "scored 12 (question, answer, arm) rows in one pass" in out
    assert "adapter_2" in out and "tokens/s" in out
