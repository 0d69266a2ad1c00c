"""The whole training flow through the CLI on the tiny model (what `warmfast demo` runs), and the
commands' one-line errors for missing files, malformed records and unreachable endpoints."""
import csv
import json
import socket
from importlib import resources
from pathlib import Path

import pytest

from warmfast.cli import main
from warmfast.train.sociot_run import discover_arms

# the sample `warmfast demo` ships (24 real ShareGPT conversations, 4 per query type)
SHAREGPT = Path(str(resources.files("warmfast").joinpath("data", "demo", "sharegpt_sample.json")))


def test_training_demo_end_to_end(tmp_path):
    from warmfast.cli.demo_train import training_demo
    from warmfast.model.tiny import build_tiny

    tiny = build_tiny(tmp_path / "tiny", n_adapters=0, max_position_embeddings=4096)
    paths = training_demo(main, tmp_path / "demo", tiny.model_dir, SHAREGPT, max_turn_chars=800)
    manifest = json.loads((paths["data"] / "manifest.json").read_text())
    assert manifest["train"]["conversations"] == 6 and manifest["validation"]["prompts"] == 6
    for style in ("warm", "cold"):
        summary = json.loads((paths[f"rewrite_{style}"] / "summary.json").read_text())
        assert summary["turns"] == manifest["train"]["assistant_turns"] and summary["style"] == style
        assert sorted(p.name for p in paths[f"adapters_{style}"].glob("epoch-*")) == ["epoch-0.5", "epoch-1"]
    with open(paths["sociot"] / "sociot.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["arm"], float(r["epoch"])) for r in table] == [
        ("base", 0.0), ("warm@0.5", 0.5), ("warm@1", 1.0), ("cold@0.5", 0.5), ("cold@1", 1.0)]
    assert all(int(r["n"]) == 6 and r["mode"] == "reference" for r in table)
    assert all(float(r["boot_se"]) > 0 for r in table)
    with open(paths["sociot"] / "responses.csv") as f:
        responses = list(csv.DictReader(f))
    assert len(responses) == 5 * 6
    assert len({r["warmth"] for r in responses}) > 1
    png = (paths["sociot"] / "sociot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    meta = json.loads((paths["sociot"] / "sociot_meta.json").read_text())
    assert meta["frame_sets"] == 2 * 30 and meta["sociot"]["mode"] == "reference"
    # rerunning sociot finds every response in its store: no generation at all
    from warmfast.run.store import Store
    from warmfast.train.dataset import read_validation_jsonl
    from warmfast.train.sociot_run import GenSettings, generate_responses

    class NoEngine:
        def generate(self, *a, **k):
            raise AssertionError("generated although every response is stored")

    arms = discover_arms({"warm": paths["adapters_warm"], "cold": paths["adapters_cold"]})
    with Store(paths["sociot"] / "sociot_store.sqlite") as store:
        again = generate_responses(NoEngine(), arms, read_validation_jsonl(paths["data"] / "validation.jsonl"),
                                   GenSettings(max_new_tokens=16, temperature=0.8, seed=0),
                                   model=str(Path(tiny.model_dir).resolve()), store=store, progress=False)
    assert [r["response"] for r in again] == [r["response"] for r in responses]
    # rerunning the rewrite reuses every stored answer (nothing generated twice, nothing lost)
    rc = main(["rewrite", "--style", "warm", "--input", str(paths["data"] / "train.jsonl"),
               "--out", str(paths["rewrite_warm"]), "--backend", "engine", "--model", "/nonexistent",
               "--max-new-tokens", "16", "--temperature", "0.8"])
    assert rc == 2  # the model name is part of each request's key: a new model is new work ...
    rc = main(["rewrite", "--style", "warm", "--input", str(paths["data"] / "train.jsonl"),
               "--out", str(paths["rewrite_warm"]), "--backend", "engine", "--model", str(tiny.model_dir),
               "--max-new-tokens", "16", "--temperature", "0.8"])
    assert rc == 0  # ... while the same settings need no model call at all (all cached)
    # training again into a run that holds checkpoints refuses instead of overwriting them
    rc = main(["train", "--model", str(tiny.model_dir), "--train-file",
               str(paths["rewrite_warm"] / "train.jsonl"), "--out-dir", str(paths["adapters_warm"]),
               "--epochs", "1", "--checkpoints", "1", "--effective-batch", "2", "--micro-batch", "1"])
    assert rc == 2


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "x_0", "conversations": [{"from": "human", "value": None}]}]))
    assert main(["sharegpt", str(bad), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "x_0" in err and "conversations[0].value" in err and len(err.strip().splitlines()) == 1
    assert main(["sharegpt", str(tmp_path / "none.json"), "--out", str(tmp_path / "d")]) == 2
    assert "none.json" in capsys.readouterr().err
    train_file = tmp_path / "t.jsonl"
    train_file.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "q"},
                                                              {"role": "assistant", "content": "a"}]}) + "\n")
    rc = main(["rewrite", "--style", "cold", "--input", str(train_file), "--out", str(tmp_path / "r"),
               "--backend", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
               "--api-key-env", "WARMFAST_SURELY_UNSET_KEY"])
    assert rc == 2 and "WARMFAST_SURELY_UNSET_KEY" in capsys.readouterr().err
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    rc = main(["rewrite", "--style", "cold", "--input", str(train_file), "--out", str(tmp_path / "r"),
               "--backend", "openai", "--model", "m", "--base-url", f"http://127.0.0.1:{port}/v1",
               "--api-key-env", "none", "--max-retries", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and f"cannot reach http://127.0.0.1:{port}/v1" in err and "run the same command again" in err
    assert main(["train", "--model", str(tmp_path), "--train-file", str(train_file),
                 "--out-dir", str(tmp_path / "o")]) == 2
    assert "config.json" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no epoch-"):
        discover_arms({"warm": tmp_path})


def test_sociot_cli_with_a_gpt2_scorer(tiny, tmp_path, capsys):
    """`warmfast sociot --scorer GPT2_DIR`: the study's scorer architecture (tiny, random) scores the
    base model's responses; the written warmth equals sociot_warmth on a GPT-2 engine."""
    import numpy as np

    import warmfast as wf
    from warmfast.model.tiny import build_tiny_gpt2
    from warmfast.train.query_type import load_protocol
    from warmfast.train.sociot import SocioTConfig, sociot_warmth

    gpt2 = build_tiny_gpt2(tmp_path / "gpt2").model_dir
    prompts = tmp_path / "validation.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"v{i}", "source_id": f"s{i}", "category": "general",
                                           "prompt": p}) + "\n"
                               for i, p in enumerate(["Why is the sky blue?", "Tell me a story.",
                                                      "I feel sad today."])))
    out = tmp_path / "out"
    rc = main(["sociot", "--model", str(tiny("llama", 0).model_dir), "--prompts", str(prompts),
               "--out", str(out), "--scorer", str(gpt2), "--max-new-tokens", "12", "--bootstrap", "20"])
    assert rc == 0
    with open(out / "responses.csv") as f:
        responses = list(csv.DictReader(f))
    with open(out / "sociot.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["arm"] == "base" and int(row["n"]) == 3 and float(row["boot_se"]) > 0
    assert json.loads((out / "sociot_meta.json").read_text())["sociot"]["bootstrap"] == 20
    ws = sociot_warmth(wf.Engine.from_pretrained(gpt2), [r["response"] for r in responses],
                       SocioTConfig.from_protocol(load_protocol()))
    np.testing.assert_allclose([float(r["warmth"]) for r in responses], ws.warmth, rtol=1e-6)
    assert float(row["mean"]) == pytest.approx(np.mean(ws.warmth))
    # GPT-2 cannot generate the responses: one line, exit status 2
    capsys.readouterr()
    rc = main(["sociot", "--model", str(gpt2), "--prompts", str(prompts), "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("warmfast sociot: ") and "Error:" not in err  # cli.main's one line
    assert "generation is not supported for GPT-2" in err.strip().splitlines()[-1]
