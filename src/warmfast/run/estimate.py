"""`warmfast run CONFIG --estimate`: the grid's expected hours on a card, before running it.

Work: every generation job of the plan (prompt rows x arms x samples, as run/plan.py builds them;
a task whose data is not on this machine is counted from its configured n, with a typical prompt
length, and says so), its prompt tokens (the model's tokenizer when its folder exists, else
~4 characters per token), its generated tokens (max_new_tokens as the upper bound; half of it
as the typical answer, as runner.chunk_size's note assumes) and, with a log-prob judge, the
tokens the judge scores (grader prompt + question + answer) for the grid tasks.
Speed: tokens/s per phase (scoring/prefill, generation at the batch size nearest the config's
runner.max_batch_size) from the bench records of that card (bench/results/e2e_*.json, written by
bench/gpu_check.sh); without a record for the card, REFERENCE figures of an H100/H200 from the
design (not measured), labelled as such in every line that uses them.
"""
from __future__ import annotations

import glob
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from warmfast.run.config import GRID_TASKS, ConfigError, resolve_text
from warmfast.run.plan import _capability_rows, _grid_rows, arm_messages, prepared_items
from warmfast.tasks.protocol import load_protocol_json

log = logging.getLogger("warmfast")

CHARS_PER_TOKEN = 4.0
TYPICAL_ANSWER_FRACTION = 0.5  # typical answer length / max_new_tokens (runner.chunk_size's ~150 of 300)
TYPICAL_PROMPT_TOKENS = 120  # a task whose data is not here (grid prompts: a question + a statement)
FULL_SIZES = {"disinfo": 125, "mmlu": 14042, "gsm8k": 1319, "advbench": 520}  # n: null = every item
GRID_CELLS = 28  # prompts per item in the study's grid (tasks/grid.py)
# Not measurements: the design's estimates for an H200 and the goals on an H100/H200 (issue 19),
# Llama-3.1-8B shape, bf16, base + 8 rank-16 adapters. Used only when no bench record of the card exists.
REFERENCE = {
    "H200 design estimate": {"score": 37500.0, "generate": {64: 6000.0, 256: 15000.0}},
    "H100/H200 goal": {"score": 45000.0, "generate": {64: 8000.0, 256: 25000.0}},
}
REFERENCE_DEFAULT = "H200 design estimate"


@dataclass
class Work:
    jobs: int = 0
    prompt_tokens: float = 0.0
    max_new_tokens: float = 0.0  # upper bound of generated tokens
    judge_tokens: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass
class Speed:
    score: float  # tokens/s of scoring / prefill
    generate: float  # tokens/s of generation at `batch`
    batch: int
    source: str  # the records used, or "REFERENCE ... (not measured)"
    measured: bool


def _tokens(config):
    """A token counter: the model's tokenizer when its folder is here, else ~4 characters per token."""
    path = Path(config.model.path)
    if (path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path))
        return (lambda text: len(tok(text).input_ids)), f"the tokenizer of {path}"
    return (lambda text: len(text) / CHARS_PER_TOKEN), f"~{CHARS_PER_TOKEN:.0f} characters per token (no tokenizer at {path})"


def grid_work(config) -> Work:
    """The plan's generation and judge work, without model weights or adapters."""
    protocol = load_protocol_json(config.protocol)
    count, how = _tokens(config)
    w = Work(notes=[f"prompt tokens counted with {how}"])
    judge = config.judge if config.judge.kind == "logprob" else None
    grader = count(resolve_text(judge.prompt, protocol, "judge.prompt")) if judge else 0.0
    for task in config.tasks:
        sampling = config.generation if task.name in GRID_TASKS else config.capability_generation
        arms = [a for a in config.arms if task.arms is None or a.name in task.arms]
        try:
            items = prepared_items(config, task)
            rows = (_grid_rows(config, task.name, items, config.protocol) if task.name in GRID_TASKS
                    else _capability_rows(config, task.name, items))
            lengths = [(count(r.text), count(r.judge_question)) for r in rows]
        except (ConfigError, OSError) as err:
            n = task.n if task.n is not None else FULL_SIZES.get(task.name)
            if n is None:
                raise ConfigError(f"--estimate: tasks.{task.name}: its data is not here ({err}) and "
                                  "n is null, so its size is unknown; set n or supply the data") from None
            cells = GRID_CELLS if task.name in GRID_TASKS else 1
            lengths = [(TYPICAL_PROMPT_TOKENS, TYPICAL_PROMPT_TOKENS / 4)] * (n * cells)
            w.notes.append(f"tasks.{task.name}: data not here, counted {n} items x {cells} prompts at "
                           f"{TYPICAL_PROMPT_TOKENS} prompt tokens each (assumption)")
        k = len(arms) * sampling.samples_per_prompt
        for prompt, question in lengths:
            for arm in arms:
                extra = 0.0
                if arm.kind == "system_prompt":
                    extra = count(arm_messages(arm, "", protocol)[0]["content"])
                w.prompt_tokens += (prompt + extra) * sampling.samples_per_prompt
            w.max_new_tokens += sampling.max_new_tokens * k
            if judge and task.name in GRID_TASKS:
                w.judge_tokens += (grader + question + TYPICAL_ANSWER_FRACTION * sampling.max_new_tokens) * k
        w.jobs += len(lengths) * k
    return w


