"""Issue 12 item 5, one test per item: --version; --log-level and -q/-v; --dtype auto; one spelling
per concept (--output for a file, --output-dir for a folder; old spellings hidden aliases); a hub
id names what a model folder holds. (Row fields honoured or refused: tests/test_bad_input.py.)
And the error contract seen from a terminal: exit 2, one line, no traceback (--debug adds it)."""
import argparse
import json
import subprocess
import sys

import pytest
import torch

from warmfast.cli import build_parser, main
from warmfast.engine.device import resolve_dtype


def test_version(capsys):
    import warmfast

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"warmfast {warmfast.__version__}"


def _score(tiny, tmp_path, *flags):
    p = tiny("llama", 1)
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"context": "Hello", "continuation": " world"}) + "\n")
    return main([*flags, "score", "--model", str(p.model_dir), "--input", str(inp), "--output", str(tmp_path / "o.jsonl")])


def test_log_level_quiet_and_verbose(tiny, tmp_path, capsys):
    assert _score(tiny, tmp_path) == 0
    err = capsys.readouterr().err
    assert "warmfast engine: backend=torch" in err and "scored 1 rows" in err  # info by default
    assert _score(tiny, tmp_path, "-q") == 0
    assert capsys.readouterr().err == ""  # no info lines, no progress bar
    assert _score(tiny, tmp_path, "--log-level", "warning") == 0
    assert capsys.readouterr().err.strip() == ""
    assert _score(tiny, tmp_path, "--log-level", "error", "-v") == 0  # an explicit level wins over -v
    assert capsys.readouterr().err.strip() == ""
    import logging

    assert _score(tiny, tmp_path, "-v") == 0 and logging.getLogger("warmfast").getEffectiveLevel() == logging.DEBUG
    with pytest.raises(SystemExit):
        main(["--log-level", "loud", "score"])


def test_dtype_auto(tiny, tmp_path, capsys, monkeypatch):
    assert _score(tiny, tmp_path, "--log-level", "info") == 0  # --dtype auto is the default: fp32 on the CPU
    assert "dtype=torch.float32" in capsys.readouterr().err
    model = tiny("llama", 0).model_dir
    assert resolve_dtype("auto", torch.device("cpu"), model) == "float32"
    assert resolve_dtype("bfloat16", torch.device("cpu"), model) == "bfloat16"  # as given when given
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", torch.device("cuda"), model) == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100 or T4
    fp16 = tmp_path / "fp16"
    fp16.mkdir()
    (fp16 / "config.json").write_text(json.dumps({"torch_dtype": "float32"}))
    assert resolve_dtype("auto", torch.device("cuda"), fp16) == "float32"  # the checkpoint's own
    (fp16 / "config.json").write_text(json.dumps({"dtype": "bfloat16"}))
    assert resolve_dtype("auto", torch.device("cuda"), fp16) == "float16"  # bf16 checkpoint, no bf16 GPU


def _subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_one_spelling_per_concept():
    old = ("--out ", "--out-dir", "--outdir", "--out=")
    for name, p in _subcommands().items():
        text = p.format_help()
        assert not any(o in text for o in old), f"warmfast {name} --help still shows an old output flag"
        flags = {s for a in p._actions for s in a.option_strings}
        if flags & {"--out", "--out-dir", "--outdir"}:  # an old spelling is kept as a hidden alias...
            assert "--output-dir" in flags, name  # ...beside the one shown
    # the aliases still parse, to the same destination
    for argv in (["report", "x", "--out", "r"], ["report", "x", "--output-dir", "r"]):
        assert build_parser().parse_args(argv).out == "r"
    for argv in (["train", "--out-dir", "d"], ["train", "--output-dir", "d"]):
        assert build_parser().parse_args(argv).out_dir == "d"
    for argv in (["demo", "--outdir", "d"], ["demo", "--output-dir", "d"]):
        assert build_parser().parse_args(argv).output_dir == "d"
    assert build_parser().parse_args(["demo"]).output_dir == "warmfast-demo"


def test_tiny_output_dir_and_old_positional(tmp_path, capsys):
    assert main(["tiny", "--output-dir", str(tmp_path / "a"), "--adapters", "1"]) == 0
    assert (tmp_path / "a" / "model" / "config.json").is_file()
    assert main(["tiny", str(tmp_path / "b"), "--adapters", "0"]) == 0  # the old spelling
    assert (tmp_path / "b" / "model" / "config.json").is_file()


def test_hub_id_says_what_a_model_folder_holds(tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"prompt": "hi"}) + "\n")
    code = main(["-q", "generate", "--model", "meta-llama/Llama-3.1-8B", "--input", str(inp),
                 "--output", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "hub id" in err and "config.json" in err and "model.safetensors" in err and "tokenizer.json" in err


def _terminal(*argv, cwd):
    r = subprocess.run([sys.executable, "-m", "warmfast", *argv], capture_output=True, text=True, cwd=cwd, timeout=300)
    return r.returncode, r.stderr


def test_user_errors_never_reach_the_terminal_as_a_traceback(tiny, tmp_path):
    """The real terminal: each bad input exits 2 with one line; --debug adds the traceback."""
    p = tiny("llama", 1)
    (tmp_path / "rows.jsonl").write_text('{"context": "a", "continuation": " b", "adaptor": "warm"}\n')
    (tmp_path / "cfg.yaml").write_text("name: a\nname: b\n")
    (tmp_path / "good.jsonl").write_text('{"context": "a", "continuation": " b"}\n')
    bad = tmp_path / "bad_adapter"
    import shutil

    shutil.copytree(p.adapters["adapter_0"], bad)
    conf = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**conf, "r": 0}))
    cases = [
        (["score", "--model", str(p.model_dir), "--input", "rows.jsonl", "--output", "o.jsonl"], "did you mean 'adapter'"),
        (["run", "cfg.yaml"], "duplicate key 'name'"),
        (["score", "--model", str(p.model_dir), "--adapter", f"x={bad}", "--input", "good.jsonl",
          "--output", "o.jsonl"], "r must be a positive integer"),
    ]
    for argv, needle in cases:
        code, err = _terminal("-q", *argv, cwd=tmp_path)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert needle in err
    code, err = _terminal("--debug", *cases[1][0], cwd=tmp_path)
    assert code == 2 and "Traceback (most recent call last)" in err and err.strip().endswith(
        "not valid YAML: duplicate key 'name' (first at line 1)")
