"""ShareGPT reading, toxicity filter, query-type labels and balanced sampling, on the real file."""
import json
from collections import Counter
from pathlib import Path

import pytest

from warmfast.train.dataset import DatasetConfig, build_split, quotas, read_train_jsonl
from warmfast.train.query_type import QueryTypeRules, load_protocol
from warmfast.train.sharegpt import Conversation, ShareGPTError, Turn, load_sharegpt
from warmfast.train.toxicity import KeywordToxicity, make_toxicity_filter
from study_data import data_path, need

SHAREGPT = data_path("sharegpt/ShareGPT_V3_unfiltered_cleaned_split.first5000.json")


@pytest.fixture(scope="module")
def convs():
    return load_sharegpt(need(SHAREGPT))


@pytest.fixture(scope="module")
def rules():
    return QueryTypeRules.from_protocol(load_protocol())


def test_reads_real_file(convs):
    assert len(convs) == 5000
    assert [c.id for c in convs[:4]] == ["QWJhYvA_0", "i6IyJda_0", "A5AbcES_0", "hRPPgZT_0"]
    ids = [c.id for c in convs]
    assert len(set(ids)) == 5000  # the file repeats 32 ids; repeats get "#2"
    assert ids.count("ZUkSe7V_0") == 1 and "ZUkSe7V_0#2" in ids
    by_id = {c.id: c for c in convs}
    assert by_id["hRPPgZT_11"].source_id == "hRPPgZT" and by_id["ZUkSe7V_0#2"].source_id == "ZUkSe7V"
    assert Counter(t.role for c in convs for t in c.turns)["assistant"] == 18729 + 2 + 1  # gpt+bing+chatgpt


def test_chat_truncates_to_20_turns_and_alternates(convs):
    longest = max(convs, key=lambda c: len(c.turns))
    assert len(longest.turns) == 54
    chat = longest.chat(20)
    assert len(chat) == 20 and chat[-1].role == "assistant"
    assert [t.role for t in chat] == ["user", "assistant"] * 10
    for c in convs:
        ch = c.chat(20)
        assert len(ch) <= 20 and len(ch) % 2 == 0
        assert all(t.role == ("user", "assistant")[i % 2] for i, t in enumerate(ch))
    # a record that starts with the assistant (a V3 chunk) starts at its first user turn
    chunk = next(c for c in convs if c.turns and c.turns[0].role == "assistant" and c.chat())
    assert chunk.chat()[0] == next(t for t in chunk.turns if t.role == "user")


def _write(tmp_path, records) -> Path:
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(records))
    return p


