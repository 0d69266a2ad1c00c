"""The demo's grid step: configs/demo.yaml (tiny model, a few questions per task, all 28 prompt
variants, all four arms, the log-prob judge, the export) run into a folder of the caller's choice.

    from warmfast.run.demo_grid import run_demo_grid
    summary = run_demo_grid(outdir / "grid")      # resumable, like any `warmfast run`
    print("\\n".join(summary.lines()))
"""
from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from warmfast.run.config import ConfigError, load_config
from warmfast.run.runner import RunSummary, run


def demo_config_path() -> Path:
    """demo.yaml shipped in the package (warmfast/configs/), else the source checkout's configs/."""
    candidates = [Path(str(resources.files("warmfast").joinpath("configs", "demo.yaml"))),
                  Path(__file__).resolve().parents[3] / "configs" / "demo.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(f"demo config not found; looked in {[str(p) for p in candidates]}")


def run_demo_grid(out_dir: str | Path, config_path: str | Path | None = None, progress: bool = True) -> RunSummary:
    config = load_config(config_path or demo_config_path())
    return run(dataclasses.replace(config, output_dir=str(out_dir)), progress=progress)
