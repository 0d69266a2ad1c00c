"""`warmfast generate` rows with `logprobs` (k: each generated token's log-prob and the k most
likely tokens) and `prompt_logprobs`: the numbers equal HF transformers + PEFT's log_softmax over
prompt + output (fp32), in streamed and ordered output, and bad values stop with one line naming
the file, line, field and value."""
import json
import shutil

import pytest
from safetensors.torch import load_file

import warmfast as wf
from hf_reference import HFReference
from warmfast.cli import main

TOL = dict(rel=1e-4, abs=1e-4)  # fp32: the engine's paged decode vs HF's one full forward


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def setup(tiny):
    p = tiny("llama", 3)
    for name in ("adapter_0", "adapter_2"):  # a zero B would test nothing
        b = [t for k, t in load_file(f"{p.adapters[name]}/adapter_model.safetensors").items() if "lora_B" in k]
        assert b and all(t.abs().sum() > 0 for t in b)
    return p, HFReference(p)


def adapter_args(p):
    return [a for n in ("adapter_0", "adapter_2") for a in ("--adapter", f"{n}={p.adapters[n]}")]


def check_entry(e, token_id, logprob, hf_row, k, tok):
    """One output entry against HF: the token, its log-prob, and the k most likely tokens."""
    assert e["token_id"] == token_id and e["token"] == tok.decode([token_id])
    assert e["logprob"] == pytest.approx(logprob, **TOL)
    assert e["logprob"] == pytest.approx(hf_row[token_id].item(), **TOL)
    assert len(e["top_logprobs"]) == k
    if k:
        vals, ids = hf_row.topk(k)
        assert [t["token_id"] for t in e["top_logprobs"]] == ids.tolist()
        assert [t["logprob"] for t in e["top_logprobs"]] == pytest.approx(vals.tolist(), **TOL)
        assert [t["token"] for t in e["top_logprobs"]] == [tok.decode([i]) for i in ids.tolist()]


def check_generated(entries, prompt, token_ids, adapter, k, hf):
    lp = hf.logprob_rows(prompt + token_ids, adapter)  # row j: the distribution of token j + 1
    assert [e["token_id"] for e in entries] == token_ids
    for j, (e, t) in enumerate(zip(entries, token_ids)):
        check_entry(e, t, lp[len(prompt) - 1 + j, t].item(), lp[len(prompt) - 1 + j], k, hf.tok)


ROWS = [
    {"id": "greedy-a0", "prompt": "The capital of France is", "adapter": "adapter_0", "max_new_tokens": 6,
     "logprobs": 3, "prompt_logprobs": True},
    {"id": "chat-base", "messages": [{"role": "user", "content": "Why is the sky blue?"}], "max_new_tokens": 4,
     "logprobs": 0},
    {"id": "sampled-a2", "prompt": "Once upon a time", "adapter": "adapter_2", "max_new_tokens": 5,
     "temperature": 0.9, "top_k": 20, "seed": 3, "n": 2, "logprobs": 2, "stop": ["\n"]},
    {"id": "prompt-only", "prompt": [0, 17, 93, 205, 11], "adapter": "adapter_2", "max_new_tokens": 2,
     "prompt_logprobs": True},
    {"id": "plain", "prompt": "No log-probs here", "max_new_tokens": 3},
]


def test_generate_rows_logprobs_equal_hf(setup, tmp_path):
    p, hf = setup
    write_jsonl(tmp_path / "in.jsonl", ROWS)
    base = ["generate", "--model", str(p.model_dir), *adapter_args(p), "--input", str(tmp_path / "in.jsonl")]
    assert main([*base, "--output", str(tmp_path / "stream.jsonl")]) == 0
    assert main([*base, "--output", str(tmp_path / "ordered.jsonl"), "--ordered"]) == 0
    streamed, ordered = read_jsonl(tmp_path / "stream.jsonl"), read_jsonl(tmp_path / "ordered.jsonl")
    assert [r["id"] for r in ordered] == [r["id"] for r in ROWS]
    assert sorted(streamed, key=lambda r: [x["id"] for x in ROWS].index(r["id"])) == ordered

    eng = wf.Engine.from_pretrained(p.model_dir, adapters={n: p.adapters[n] for n in ("adapter_0", "adapter_2")})
    greedy, chat, sampled, prompt_only, plain = ordered

    ids = list(eng.tok.encode_context(ROWS[0]["prompt"]))
    want = eng.generate([wf.GenerateRequest(prompt=ROWS[0]["prompt"], adapter="adapter_0", max_new_tokens=6)])[0]
    assert greedy["token_ids"] == want.token_ids and greedy["stop_token"] is None
    check_generated(greedy["logprobs"], ids, greedy["token_ids"], "adapter_0", 3, hf)
    for e in greedy["logprobs"]:  # greedy: the chosen token is the most likely one, from one log_softmax
        assert e["top_logprobs"][0] == {k: e[k] for k in ("token_id", "token", "logprob")}
    # prompt_logprobs with logprobs=3: every prompt token, the first with null, the others with their top 3
    pl = greedy["prompt_logprobs"]
    assert [e["token_id"] for e in pl] == ids and pl[0]["logprob"] is None and pl[0]["top_logprobs"] == []
    lp = hf.logprob_rows(ids, "adapter_0")
    for j in range(1, len(ids)):
        check_entry(pl[j], ids[j], lp[j - 1, ids[j]].item(), lp[j - 1], 3, hf.tok)

    check_generated(chat["logprobs"], eng.tok.chat(ROWS[1]["messages"], "test"), chat["token_ids"], None, 0, hf)
    assert "prompt_logprobs" not in chat

    ids = list(eng.tok.encode_context(ROWS[2]["prompt"]))
    assert "logprobs" not in sampled  # n > 1: the log-probs are in each choice
    for c in sampled["choices"]:
        check_generated(c["logprobs"], ids, c["token_ids"], "adapter_2", 2, hf)
    assert sampled["choices"][0]["token_ids"] != sampled["choices"][1]["token_ids"]  # two samples, two streams

    # prompt_logprobs without logprobs: the prompt's log-probs, no top lists, no generated log-probs
    ids = ROWS[3]["prompt"]
    pl = prompt_only["prompt_logprobs"]
    assert [e["token_id"] for e in pl] == ids and pl[0]["logprob"] is None
    assert [e["logprob"] for e in pl[1:]] == pytest.approx(hf.token_logprobs(ids[:1], ids[1:], "adapter_2"), **TOL)
    assert all(e["top_logprobs"] == [] for e in pl) and "logprobs" not in prompt_only

    assert set(plain) == set(ROWS[4]) | {"text", "token_ids", "finish_reason"}


