"""Run configs: the shipped YAML files load, malformed configs give errors naming the key."""
from pathlib import Path

import pytest
import yaml

from warmfast.run.config import ConfigError, GRID_TASKS, config_from_dict, load_config, resolve_text

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _base() -> dict:
    return {"name": "t", "output_dir": "out",
            "model": {"name": "m", "path": "/models/m"},
            "arms": {"original": {"kind": "original"}, "warm": {"kind": "adapter", "adapter": "/a/warm"},
                     "warm_sysprompt": {"kind": "system_prompt", "system_prompt": "protocol:rewrite_system_prompts.warm"}},
            "tasks": {"triviaqa": {"n": 5}, "mmlu": None}}


def test_a_minimal_config_gets_the_protocol_defaults():
    cfg = config_from_dict(_base())
    assert [a.name for a in cfg.arms] == ["original", "warm", "warm_sysprompt"]
    assert [(t.name, t.n) for t in cfg.tasks] == [("triviaqa", 5), ("mmlu", None)]
    assert cfg.generation.temperature == 0.8 and cfg.generation.max_new_tokens == 300
    assert cfg.capability_generation.temperature == 0.2
    assert cfg.judge.kind == "logprob" and cfg.judge.prompt == "protocol:sharma_grader_prompt"
    assert cfg.grid.layout == "clean" and cfg.export == ["csv", "parquet"]


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model"].pop("path"), r"model\.path: give exactly one of path"),
    (lambda c: c.update(tasks={"triviaqa": {"n": 0}}), r"tasks\.triviaqa\.n: must be a positive integer"),
    (lambda c: c.update(tasks={"trivia": {}}), r"tasks\.trivia\.name: unknown task 'trivia'"),
    (lambda c: c["arms"]["warm"].pop("adapter"), r"arms\.warm\.adapter: an arm of kind 'adapter' needs adapter"),
    (lambda c: c["arms"].update(bad={"kind": "lora"}), r"arms\.bad\.kind: must be one of"),
    (lambda c: c.update(generation={"temprature": 0.5}), r"generation\.temprature: unknown key"),
    (lambda c: c.update(generation={"temperature": -1}), r"generation\.temperature: must be a number"),
    (lambda c: c.update(generation={"max_new_tokens": "300"}), r"generation\.max_new_tokens: must be int"),
    (lambda c: c.update(judge={"kind": "openai", "model": "gpt-4o"}), r"judge\.base_url: the openai judge needs"),
    (lambda c: c.update(judge={"kind": "gpt"}), r"judge\.kind: must be one of"),
    (lambda c: c.update(grid={"layout": "exact"}), r"grid\.layout: must be clean or compat"),
    (lambda c: c.update(export=["xlsx"]), r"export: formats must be among"),
    (lambda c: c.pop("arms"), r"arms: required key is missing"),
    (lambda c: c.pop("output_dir"), r"output_dir: required key is missing"),
    (lambda c: c["tasks"].update(mmlu={"arms": ["cold"]}), r"tasks\.mmlu\.arms: unknown arm 'cold'"),
    (lambda c: c["model"].update(dtype="fp8"), r"model\.dtype: must be one of auto, float32, bfloat16, float16, got 'fp8'"),
])
def test_malformed_configs_name_the_key(edit, message):
    raw = _base()
    edit(raw)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw, "x.yaml")


def test_errors_start_with_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    raw = _base()
    raw["runner"] = {"chunk_size": -3}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"^{path}: runner\.chunk_size: must be a positive integer, got -3"):
        load_config(path)
    raw["runner"] = {"cuda_graphs": "yes"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"runner\.cuda_graphs"):
        load_config(path)
    path.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="run config not found"):
        load_config(tmp_path / "absent.yaml")


def test_protocol_references():
    protocol = {"a": {"b": "text"}}
    assert resolve_text("protocol:a.b", protocol, "k") == "text"
    assert resolve_text("plain words", protocol, "k") == "plain words"
    with pytest.raises(ConfigError, match=r"k: 'protocol:a.c' names no entry"):
        resolve_text("protocol:a.c", protocol, "k")


@pytest.mark.parametrize("name", ["paper.yaml", "demo.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    kinds = {a.kind for a in cfg.arms}
    assert kinds == {"original", "adapter", "system_prompt"}
    assert {t.name for t in cfg.tasks} == set(GRID_TASKS) | {"mmlu", "gsm8k", "advbench"}


def test_paper_config_holds_the_protocol_values():
    cfg = load_config(CONFIGS / "paper.yaml")
    sizes = {t.name: t.n for t in cfg.tasks}
    assert sizes == {"triviaqa": 500, "truthfulqa": 500, "disinfo": None, "medqa": 500,
                     "mmlu": None, "gsm8k": None, "advbench": None}
    assert cfg.judge.kind == "logprob" and cfg.judge.prompt == "protocol:sharma_grader_prompt"
    assert cfg.generation.temperature == 0.8 and cfg.generation.max_new_tokens == 300
    assert cfg.capability_generation.temperature == 0.2
    assert {a.name for a in cfg.arms} == {"original", "warm", "cold", "warm_sysprompt"}
    assert cfg.judge.temperature == 0.0


def test_cli_reports_a_malformed_config_and_exits_2(tmp_path, capsys):
    from warmfast.cli import main

    raw = _base()
    raw["judge"] = {"kind": "logprob", "verdicts": ["CORRECT"]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--no-progress"]) == 2
    assert f"{path}: judge.verdicts: must be a list of two words" in capsys.readouterr().err
    raw["judge"] = "judges/absent.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["judge", str(path), "--no-progress"]) == 2
    assert "judge: file not found" in capsys.readouterr().err