@pytest.mark.parametrize("record, words", [
    ({"id": "abc_1", "conversations": [{"from": "human", "value": 3}]}, ["abc_1", "conversations[0].value", "int"]),
    ({"id": "abc_2", "conversations": [{"from": "robot", "value": "x"}]}, ["abc_2", "conversations[0].from", "robot"]),
    ({"id": "abc_3", "conversations": "hello"}, ["abc_3", "'conversations' must be a list"]),
    ({"conversations": []}, ["record #1", "'id'"]),
    ("just text", ["record #1", "str"]),
])
def test_malformed_record_names_record_and_field(tmp_path, record, words):
    good = {"id": "ok_0", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    with pytest.raises(ShareGPTError) as err:
        load_sharegpt(_write(tmp_path, [good, record]))
    for w in words:
        assert w in str(err.value)


def test_missing_and_truncated_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_sharegpt(tmp_path / "nope.json")
    cut = tmp_path / "cut.json"
    cut.write_bytes(need(SHAREGPT).read_bytes()[:5000])
    with pytest.raises(ShareGPTError, match="not valid JSON.*line"):
        load_sharegpt(cut)


def test_protocol_copy_matches_shared_materials():
    shared = json.loads((need(data_path("protocol/protocol.json"))).read_text())
    ours = load_protocol()
    for key in ("rewrite_system_prompts", "query_type_rules", "lora", "sociot"):
        assert ours[key] == shared[key], key


def test_keyword_filter_on_real_records(convs):
    tox = KeywordToxicity()
    by_id = {c.id: c for c in convs}
    text = lambda c: "\n".join(t.text for t in c.chat())  # noqa: E731
    assert tox.scores([text(by_id["MfAhcHq_0"]), text(by_id["X1NXUxZ_0"])]) == [1.0, 1.0]
    assert "incest" in tox.matches(text(by_id["MfAhcHq_0"]))
    assert tox.scores([text(by_id["QWJhYvA_0"]), text(by_id["i6IyJda_0"])]) == [0.0, 0.0]
    # innocent senses stay clean
    assert tox.scores(["rapeseed oil and the sex ratio of a cock seen with the naked eye"]) == [0.0]
    flagged = sum(tox.scores([text(c) for c in convs if c.chat()]))
    assert 5 <= flagged <= 100  # 13 on this file: a word list, not a blanket ban


def test_filter_factory_is_explicit(tmp_path):
    assert make_toxicity_filter("keyword").name == "keyword"
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        make_toxicity_filter("detoxify", checkpoint=tmp_path / "none.ckpt")
    with pytest.raises(ValueError, match="toxicity.kind"):
        make_toxicity_filter("perspective")
    with pytest.raises(ValueError, match="not a valid regex"):
        KeywordToxicity(("(unclosed",))


@pytest.mark.parametrize("rid, label", [
    ("QWJhYvA_0", "other"),       # "Summarize ... into bullet points": no rule fires
    ("i6IyJda_0", "factual"),     # starts with "How "
    ("A5AbcES_0", "technical"),   # the answer holds a ``` code fence
    ("wNBG8Gp_80", "refusal"),    # "I apologize" in the answer beats "code"/"java" in the question
    ("J410gdS_19", "refusal"),    # "I'm sorry" beats the wh-word inside the question
    ("wNBG8Gp_15", "creative"),   # "generated" contains "generate": creative comes before technical
    ("uXyoBKr_5", "advice"),      # "suggestions"
])
def test_labels_on_real_records(convs, rules, rid, label):
    conv = next(c for c in convs if c.id == rid)
    assert rules.label_conversation(conv) == label


def test_label_rule_order_and_case(rules):
    assert rules.label("What is the code?", "I'm sorry, no.") == "refusal"
    assert rules.label("what is the code?", "Sure.") == "technical"  # prefix is case-sensitive
    assert rules.label("Please EXPLAIN this poem", "ok") == "factual"  # contains: case-insensitive
    assert rules.label("a poem about a function", "ok") == "creative"
    assert rules.label("help me pick", "```py\nx```") == "technical"
    assert rules.label("help me pick", "ok") == "advice"
    assert rules.label("hi", "hello") == "other"
    assert rules.label_conversation(Conversation("x", (Turn("assistant", "hi"),))) is None


def test_balanced_disjoint_seeded_split(convs, rules, tmp_path):
    cfg = DatasetConfig(n_train=125, n_validation=62, seed=0)
    tox = KeywordToxicity()
    split = build_split(convs, rules, tox, cfg)
    assert Counter(e.category for e in split.train) == Counter(quotas(125))
    assert quotas(125) == {"refusal": 21, "factual": 21, "creative": 21, "technical": 21, "advice": 21, "other": 20}
    assert Counter(p.category for p in split.validation) == Counter(quotas(62))
    train_sources = {e.source_id for e in split.train}
    assert not train_sources & {p.source_id for p in split.validation}
    assert len({e.id for e in split.train}) == 125
    for e in split.train:  # labels are recomputed from the stored dialogue, capped at 20 turns
        assert rules.label(e.messages[0]["content"], e.messages[1]["content"]) == e.category
        assert 2 <= len(e.messages) <= 20 and e.messages[-1]["role"] == "assistant"
        assert tox.scores(["\n".join(m["content"] for m in e.messages)]) == [0.0]
    again = build_split(list(reversed(convs)), rules, tox, cfg)  # file order does not matter
    assert [e.id for e in again.train] == [e.id for e in split.train]
    other = build_split(convs, rules, tox, DatasetConfig(n_train=125, n_validation=62, seed=1))
    assert {e.id for e in other.train} != {e.id for e in split.train}
    assert split.manifest["toxicity_filter"] == "keyword" and split.manifest["toxic_dropped"] == 13
    out = split.write(tmp_path / "data")
    back = read_train_jsonl(out / "train.jsonl")
    assert [b.messages for b in back] == [e.messages for e in split.train]


def test_too_few_for_balance_names_the_type(convs, rules):
    with pytest.raises(ValueError, match="'refusal' has 266 eligible.*'advice': 100"):
        build_split(convs, rules, KeywordToxicity(), DatasetConfig(n_train=1617, n_validation=0))


def test_keyword_patterns_must_be_lower_case():
    with pytest.raises(ValueError, match="upper-case"):
        KeywordToxicity((r"Porn",))
    assert KeywordToxicity().scores(["SOME PORN HERE", "Pornography", "sporny"]) == [1.0, 1.0, 0.0]
