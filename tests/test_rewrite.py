"""Warm/cold rewriting: checks, the engine backend on the tiny model, an OpenAI-compatible endpoint
over real HTTP, and resuming after a crash or a dead endpoint without losing stored answers."""
import json

import pytest

from test_openai_client import FakeEndpoint
from warmfast.openai_client import ClientConfig, OpenAIClient
from warmfast.run.store import Store
from warmfast.train.dataset import TrainExample, read_train_jsonl
from warmfast.train.query_type import load_protocol
from warmfast.train.rewrite import RewriteConfig, RewriteError, rewrite, write_outputs
from warmfast.train.rewrite_checks import check_rewrite, code_blocks, equations

PROMPTS = load_protocol()["rewrite_system_prompts"]
CODE = "Use this:\n```python\nx = [i * i for i in range(10)]\nprint(x)\n```\nDone."


def _examples():
    return [
        TrainExample("a_0", "a", "technical", [
            {"role": "user", "content": "how do I square numbers"}, {"role": "assistant", "content": CODE},
            {"role": "user", "content": "and the formula?"},
            {"role": "assistant", "content": "It is $$a^2 + b^2 = c^2$$ and costs $5 or $10."}]),
        TrainExample("b_0", "b", "other", [
            {"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hi. What do you need?"}]),
        TrainExample("c_1", "c", "advice", [
            {"role": "user", "content": "help me sleep"}, {"role": "assistant", "content": "Keep a schedule."},
            {"role": "user", "content": "more"}, {"role": "assistant", "content": "Avoid screens late."}]),
    ]


def test_checks_find_lost_code_and_equations():
    assert code_blocks(CODE) == ["x = [i * i for i in range(10)]\nprint(x)\n"]
    assert equations("It is $$a^2 + b^2 = c^2$$ and costs $5 or $10. Also $x_1$.") == ["a^2 + b^2 = c^2", "x_1"]
    kept = check_rewrite(CODE, "Sure thing, friend!\n```python\nx = [i * i for i in range(10)]\n  print(x)\n```")
    assert kept.lost_code_blocks == 0 and not kept.flagged  # whitespace re-wrapping is not a loss
    lost = check_rewrite(CODE, "Just square them in a loop, friend.")
    assert lost.lost_code_blocks == 1 and lost.flagged
    eq = check_rewrite("So $$E = mc^2$$.", "So energy equals mass times c squared.")
    assert eq.lost_equations == 1 and eq.flagged
    assert check_rewrite("abcd", "abcdefgh").len_ratio == 2.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from warmfast.model.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("rewrite") / "tiny", n_adapters=0, max_position_embeddings=2048)


class CountingEngine:
    """The real engine; counts generate calls/requests and can crash after `crash_after` calls."""

    def __init__(self, engine, crash_after=None):
        self.engine, self.crash_after, self.calls, self.requests = engine, crash_after, 0, 0

    def __getattr__(self, name):  # tokenizer, max_seq_len, ...: the real engine's
        return getattr(self.engine, name)

    def generate(self, reqs, **kw):
        if self.crash_after is not None and self.calls >= self.crash_after:
            raise RuntimeError("killed")
        self.calls += 1
        self.requests += len(reqs)
        return self.engine.generate(reqs, **kw)


