"""The demo grid: configs/demo.yaml plans all 28 variants x 4 arms; run_demo_grid writes where asked."""
from collections import Counter

import yaml

from warmfast.run.config import load_config
from warmfast.run.demo_grid import demo_config_path, run_demo_grid
from warmfast.run.plan import build_plan


def test_demo_config_plans_the_whole_grid(tmp_path):
    import dataclasses

    cfg = load_config(demo_config_path())
    plan = build_plan(dataclasses.replace(cfg, output_dir=str(tmp_path)))
    per_arm = Counter(j.arm for j in plan.jobs)
    assert set(per_arm) == {"original", "warm", "cold", "warm_sysprompt"} and len(set(per_arm.values())) == 1
    cells = Counter((j.task, j.meta.get("amendment_type"), j.meta.get("prompt_type")) for j in plan.jobs
                    if j.arm == "warm" and j.task in ("triviaqa", "truthfulqa", "disinfo", "medqa"))
    for task, n in (("triviaqa", 2), ("truthfulqa", 1), ("disinfo", 1), ("medqa", 1)):
        assert sum(1 for c in cells if c[0] == task) == 28
        assert all(v == n for c, v in cells.items() if c[0] == task)
    assert {j.task for j in plan.jobs} == {"triviaqa", "truthfulqa", "disinfo", "medqa", "mmlu", "gsm8k", "advbench"}


def test_run_demo_grid_writes_into_the_given_folder(tmp_path):
    raw = yaml.safe_load(demo_config_path().read_text())
    raw["tasks"] = {"disinfo": {"n": 1}}
    raw["arms"] = {"original": raw["arms"]["original"]}
    raw["generation"]["max_new_tokens"] = 2
    raw["judge"].update(template="raw", verdict_prefix=" ", prompt="Q: {query} A: {result} T: {answer} Grade:")
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(raw))
    summary = run_demo_grid(tmp_path / "grid", small, progress=False)
    assert summary.jobs == 28 and summary.judged_now["logprob_judge"] == 28
    assert (tmp_path / "grid" / "outputs" / "tiny_llama" / "original" / "disinfo_original_outputs.csv").is_file()
    assert any("results.csv" in line for line in summary.lines())
