"""A built wheel carries everything a non-editable install needs: the configs, the package data,
the Triton kernel files and the compiled extension, and `warmfast demo` runs from it."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # compiles warmfast._C once (about a minute on 2 cores)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # a copy of the tracked files (as a clone or an sdist has them), so no build/ or in-place _C of
    # this checkout can leak into the wheel
    src = out / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        dst = src / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / rel).is_file():
            dst.write_bytes((REPO / rel).read_bytes())
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (whl,) = out.glob("warmfast-*.whl")
    return whl


def test_wheel_carries_configs_data_kernels_and_extension(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.name for p in (REPO / "configs").glob("*.yaml")}
    assert configs and {f"warmfast/configs/{c}" for c in configs} <= names
    for rel in ("warmfast/data/tasks/protocol.json", "warmfast/data/tasks/gsm8k/test.jsonl",
                "warmfast/data/published/headline.json", "warmfast/data/demo/sharegpt_sample.json",
                "warmfast/kernels/__init__.py", "warmfast/kernels/common.py", "warmfast/kernels/lora.py"):
        assert rel in names, f"{wheel.name} lacks {rel}"
    assert any(n.startswith("warmfast/_C") and n.endswith((".so", ".pyd")) for n in names), sorted(names)[:20]
    assert not any(n.startswith(("kernels/", "tests/", "bench/")) for n in names)


def test_demo_runs_from_the_installed_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    env["PYTHONPATH"] = str(site)  # before site-packages: the wheel's warmfast, not this checkout's
    where = subprocess.run([sys.executable, "-c", "import warmfast, warmfast._C, warmfast.kernels.lora as k; "
                            "print(warmfast.__file__); print(warmfast._C.__file__); print(k.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert where.returncode == 0, where.stderr[-3000:]
    assert all(line.startswith(str(site)) for line in where.stdout.split()), where.stdout
    demo = subprocess.run([sys.executable, "-m", "warmfast", "demo", "--parts", "engine", "--outdir", str(tmp_path / "demo")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