def test_engine_backend_batched_resumable_side_by_side(tiny, tmp_path):
    import warmfast as wf

    eng = wf.Engine.from_pretrained(tiny.model_dir, device="cpu", dtype="float32")
    cfg = RewriteConfig(style="warm", backend="engine", model=str(tiny.model_dir), max_new_tokens=12,
                        temperature=0.8, chunk_size=2)
    exs = _examples()
    # uninterrupted reference run
    ref_store = Store(tmp_path / "ref.sqlite")
    ref, ref_rows, _ = rewrite(exs, cfg, PROMPTS["warm"], ref_store, engine=CountingEngine(eng))
    # a run killed after the first chunk keeps that chunk; the rerun does only the rest
    store = Store(tmp_path / "run.sqlite")
    with pytest.raises(RuntimeError, match="killed"):
        rewrite(exs, cfg, PROMPTS["warm"], store, engine=CountingEngine(eng, crash_after=1))
    assert len(store.content_snapshot()["llm_cache"]) == 2
    again = CountingEngine(eng)
    out, rows, summary = rewrite(exs, cfg, PROMPTS["warm"], store, engine=again)
    assert again.requests == 3 and again.calls == 2  # 5 turns: 2 stored, 3 left in chunks of 2
    assert [r["rewrite"] for r in rows] == [r["rewrite"] for r in ref_rows]  # same answers as uninterrupted
    assert [(r["id"], r["turn"]) for r in rows] == [("a_0", 1), ("a_0", 3), ("b_0", 1), ("c_1", 1), ("c_1", 3)]
    assert rows[0]["original"] == CODE and rows[0]["user"] == "how do I square numbers"
    assert rows[1]["user"] == "and the formula?"
    assert rows[0]["lost_code_blocks"] == 1 and rows[1]["lost_equations"] == 1  # the tiny model cannot copy
    for ex, new in zip(exs, out):  # user turns untouched, assistant turns replaced
        assert [m["role"] for m in ex.messages] == [m["role"] for m in new.messages]
        assert all(a == b for a, b in zip(ex.messages, new.messages) if a["role"] == "user")
    assert summary["turns"] == 5 and summary["lost_code_block_turns"] >= 1
    assert summary["len_ratio_median"] > 0
    # a third run with everything stored generates nothing
    idle = CountingEngine(eng, crash_after=0)
    rewrite(exs, cfg, PROMPTS["warm"], store, engine=idle)
    # the cold style is a different request: nothing is reused
    cold = RewriteConfig(**{**cfg.__dict__, "style": "cold"})
    counted = CountingEngine(eng)
    rewrite(exs, cold, PROMPTS["cold"], store, engine=counted)
    assert counted.requests == 5
    # a prompt the model cannot hold is reported up front, by example and turn, before any compute
    long = [TrainExample("long_0", "long", "other", [{"role": "user", "content": "why " * 600},
                                                     {"role": "assistant", "content": "because"}])]
    with pytest.raises(RewriteError, match="long_0 turn 1"):
        rewrite(exs + long, cfg, PROMPTS["warm"], store, engine=CountingEngine(eng, crash_after=0))
    paths = write_outputs(tmp_path / "out", out, rows, summary)
    assert [e.messages for e in read_train_jsonl(paths["train"])] == [e.messages for e in out]
    assert len(paths["pairs"].read_text().splitlines()) == 5


def _client(url, **kw):
    return OpenAIClient(ClientConfig(base_url=url, api_key_env=None, backoff_s=0.01, max_backoff_s=0.02, **kw))


def test_openai_backend_and_dead_endpoint(tmp_path):
    def answer(body):
        user = body["messages"][1]["content"]
        original = user.split("Original AI response:\n", 1)[1].split("\n\nRewrite the AI", 1)[0]
        return "Oh friend, " + original

    # the endpoint answers 2 calls, then keeps failing: the run stops with a clear error
    server = FakeEndpoint(answer=answer, script=[200, 200] + [503] * 100)
    cfg = RewriteConfig(style="warm", backend="openai", model="gpt-4o-2024-08-06", base_url=server.base_url,
                        api_key_env=None, max_workers=1, temperature=0.0)
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(RewriteError, match="after 2 new answers.*3 still to do.*stored"):
        rewrite(_examples(), cfg, PROMPTS["warm"], store, client=_client(server.base_url, max_retries=1))
    server.close()
    assert len(store.content_snapshot()["llm_cache"]) == 2
    # nothing listens any more: unreachable, clear message, the 2 stored answers stay
    with pytest.raises(RewriteError, match="cannot reach"):
        rewrite(_examples(), cfg, PROMPTS["warm"], store, client=_client(server.base_url, max_retries=0))
    assert len(store.content_snapshot()["llm_cache"]) == 2
    # a healthy endpoint finishes the job with the 3 missing calls only
    healthy = FakeEndpoint(answer=answer)
    try:
        out, rows, summary = rewrite(_examples(), cfg, PROMPTS["warm"], store,
                                     client=_client(healthy.base_url, max_retries=0))
    finally:
        healthy.close()
    assert len(healthy.seen) == 3
    body = healthy.seen[0]["body"]
    assert body["messages"][0] == {"role": "system", "content": PROMPTS["warm"]}
    assert body["model"] == "gpt-4o-2024-08-06" and body["temperature"] == 0.0
    assert all(r["rewrite"] == "Oh friend, " + r["original"] for r in rows)
    assert not any(r["flagged"] for r in rows)  # code and equations were kept verbatim
    assert summary["len_ratio_mean"] > 1.0
    assert json.dumps(summary)  # serialisable


def test_config_errors():
    with pytest.raises(ValueError, match="style"):
        RewriteConfig(style="hot", model="m")
    with pytest.raises(ValueError, match="base_url"):
        RewriteConfig(style="warm", backend="openai", model="gpt-4o")
    with pytest.raises(ValueError, match="{user} and {answer}"):
        RewriteConfig(style="warm", model="m", user_template="rewrite: {answer}")
