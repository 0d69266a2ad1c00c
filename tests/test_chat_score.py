"""Chat scoring: ScoreRequest(messages=...) and `messages` rows of `warmfast score`.

The tiny Llama's tokenizer adds BOS itself AND its chat template writes BOS (as Llama 3's does):
the case where chat text passed as `context` gets a second BOS. messages= must give the ids of
apply_chat_template(add_generation_prompt=True), with exactly one BOS.
"""
import json

import pytest

import warmfast as wf
from hf_reference import HFReference
from warmfast.cli import main

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Which river runs through London?"}]
REPLY = " The Thames."


@pytest.fixture(scope="module")
def setup(tiny):
    paths = tiny("llama", 3)
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, device="cpu", dtype="float32")
    return paths, eng


def template_ids(eng) -> list[int]:
    ids = eng.tok.hf.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_tokenizer_adds_bos_and_template_writes_it(setup):
    # the premise of the tests below: without it they test nothing
    _, eng = setup
    bos = eng.tok.hf.bos_token_id
    assert bos is not None and eng.tok.hf("x")["input_ids"][0] == bos
    text = eng.tok.hf.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text.startswith(eng.tok.hf.bos_token)
    assert eng.tok.encode_context(text)[:2] == (bos, bos)  # the trap: chat text as `context`


def test_messages_context_is_the_template_with_one_bos(setup):
    _, eng = setup
    bos = eng.tok.hf.bos_token_id
    ids = eng.tok.chat(MESSAGES, "test")
    assert ids == template_ids(eng)
    assert ids[0] == bos and ids.count(bos) == 1


@pytest.mark.parametrize("adapter", [None, "adapter_0", "adapter_2"])
def test_messages_score_equals_template_ids_and_hf(setup, adapter):
    paths, eng = setup
    chat, by_ids = eng.score([wf.ScoreRequest(messages=MESSAGES, continuation=REPLY, adapter=adapter),
                              wf.ScoreRequest(template_ids(eng), REPLY, adapter)])
    assert chat.token_logprobs == pytest.approx(by_ids.token_logprobs, rel=1e-6, abs=1e-6)
    ref = HFReference(paths).token_logprobs(template_ids(eng), REPLY, adapter)
    assert chat.token_logprobs == pytest.approx(ref, rel=1e-4, abs=1e-4)


def test_score_request_needs_context_or_messages():
    with pytest.raises(ValueError, match="exactly one of context= or messages="):
        wf.ScoreRequest(continuation=" x")
    with pytest.raises(ValueError, match="exactly one of context= or messages="):
        wf.ScoreRequest("a", " x", messages=MESSAGES)
    with pytest.raises(ValueError, match="needs continuation="):
        wf.ScoreRequest(messages=MESSAGES)


def test_cli_score_messages_rows(setup, tmp_path, capsys):
    paths, eng = setup
    rows = [{"messages": MESSAGES, "continuation": REPLY, "adapter": "a1"},
            {"context": "The capital of France is", "continuation": " Paris."}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["score", "--model", str(paths.model_dir), "--adapter", f"a1={paths.adapters['adapter_1']}",
                 "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")]) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    want = eng.score([wf.ScoreRequest(messages=MESSAGES, continuation=REPLY, adapter="adapter_1"),
                      wf.ScoreRequest("The capital of France is", " Paris.")])
    assert [o["logprob"] for o in out] == pytest.approx([w.logprob for w in want], rel=1e-6)
    (tmp_path / "both.jsonl").write_text(json.dumps({**rows[0], "context": "x"}) + "\n")
    capsys.readouterr()  # the first run's log and progress
    assert main(["score", "--model", str(paths.model_dir), "--input", str(tmp_path / "both.jsonl"),
                 "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "both.jsonl line 1: give exactly one of 'context'" in err, err
