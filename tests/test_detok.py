"""Incremental detokenisation (never a split character), stop strings, EOS ids, finish reasons."""
import json
import random

import pytest

from warmfast.engine.detok import IncrementalDetokenizer, OutputState, StopCriteria
from warmfast.model.eos import load_eos_ids


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from warmfast.model.tiny import build_tokenizer

    return build_tokenizer(tmp_path_factory.mktemp("tok"), vocab_size=400, add_bos=True)


TEXT = "Naïve café ☕ costs 3€ — 日本語 is fine 🙂! The capital city."


def test_multibyte_characters_are_never_split(tok):
    ids = tok(TEXT, add_special_tokens=False).input_ids
    assert len(ids) > len(TEXT.split())  # some characters really span several byte tokens
    d = IncrementalDetokenizer(tok)
    deltas = [d.add(t) for t in ids]
    assert "".join(deltas) == TEXT == d.text
    assert not any("\ufffd" in x for x in deltas)
    assert deltas.count("") > 0  # held back while a character was incomplete


def test_random_ids_match_full_decode(tok):
    rng = random.Random(0)
    for _ in range(30):
        ids = [rng.randrange(len(tok)) for _ in range(rng.randint(1, 40))]
        d = IncrementalDetokenizer(tok)
        for t in ids:
            d.add(t)
        d.flush()
        assert d.text == tok.decode(ids, skip_special_tokens=True)


def run(tok, text: str, criteria: StopCriteria, extra: list[int] = ()) -> OutputState:
    st = OutputState(criteria, IncrementalDetokenizer(tok))
    for t in list(tok(text, add_special_tokens=False).input_ids) + list(extra):
        if st.append(t):
            break
    return st


def test_stop_string_cuts_text_before_it(tok):
    st = run(tok, "the capital city of france is paris. the river", StopCriteria(100, stop=("paris", "river")))
    assert st.finish_reason == "stop" and st.text == "the capital city of france is "
    assert tok.decode(st.token_ids).startswith(st.text) and "paris" in tok.decode(st.token_ids)
    # a stop string spanning several tokens, and one made of a multi-byte character
    st = run(tok, "café ☕ costs money", StopCriteria(100, stop=("☕",)))
    assert st.finish_reason == "stop" and st.text == "café "
    st = run(tok, "one two three", StopCriteria(100, stop=("absent",)))
    assert st.finish_reason is None


def test_eos_and_length(tok):
    eos = tok.convert_tokens_to_ids("</s>")
    st = run(tok, "the", StopCriteria(50, eos_ids=frozenset({eos})), extra=[eos, 5, 6])
    assert st.finish_reason == "stop" and eos not in st.token_ids and st.text == "the"
    ids = tok("the capital city of france", add_special_tokens=False).input_ids
    st = run(tok, "the capital city of france", StopCriteria(3))
    assert st.finish_reason == "length" and st.token_ids == ids[:3]
    assert st.text == tok.decode(ids[:3])
    with pytest.raises(RuntimeError, match="already finished"):
        st.append(5)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        StopCriteria(0)
    with pytest.raises(ValueError, match="stop strings must be non-empty"):
        StopCriteria(3, stop=("",))


def test_eos_ids_from_model_folder(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [128001, 128009]}))
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 2}))
    assert load_eos_ids(tmp_path, tokenizer_eos=7) == {128001, 128009, 2, 7}
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": "</s>"}))
    with pytest.raises(ValueError, match=r"config.json: eos_token_id must be .* got '</s>'"):
        load_eos_ids(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        load_eos_ids(tmp_path)
