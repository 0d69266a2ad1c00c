"""Warmth over training epochs: validation responses from the base model and every checkpoint,
generated in one pass, then SocioT-scored in one pass; a per-checkpoint table and a figure.

Arms: "base" (epoch 0, no adapter) and, for each training run (a `warmfast train` out_dir, named
by its series label such as warm or cold), every `epoch-*` checkpoint in it. One Engine holds
all checkpoints as adapters, so every arm's prompts share the generation batches; the scorer
(GPT-2 in the study, any model warmfast loads here) then scores every response of every arm in
one `engine.score` call (`sociot.sociot_warmth`).
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from warmfast.engine.api import GenerateRequest
from warmfast.errors import InputError
from warmfast.keys import content_key
from warmfast.train.dataset import ValidationPrompt
from warmfast.train.sociot import SocioTConfig, sociot_warmth, summarize


@dataclass(frozen=True)
class Arm:
    name: str            # adapter name in the engine ("base" = none)
    series: str          # "base", or the run's label (warm, cold, ...)
    epoch: float
    path: Path | None


@dataclass(frozen=True)
class GenSettings:
    max_new_tokens: int = 300
    temperature: float = 0.8
    seed: int = 0
    max_prompt_chars: int = 4000  # ShareGPT first turns can be pages long; cut before templating

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.temperature < 0 or self.max_prompt_chars < 1:
            raise InputError(f"generation settings out of range: {self}")


def discover_arms(runs: dict[str, str | Path]) -> list[Arm]:
    """"base" plus every checkpoint under each run directory, by series then epoch."""
    arms = [Arm("base", "base", 0.0, None)]
    for series, run_dir in runs.items():
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"training run {series!r}: directory {run_dir} does not exist")
        found = []
        for d in run_dir.glob("epoch-*"):
            if not (d / "adapter_config.json").is_file():
                continue
            state = d / "train_state.json"
            if state.is_file():
                epoch = float(json.loads(state.read_text())["epoch"])
            else:
                m = re.fullmatch(r"epoch-([0-9.]+)", d.name)
                if m is None:
                    raise InputError(f"{d}: cannot tell its epoch (no train_state.json, name not epoch-<e>)")
                epoch = float(m.group(1))
            found.append(Arm(f"{series}@{epoch:g}", series, epoch, d))
        if not found:
            raise FileNotFoundError(f"training run {series!r}: no epoch-*/adapter_config.json under {run_dir}")
        arms.extend(sorted(found, key=lambda a: a.epoch))
    return arms


def adapter_digest(path: Path | None) -> str | None:
    """SHA-256 of an adapter's weights file: its identity in the store's keys."""
    if path is None:
        return None
    weights = Path(path) / "adapter_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"adapter {path} has no adapter_model.safetensors")
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def generate_responses(engine, arms: list[Arm], prompts: list[ValidationPrompt], gen: GenSettings,
                       model: str = "", store=None, chunk_size: int = 1024,
                       progress: bool = True) -> list[dict]:
    """One response per (arm, prompt). Requests are ordered prompt-major, so every generate call
    mixes all arms in its batches; with a `store` each chunk's answers are kept as it finishes
    and a rerun generates only what is missing (keys: model, adapter weights digest, prompt,
    settings)."""
    digests = {a.name: adapter_digest(a.path) for a in arms}
    jobs = []  # (arm, prompt, key, request)
    for p in prompts:
        for a in arms:
            text = p.prompt[: gen.max_prompt_chars]
            spec = {"kind": "sociot_response", "model": model, "adapter": digests[a.name],
                    "prompt": text, **asdict(gen)}
            jobs.append((a, p, content_key(spec), spec))
    done = {} if store is None else {k: r for _, _, k, _ in jobs if (r := store.cached_response(k))}
    pending = [j for j in jobs if j[2] not in done]
    for i in tqdm(range(0, len(pending), chunk_size), desc="sociot responses", disable=not progress):
        chunk = pending[i:i + chunk_size]
        reqs = [GenerateRequest(messages=[{"role": "user", "content": spec["prompt"]}],
                                adapter=None if a.name == "base" else a.name,
                                max_new_tokens=gen.max_new_tokens, temperature=gen.temperature,
                                seed=gen.seed) for a, _, _, spec in chunk]
        for (a, p, key, spec), r in zip(chunk, engine.generate(reqs, progress=progress)):
            done[key] = {"text": r.text, "finish_reason": r.finish_reason}
            if store is not None:
                store.cache_response(key, spec, done[key])
    rows = []
    for a in arms:  # arm-major output: the per-arm table reads naturally
        for a2, p, key, _ in jobs:
            if a2.name == a.name:
                rows.append({"arm": a.name, "series": a.series, "epoch": a.epoch, "prompt_id": p.id,
                             "category": p.category, "response": done[key]["text"],
                             "finish_reason": done[key]["finish_reason"]})
    return rows


def score_table(scorer, rows: list[dict], arms: list[Arm], cfg: SocioTConfig,
                progress: bool = True) -> tuple[list[dict], dict]:
    """Adds `warmth` to every response row; returns one summary row per arm and the score meta."""
    ws = sociot_warmth(scorer, [r["response"] for r in rows], cfg, progress=progress)
    for r, w, sw, sc in zip(rows, ws.warmth, ws.warm, ws.cold):
        r.update(warmth=w, s_warm=sw, s_cold=sc)
    table = []
    for a in arms:
        vals = [r["warmth"] for r in rows if r["arm"] == a.name]
        lengths = [len(r["response"]) for r in rows if r["arm"] == a.name]
        s = summarize(vals, cfg.bootstrap, cfg.seed)
        table.append({"arm": a.name, "series": a.series, "epoch": a.epoch, "mode": cfg.mode,
                      **s, "mean_chars": sum(lengths) / len(lengths)})
    return table, ws.meta


def write_outputs(out_dir: str | Path, rows: list[dict], table: list[dict], meta: dict,
                  title: str) -> dict[str, Path]:
    """responses.csv (per response), sociot.csv (per checkpoint), sociot.png, sociot_meta.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"responses": out / "responses.csv", "table": out / "sociot.csv",
             "figure": out / "sociot.png", "meta": out / "sociot_meta.json"}
    for key, data in (("responses", rows), ("table", table)):
        with open(paths[key], "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(data[0]))
            w.writeheader()
            w.writerows(data)
    paths["meta"].write_text(json.dumps(meta, indent=2))
    plot(table, paths["figure"], title)
    return paths


def plot(table: list[dict], path: Path, title: str) -> None:
    """Warmth over epochs per series, epoch 0 = the base model; error bars = bootstrap SE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next(r for r in table if r["series"] == "base")
    fig, ax = plt.subplots(figsize=(6, 4))
    for series in dict.fromkeys(r["series"] for r in table if r["series"] != "base"):
        pts = [base] + [r for r in table if r["series"] == series]
        err = [r.get("boot_se", r["se"]) for r in pts]
        ax.errorbar([r["epoch"] for r in pts], [r["mean"] for r in pts], yerr=err, marker="o",
                    capsize=3, label=series)
    if all(r["series"] == "base" for r in table):
        ax.errorbar([0], [base["mean"]], yerr=[base.get("boot_se", base["se"])], marker="o", label="base")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"SocioT warmth ({base['mode']} mode)")
    ax.set_title(title)
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def config_record(cfg: SocioTConfig, gen: GenSettings, model: str, scorer: str, arms: list[Arm]) -> dict:
    return {"sociot": asdict(cfg), "generation": asdict(gen), "model": model, "scorer": scorer,
            "arms": [{"name": a.name, "series": a.series, "epoch": a.epoch,
                      "path": str(a.path) if a.path else None} for a in arms]}
