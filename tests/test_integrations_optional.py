"""The lm-eval and inspect_ai integrations are optional extras: importing warmfast, building its
command line and importing the integrations' light modules never imports either tool, and
`warmfast lm-eval` without lm-eval says how to install it. `arm=all` expands into one lm-eval run
per arm. None of these tests needs either extra."""
import argparse
import subprocess
import sys

import pytest

from warmfast.integrations.lm_eval_cli import arm_namespace, arm_runs

IMPORTS = """
import sys
import warmfast, warmfast.cli
warmfast.Engine
warmfast.cli.build_parser()
import warmfast.integrations, warmfast.integrations.engines, warmfast.integrations.lm_eval_cli
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('lm_eval', 'inspect_ai'))
assert not loaded, loaded
print('clean')
"""


def test_importing_warmfast_imports_neither_tool():
    out = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "clean", out.stderr[-2000:]


def test_inspect_entry_point_module_is_light():
    """inspect imports every package's entry point on any registry miss: warmfast's must not pull
    in torch or the engine."""
    pytest.importorskip("inspect_ai")
    code = ("import sys\nimport warmfast.integrations.inspect_provider\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('warmfast.engine'))\n"
            "assert not heavy, heavy[:5]\nprint('light')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "light", out.stderr[-2000:]


def test_lm_eval_command_without_lm_eval_says_how_to_install():
    code = ("import sys; sys.modules['lm_eval'] = None\n"
            "from warmfast.cli import main\nsys.exit(main(['lm-eval', '--model', 'warmfast']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2  # the CLI contract: one line, exit 2
    assert "pip install 'warmfast[lm-eval]'" in out.stderr


def test_arm_all_expands_into_one_run_per_arm():
    args = {"pretrained": "/m", "adapters": "warm:/a/warm|cold:/a/cold", "arm": "all", "max_length": 64}
    runs = arm_runs("warmfast", args, "out/")
    assert [arm for arm, _ in runs] == ["base", "warm", "cold"]
    assert runs[0][1] == {**args, "arm": "base", "all_arms": True}
    assert runs[2][1] == {**args, "arm": "cold", "all_arms": True, "peft": "/a/cold"}
    assert arm_runs("warmfast", {**args, "arm": "warm"}, None) is None
    assert arm_runs("hf", args, None) is None
    with pytest.raises(SystemExit, match=r"--output_path res.json is a file"):
        arm_runs("warmfast", args, "res.json")
    with pytest.raises(SystemExit, match=r"drop peft=/p"):
        arm_runs("warmfast", {**args, "peft": "/p"}, None)
    with pytest.raises(SystemExit, match=r"adapter 'warm' is named twice"):
        arm_runs("warmfast", {**args, "adapters": "warm:/a|warm:/b"}, None)


def test_each_arm_gets_its_own_response_cache():
    parsed = argparse.Namespace(model="warmfast", model_args={"arm": "all"}, use_cache="cache/run",
                                hf_hub_log_args={})
    one = arm_namespace(parsed, "warm", {"arm": "warm"})
    assert one.use_cache == "cache/run_warm" and one.model_args == {"arm": "warm"}
    assert parsed.use_cache == "cache/run" and parsed.model_args == {"arm": "all"}
    assert one.hf_hub_log_args is not parsed.hf_hub_log_args
    assert arm_namespace(argparse.Namespace(use_cache=None), "base", {}).use_cache is None