def _records(folder: Path, card: str) -> tuple[list[dict], list[dict]]:
    score, gen = [], []
    for path in sorted(glob.glob(str(folder / "**" / "e2e_*.json"), recursive=True)):
        try:
            rec = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(rec, dict) or not rec.get("card") or card.lower() not in rec["card"].lower():
            continue
        rec["_path"] = path
        if rec.get("bench") == "e2e_score" and "tokens_per_s" in rec:
            score.append(rec)
        elif rec.get("bench") == "e2e_generate" and "tokens_per_s" in rec:
            gen.append(rec)
    return score, gen


def card_speed(card: str, batch: int, records: Path, reference: str = REFERENCE_DEFAULT) -> Speed:
    """Measured speeds of `card` from its bench records, or the labelled reference figures."""
    score, gen = _records(records, card)
    if score and gen:
        s = max(score, key=lambda r: r["date"])
        gap = min(abs(r.get("max_batch", r["rows"]) - batch) for r in gen)  # nearest batch size, newest run
        near = max((r for r in gen if abs(r.get("max_batch", r["rows"]) - batch) == gap), key=lambda r: r["date"])
        g = max(v for k, v in near["tokens_per_s"].items() if k in ("warmfast", "warmfast_cuda_graphs"))
        return Speed(s["tokens_per_s"]["warmfast"], g, near.get("max_batch", near["rows"]),
                     f"measured on {s['card']}: {Path(s['_path']).name}, {Path(near['_path']).name}", True)
    ref = REFERENCE[reference]
    b = min(ref["generate"], key=lambda k: abs(k - batch))
    return Speed(ref["score"], ref["generate"][b], b,
                 f"REFERENCE figures ({reference}, issue 19), NOT measured: no bench record of card "
                 f"{card!r} in {records}", False)


def estimate_lines(config, card: str, records: Path) -> list[str]:
    w = grid_work(config)
    sp = card_speed(card, config.runner.max_batch_size, records)
    typical = w.max_new_tokens * TYPICAL_ANSWER_FRACTION
    label = "" if sp.measured else " [REFERENCE, not measured]"

    def hours(gen_tokens: float) -> float:
        return ((w.prompt_tokens + w.judge_tokens) / sp.score + gen_tokens / sp.generate) / 3600

    lines = [f"estimate for {config.name} on {card}{label}",
             f"  speeds: scoring/prefill {sp.score:,.0f} tokens/s, generation {sp.generate:,.0f} tokens/s "
             f"at batch {sp.batch} (runner.max_batch_size {config.runner.max_batch_size}); {sp.source}",
             f"  work: {w.jobs:,} generation jobs, {w.prompt_tokens:,.0f} prompt tokens, "
             f"{typical:,.0f} generated tokens typical ({w.max_new_tokens:,.0f} at most), "
             f"{w.judge_tokens:,.0f} judge tokens",
             f"  expected: {hours(typical):.2f} h typical, {hours(w.max_new_tokens):.2f} h if every answer runs "
             f"to max_new_tokens{label}"]
    lines += [f"  note: {n}" for n in w.notes]
    lines.append(f"  note: typical answers are {TYPICAL_ANSWER_FRACTION:.0%} of max_new_tokens (assumption); "
                 "generation speed is the bench's (128 prompt + 128 new tokens)")
    return lines
