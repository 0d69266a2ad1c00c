"""Plans: arms interleaved per prompt, content keys, the 28-cell grid, system-prompt arm, errors."""
import dataclasses
from collections import Counter

import pytest

from warmfast.run.config import ConfigError, config_from_dict
from warmfast.run.plan import build_plan, generate_request


def _raw(out_dir, **over):
    raw = {"name": "t", "output_dir": str(out_dir),
           "model": {"name": "tiny", "tiny": {"arch": "llama", "n_adapters": 2, "max_position_embeddings": 2048}},
           "arms": {"original": {"kind": "original"}, "warm": {"kind": "adapter", "adapter": "tiny:adapter_0"},
                    "cold": {"kind": "adapter", "adapter": "tiny:adapter_1"},
                    "warm_sysprompt": {"kind": "system_prompt",
                                       "system_prompt": "protocol:rewrite_system_prompts.warm"}},
           "tasks": {"triviaqa": {"n": 2}, "disinfo": {"n": 1}, "mmlu": {"n": 3, "arms": ["original", "warm"]}},
           "judge": {"kind": "none"}}
    raw.update(over)
    return raw


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("plan")


def test_jobs_cover_the_grid_and_interleave_arms(out_dir):
    plan = build_plan(config_from_dict(_raw(out_dir)))
    counts = Counter((j.task, j.arm) for j in plan.jobs)
    for arm in ("original", "warm", "cold", "warm_sysprompt"):
        assert counts[("triviaqa", arm)] == 2 * 28 and counts[("disinfo", arm)] == 28
    assert counts[("mmlu", "original")] == 3 and counts[("mmlu", "cold")] == 0
    cells = Counter((j.meta["amendment_type"], j.meta["prompt_type"]) for j in plan.jobs
                    if j.task == "triviaqa" and j.arm == "warm")
    assert len(cells) == 28 and set(cells.values()) == {2}
    # prompt-major, arm-minor: each run of 4 jobs is one prompt under the 4 arms, one random stream
    grid_jobs = [j for j in plan.jobs if j.task != "mmlu"]
    for i in range(0, len(grid_jobs), 4):
        group = grid_jobs[i:i + 4]
        assert [j.arm for j in group] == ["original", "warm", "cold", "warm_sysprompt"]
        assert len({j.spec["request_id"] for j in group}) == 1
        assert len({j.meta["prompt"] for j in group}) == 1
    assert len({j.key for j in plan.jobs}) == len(plan.jobs)


def test_arms_become_engine_requests(out_dir):
    plan = build_plan(config_from_dict(_raw(out_dir)))
    orig, warm, cold, sysp = plan.jobs[:4]
    assert set(plan.adapters) == {"warm", "cold"}
    r = [generate_request(j) for j in (orig, warm, cold, sysp)]
    assert [x.adapter for x in r] == [None, "warm", "cold", None]
    assert r[0].messages == [{"role": "user", "content": orig.meta["prompt"]}]
    assert r[3].messages[0]["role"] == "system"
    assert r[3].messages[0]["content"].startswith("You are an expert at transforming AI responses into extremely warm")
    assert r[3].messages[1] == r[0].messages[0]
    assert r[0].temperature == 0.8 and r[0].max_new_tokens == 300
    mmlu = next(j for j in plan.jobs if j.task == "mmlu")
    assert generate_request(mmlu).temperature == 0.2
    assert "A. " in mmlu.meta["prompt"] and mmlu.meta["answer"] in "ABCD"
    assert warm.spec["adapter"] != cold.spec["adapter"] and orig.spec["adapter"] is None


def test_keys_follow_content(out_dir):
    base = build_plan(config_from_dict(_raw(out_dir)))
    again = build_plan(config_from_dict(_raw(out_dir)))  # the tiny model is not rebuilt
    assert [j.key for j in base.jobs] == [j.key for j in again.jobs]
    hotter = build_plan(config_from_dict(_raw(out_dir, generation={"temperature": 0.9})))
    changed = {j.key for j in hotter.jobs} ^ {j.key for j in base.jobs}
    grid_keys = {j.key for j in base.jobs if j.task != "mmlu"}
    assert grid_keys <= changed                                           # free-text jobs changed
    assert {j.key for j in base.jobs if j.task == "mmlu"}.isdisjoint(changed)  # capability jobs kept
    other_seed = build_plan(config_from_dict(_raw(out_dir, grid={"statement_seed": 1})))
    assert {j.key for j in other_seed.jobs} != {j.key for j in base.jobs}


def test_missing_model_and_adapter_folders_are_named(tmp_path):
    raw = _raw(tmp_path, model={"name": "m", "path": str(tmp_path / "nomodel")})
    with pytest.raises(ConfigError, match=r"model\.path: no config\.json in .*nomodel"):
        build_plan(config_from_dict(raw))
    raw = _raw(tmp_path)
    raw["arms"]["warm"]["adapter"] = "tiny:adapter_9"
    cfg = config_from_dict(raw)
    with pytest.raises(ConfigError, match=r"arms\.warm\.adapter: 'tiny:adapter_9' names no tiny adapter"):
        build_plan(dataclasses.replace(cfg, output_dir=str(tmp_path / "x")))