def test_one_token_prompt(setup, tmp_path):
    """Alone in its step (no other prompt position to score): the prompt's one entry is null, the
    generated log-probs come as usual."""
    p, hf = setup
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": [0], "max_new_tokens": 2, "logprobs": 1, "prompt_logprobs": True}])
    assert main(["generate", "--model", str(p.model_dir), "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "out.jsonl")]) == 0
    (row,) = read_jsonl(tmp_path / "out.jsonl")
    assert row["prompt_logprobs"] == [{"token_id": 0, "token": hf.tok.decode([0]), "logprob": None, "top_logprobs": []}]
    check_generated(row["logprobs"], [0], row["token_ids"], None, 1, hf)


def test_flags_and_a_generation_ended_by_eos(setup, tmp_path):
    """--logprobs / --prompt-logprobs apply to every row (a row's own value wins); a generation
    ended by EOS reports that token in stop_token, outside token_ids."""
    p, hf = setup
    prompt = "The weather today"
    eng = wf.Engine.from_pretrained(p.model_dir)
    ids = list(eng.tok.encode_context(prompt))
    first = eng.generate([wf.GenerateRequest(prompt=prompt, max_new_tokens=3)])[0].token_ids
    model = tmp_path / "model"  # the same weights, with the second greedy token an EOS
    shutil.copytree(p.model_dir, model)
    gen_cfg = json.loads((model / "generation_config.json").read_text())
    gen_cfg["eos_token_id"] = [*gen_cfg["eos_token_id"], first[1]]
    (model / "generation_config.json").write_text(json.dumps(gen_cfg))
    assert first[0] != first[1]
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": prompt, "max_new_tokens": 3},
                                        {"prompt": prompt, "max_new_tokens": 3, "logprobs": 4,
                                         "prompt_logprobs": False}])
    assert main(["generate", "--model", str(model), "--input", str(tmp_path / "in.jsonl"), "--output",
                 str(tmp_path / "out.jsonl"), "--logprobs", "1", "--prompt-logprobs", "--ordered"]) == 0
    flagged, own = read_jsonl(tmp_path / "out.jsonl")
    assert flagged["token_ids"] == first[:1] and flagged["finish_reason"] == "stop"
    lp = hf.logprob_rows(ids + first[:2], None)
    check_generated(flagged["logprobs"], ids, first[:1], None, 1, hf)
    check_entry(flagged["stop_token"], first[1], lp[len(ids), first[1]].item(), lp[len(ids)], 1, hf.tok)
    assert [e["token_id"] for e in flagged["prompt_logprobs"]] == ids
    assert own["token_ids"] == first[:1] and "prompt_logprobs" not in own  # the row's values win
    check_generated(own["logprobs"], ids, first[:1], None, 4, hf)
    check_entry(own["stop_token"], first[1], lp[len(ids), first[1]].item(), lp[len(ids)], 4, hf.tok)


BAD = [
    ({"logprobs": 21}, "field logprobs: must be an integer in [0, 20]", "got 21"),
    ({"logprobs": -1}, "field logprobs: must be an integer in [0, 20]", "got -1"),
    ({"logprobs": 2.5}, "field logprobs: must be an integer in [0, 20]", "got 2.5"),
    ({"logprobs": "3"}, "field logprobs: must be an integer in [0, 20]", "got '3'"),
    ({"logprobs": True}, "field logprobs: must be an integer in [0, 20]", "logprobs=true + top_logprobs=k is logprobs=k"),
    ({"prompt_logprobs": "yes"}, "field prompt_logprobs: must be true or false", "got 'yes'"),
    ({"prompt_logprobs": 1}, "field prompt_logprobs: must be true or false", "got 1"),
    ({"top_logprobs": 3}, "field 'top_logprobs' is not supported by warmfast generate", "give logprobs=k instead"),
]


@pytest.mark.parametrize("bad,needle,value", BAD, ids=[json.dumps(b) for b, _, _ in BAD])
def test_bad_logprob_fields_are_one_line(setup, tmp_path, capsys, bad, needle, value):
    p, _ = setup
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "fine", "logprobs": 1}, {"prompt": "x", **bad}])
    code = main(["generate", "--model", str(p.model_dir), "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"in.jsonl line 2: {needle}" in err and value in err
    assert not (tmp_path / "out.jsonl").exists()


def test_bad_logprobs_flag(setup, tmp_path, capsys):
    p, _ = setup
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "fine"}])
    assert main(["generate", "--model", str(p.model_dir), "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "out.jsonl"), "--logprobs", "25"]) == 2
    assert "--logprobs: must be an integer in [0, 20]" in capsys.readouterr().err
