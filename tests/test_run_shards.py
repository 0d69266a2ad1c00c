"""Sharded runs: two ranks' stores merged by an unsharded run equal one uninterrupted run."""
import pytest

from warmfast.cli import main
from warmfast.errors import InputError
from warmfast.run.cli import parse_shard
from warmfast.run.config import config_from_dict
from warmfast.run.plan import build_plan
from warmfast.run.runner import plan_chunks, run
from warmfast.run.store import Store, StoreError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from warmfast.model.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny"), n_adapters=1, max_position_embeddings=1024)


def _config(out, tiny):
    return config_from_dict({
        "name": "shards", "output_dir": str(out), "model": {"name": "tiny", "path": str(tiny.model_dir)},
        "arms": {"original": {"kind": "original"}, "warm": {"kind": "adapter", "adapter": str(tiny.adapters["adapter_0"])}},
        "tasks": {"disinfo": {"n": 1}, "gsm8k": {"n": 2}},
        "generation": {"max_new_tokens": 4}, "capability_generation": {"max_new_tokens": 4, "temperature": 0.2},
        "judge": {"kind": "logprob", "model": "generation", "template": "raw", "verdict_prefix": " ",
                  "prompt": "Q: {query}\nA: {result}\nTrue: {answer}\nGrade:"},
        "runner": {"chunk_size": 10, "max_batch_size": 10, "judge_chunk_size": 4}})


def test_two_shards_merge_into_the_uninterrupted_store(tmp_path, tiny):
    ref = run(_config(tmp_path / "ref", tiny), progress=False)
    assert ref.jobs == 2 * (28 + 2)
    cfg = _config(tmp_path / "sharded", tiny)
    s0 = run(cfg, progress=False, shard=(0, 2))
    s1 = run(cfg, progress=False, shard=(1, 2))
    # each rank runs the chunks its content hash names (run/shard.py), none twice, none lost
    plan = build_plan(cfg)
    owned = [sum(len(c) for c in plan_chunks(plan, (r, 2))) for r in (0, 1)]
    assert [s0.jobs, s1.jobs] == owned and sum(owned) == ref.jobs and min(owned) > 0 and not s0.exported
    assert (tmp_path / "sharded" / "store.shard1of2.sqlite").is_file()
    merged = run(cfg, progress=False)
    assert merged.generated_now == 0 and all(n == 0 for n in merged.judged_now.values())
    with Store(tmp_path / "ref" / "store.sqlite") as a, Store(tmp_path / "sharded" / "store.sqlite") as b:
        assert a.content_snapshot() == b.content_snapshot()
        assert b.merge_from(tmp_path / "sharded" / "store.shard0of2.sqlite") == {
            "jobs": 0, "generations": 0, "judgements": 0, "llm_cache": 0}  # merging again adds nothing
        with pytest.raises(StoreError, match="does not exist"):
            b.merge_from(tmp_path / "absent.sqlite")
    assert (tmp_path / "sharded" / "results.csv").read_bytes() == (tmp_path / "ref" / "results.csv").read_bytes()


def test_shard_arguments(monkeypatch, capsys):
    assert parse_shard(None) is None and parse_shard("1/4") == (1, 4)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert parse_shard("env") == (2, 3)
    for bad in ("4/4", "a/2", "3"):
        with pytest.raises(InputError, match="--shard expects RANK/WORLD"):
            parse_shard(bad)
    monkeypatch.delenv("RANK")
    assert main(["run", "x.yaml", "--shard", "env"]) == 2
    assert "warmfast run: --shard env: RANK and WORLD_SIZE are not set" in capsys.readouterr().err


def test_all_arms_share_the_engine_steps(tmp_path, tiny, monkeypatch):
    """The runner feeds every arm to one engine core: its forward steps hold base rows and adapter
    rows together (a runner feeding arm by arm would give steps of one slot)."""
    from warmfast.run import runner

    steps = []  # the adapter slots of each forward's rows
    real_get = runner.EngineHolder.get

    def spying_get(self):
        engine = real_get(self)
        if not getattr(engine, "_spied", False):
            real_forward = engine.model.forward

            def forward(ops, batch, kv_cache=None):
                steps.append(set(batch.row_slots))
                return real_forward(ops, batch, kv_cache)

            engine.model.forward, engine._spied = forward, True
        return engine

    monkeypatch.setattr(runner.EngineHolder, "get", spying_get)
    summary = run(_config(tmp_path / "spy", tiny), progress=False, generate_only=True)
    assert summary.jobs == summary.generated_now == 60
    assert steps and steps[0] == {-1, 0}  # the first batch: 5 base and 5 adapter rows of the plan
    mixed = sum(s == {-1, 0} for s in steps)
    assert mixed >= 0.9 * len(steps), steps
