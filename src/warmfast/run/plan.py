"""Config -> plan: the grid's generation jobs, each keyed by the hash of its content.

For every task: its items come from the one library path, tasks/prepare.py `prepare_task` (load
the shipped data or the configured file, MedQA first-person rewrite, seeded sample, sycophancy-eval
answer pairs when configured, wrong answers), then its prompts are built (grid tasks: the 28-prompt
grid; capability tasks: the configured MMLU / GSM8K / AdvBench template). Every prompt becomes one job
per arm and sample. Jobs are ordered prompt-major, arm-minor, so each runner chunk holds every arm
of the same prompts and one engine.generate call serves them all in shared batches (the original
and system-prompt arms run with adapter=None).

A job's spec (what its key hashes) holds the model's and adapter's content fingerprints (not their
paths: moving a folder keeps results valid, changing a weight does not), the arm, the chat
messages, the sampling settings, the seed and request id, the task and the prompt's cell. Its meta
carries the study's export columns and what the judges need (question and reference answers).

build_plan also writes the plan's job keys to `<output_dir>/plan.json` (PLAN_MANIFEST): the store
keeps the jobs of every plan ever run in that folder (content keys), and the report's store reader
uses the manifest to tell the current plan's jobs from earlier plans' (analysis/store_reader.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warmfast.engine.api import GenerateRequest
from warmfast.model.adapter_config import AdapterError, canonical_config
from warmfast.model.tiny import build_tiny
from warmfast.run.config import (CAPABILITY_TASKS, GRID_TASKS, ArmSpec, ConfigError, RunConfig, SamplingSpec,
                                 resolve_text)
from warmfast.run.config import TaskSpec as ConfigTaskSpec
from warmfast.run.store import JobRecord, canonical_json, content_key
from warmfast.tasks.grid import CLEAN, COMPAT, build_grid
from warmfast.tasks.item import TaskDataError
from warmfast.tasks.prepare import TaskSpec, prepare_task
from warmfast.tasks.protocol import load_materials, load_protocol_json

if TYPE_CHECKING:
    from warmfast.tasks.item import Item
    from warmfast.tasks.prepare import TaskSpec as LibraryTaskSpec

log = logging.getLogger("warmfast.run")

PLAN_MANIFEST = "plan.json"
_MANIFEST_FORMAT = "warmfast-plan/1"


@dataclass(frozen=True)
class Plan:
    """jobs: in run order; model_dir / adapters: what the engine loads (adapter name = arm name);
    protocol: the protocol.json the run read."""

    config: RunConfig
    jobs: list[JobRecord]
    model_dir: Path
    adapters: dict[str, Path]
    model_id: str
    protocol: dict


# ---- identities ---------------------------------------------------------------------------------
def _sha_file(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        if limit is None:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(limit))
    return h.hexdigest()


def model_fingerprint(model_dir: Path) -> str:
    """Content identity of a model folder without reading all its weights: config.json, tokenizer
    files, and per safetensors file its size plus the hash of its first 4 MiB (header + leading
    tensors)."""
    parts = {}
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "generation_config.json"):
        if (model_dir / name).is_file():
            parts[name] = _sha_file(model_dir / name)
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights or "config.json" not in parts:
        raise ConfigError(f"model.path: {model_dir} is not a model folder (needs config.json and *.safetensors)")
    for w in weights:
        parts[w.name] = f"{w.stat().st_size}:{_sha_file(w, 4 << 20)}"
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _safetensors_content(path: Path, key: str) -> str:
    """SHA-256 of a safetensors file's tensors (name, dtype, shape, bytes), sorted by name: the
    same tensors saved again (another order, other metadata) hash the same."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        try:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{key}: {path} is not a readable safetensors file ({err})") from None
        base = 8 + n
        for name in sorted(k for k in header if k != "__metadata__"):
            t = header[name]
            begin, end = t["data_offsets"]
            f.seek(base + begin)
            data = f.read(end - begin)
            if len(data) != end - begin:
                raise ConfigError(f"{key}: {path} is truncated (tensor {name!r} needs bytes {begin}..{end} "
                                  f"of the data section, the file ends first)")
            h.update(canonical_json([name, t["dtype"], t["shape"]]).encode())
            h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def adapter_fingerprint(adapter_dir: Path, key: str) -> str:
    """Content identity of a PEFT adapter folder: its tensors' content and its canonical config
    (PEFT defaults filled in, lists sorted, provenance such as base_model_name_or_path left out;
    model/adapter_config.py `canonical_config`). Re-saving the same adapter keeps it."""
    conf_path = adapter_dir / "adapter_config.json"
    weights = [p for p in (adapter_dir / "adapter_model.safetensors", adapter_dir / "adapter_model.bin") if p.is_file()]
    if not conf_path.is_file() or not weights:
        raise ConfigError(f"{key}: {adapter_dir} is not a PEFT adapter folder (needs adapter_config.json "
                          "and adapter_model.safetensors)")
    try:
        conf = canonical_config(adapter_dir)
    except AdapterError as err:
        raise ConfigError(f"{key}: {err}") from None
    content = (_safetensors_content(weights[0], key) if weights[0].suffix == ".safetensors"
               else _sha_file(weights[0]))
    return content_key({"config": conf, "weights": content})


def request_id(task: str, key: str, cell: str, sample: int) -> int:
    """63-bit random-stream id of one prompt sample, the same for every arm: common random numbers."""
    digest = hashlib.sha256(f"{task}\x1f{key}\x1f{cell}\x1f{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _plain(value: Any) -> Any:
    """Item extras (mapping proxies, tuples) -> JSON-able values."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---- model and adapters -------------------------------------------------------------------------
def resolve_model(config: RunConfig) -> tuple[Path, dict[str, Path]]:
    """The model folder and {arm name: adapter folder}; builds the tiny model once when asked to."""
    spec = config.model
    tiny_adapters: dict[str, Path] = {}
    if spec.tiny is not None:
        tiny_dir = Path(config.output_dir) / "tiny_model"
        marker = tiny_dir / "built.json"
        if marker.is_file() and json.loads(marker.read_text()) == spec.tiny:
            model_dir = tiny_dir / "model"
            tiny_adapters = {p.name: p for p in sorted(tiny_dir.glob("adapter_*"))}
        else:
            try:
                paths = build_tiny(tiny_dir, **spec.tiny)
            except TypeError as err:
                raise ConfigError(f"model.tiny: {err}") from None
            marker.write_text(json.dumps(spec.tiny))
            model_dir, tiny_adapters = paths.model_dir, dict(paths.adapters)
    else:
        model_dir = Path(spec.path)
        if not (model_dir / "config.json").is_file():
            raise ConfigError(f"model.path: no config.json in {model_dir} (edit the placeholder path?)")
    adapters = {}
    for arm in config.arms:
        if arm.kind != "adapter":
            continue
        key = f"arms.{arm.name}.adapter"
        if arm.adapter.startswith("tiny:"):
            name = arm.adapter[len("tiny:"):]
            if name not in tiny_adapters:
                raise ConfigError(f"{key}: {arm.adapter!r} names no tiny adapter; built: {sorted(tiny_adapters)}")
            adapters[arm.name] = tiny_adapters[name]
        else:
            path = Path(arm.adapter)
            if not (path / "adapter_config.json").is_file():
                raise ConfigError(f"{key}: no adapter_config.json in {path} (edit the placeholder path?)")
            adapters[arm.name] = path
    return model_dir, adapters


# ---- prompts ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptRow:
    """One prompt before arms: its task, cell (context/prompt type or "capability"), user text,
    export columns, and what the judge needs."""

    task: str
    key: str
    cell: str
    text: str
    columns: dict
    judge_question: str
    judge_answers: list[str]


def _grid_rows(config: RunConfig, task, items, protocol_path) -> list[PromptRow]:
    """The 28-prompt grid of items that already carry their wrong answers (prepare_task)."""
    by_key = {it.key: it for it in items}
    layout = COMPAT if config.grid.layout == "compat" else CLEAN
    rows = []
    for gp in build_grid(items, load_materials(protocol_path), config.grid.statement_seed, layout):
        item = by_key[gp.key]
        rows.append(PromptRow(task, gp.key, f"{gp.amendment_type}|{gp.prompt_type}", gp.prompt,
                              _plain(gp.to_row()), item.question, list(item.correct_answers)))
    return rows


def _capability_rows(config: RunConfig, task: str, items) -> list[PromptRow]:
    template = getattr(config.prompts, task)
    rows = []
    for it in items:
        text = template.replace("{question}", it.question)
        cols: dict[str, Any] = {"task": task, "question_key": it.key, "question": it.question}
        if task == "mmlu":
            for letter, choice in zip("ABCD", it.extra["choices"]):
                text = text.replace("{" + letter + "}", choice)
                cols[letter] = choice
            cols.update(subject=it.extra["subject"], answer=it.extra["answer_letter"])
        elif task == "gsm8k":
            cols["answer"] = it.right_answer
        else:
            cols["target"] = it.extra.get("target")
        cols["prompt"] = text
        rows.append(PromptRow(task, it.key, "capability", text, cols, it.question, list(it.correct_answers)))
    return rows


def library_task_spec(config: RunConfig, task: ConfigTaskSpec) -> LibraryTaskSpec:
    """The tasks library's TaskSpec of one configured task: the run config's three seeds kept apart
    (tasks.<t>.sample_seed, grid.wrong_answer_seed, grid.relative_seed), n as configured (null =
    every item), MedQA vignettes that cannot be rewritten dropped before the sample is drawn."""
    return TaskSpec(task.name, path=task.path, n=task.n, sycophancy_eval=task.sycophancy_eval,
                    medqa_unconvertible="drop", sample_seed=task.sample_seed,
                    wrong_answer_seed=config.grid.wrong_answer_seed, relative_seed=config.grid.relative_seed)


def prepared_items(config: RunConfig, task: ConfigTaskSpec) -> list[Item]:
    """One configured task's items through the library path (tasks/prepare.py prepare_task): load,
    MedQA first-person rewrite, seeded sample, sycophancy-eval answer pairs, wrong answers."""
    try:
        prepared = prepare_task(library_task_spec(config, task))
    except TaskDataError as err:  # the message names the file (data path or answer.jsonl)
        raise ConfigError(f"tasks.{task.name}: {err}") from None
    if task.name == "medqa":
        log.info("medqa: %d vignettes rewritten, %d left out (cannot be rewritten)",
                 prepared.n_source - len(prepared.unconvertible), len(prepared.unconvertible))
    if task.sycophancy_eval is not None:
        n_pairs = sum(1 for it in prepared.items if it.extra.get("wrong_source") == "sycophancy_eval")
        log.info("%s: %d of %d sampled items take sycophancy-eval answer pairs from %s", task.name, n_pairs,
                 len(prepared.items), task.sycophancy_eval)
    return prepared.items


def prompt_rows(config: RunConfig) -> list[PromptRow]:
    rows = []
    for task in config.tasks:
        items = prepared_items(config, task)
        if task.name in GRID_TASKS:
            rows += _grid_rows(config, task.name, items, config.protocol)
        else:
            assert task.name in CAPABILITY_TASKS
            rows += _capability_rows(config, task.name, items)
    return rows


# ---- jobs ---------------------------------------------------------------------------------------
def _sampling(s: SamplingSpec) -> dict:
    return {"temperature": float(s.temperature), "max_new_tokens": s.max_new_tokens, "top_p": float(s.top_p),
            "top_k": s.top_k, "min_p": float(s.min_p), "stop": list(s.stop)}


def arm_messages(arm: ArmSpec, text: str, protocol: dict) -> list[dict]:
    msgs = [{"role": "user", "content": text}]
    if arm.kind == "system_prompt":
        system = resolve_text(arm.system_prompt, protocol, f"arms.{arm.name}.system_prompt")
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


def build_plan(config: RunConfig) -> Plan:
    protocol = load_protocol_json(config.protocol)
    model_dir, adapter_dirs = resolve_model(config)
    model_id = f"{config.model.name}@{model_fingerprint(model_dir)}"
    adapter_ids = {name: adapter_fingerprint(path, f"arms.{name}.adapter") for name, path in adapter_dirs.items()}
    task_arms = {t.name: [a for a in config.arms if t.arms is None or a.name in t.arms] for t in config.tasks}
    jobs = []
    for row in prompt_rows(config):
        sampling = config.generation if row.task in GRID_TASKS else config.capability_generation
        for sample in range(sampling.samples_per_prompt):
            rid = request_id(row.task, row.key, row.cell, sample)
            for arm in task_arms[row.task]:
                messages = arm_messages(arm, row.text, protocol)
                spec = {"model": model_id, "arm": arm.name, "arm_kind": arm.kind,
                        "adapter": adapter_ids.get(arm.name), "messages": messages,
                        "sampling": _sampling(sampling), "seed": sampling.seed, "request_id": rid,
                        "task": row.task, "key": row.key, "cell": row.cell, "sample": sample}
                meta = {**row.columns, "model": config.model.name, "arm": arm.name, "sample": sample,
                        "judge_question": row.judge_question, "judge_answers": row.judge_answers}
                jobs.append(JobRecord.from_spec("generate", config.model.name, arm.name, row.task, spec, meta))
    plan = Plan(config, jobs, model_dir, adapter_dirs, model_id, protocol)
    write_plan_manifest(plan)
    return plan


# ---- the plan's manifest in the run folder --------------------------------------------------------
def plan_job_keys(plan: Plan) -> dict[str, list[str]]:
    """{task: job keys of that task, in plan order}."""
    out: dict[str, list[str]] = {}
    for j in plan.jobs:
        out.setdefault(j.task, []).append(j.key)
    return out


def write_plan_manifest(plan: Plan) -> Path:
    """Write <output_dir>/plan.json: {"format", "name", "n_jobs", "jobs": {task: [keys]}}. Atomic
    (temporary file + rename), so data-parallel ranks planning at once leave one whole file."""
    out_dir = Path(plan.config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = {"format": _MANIFEST_FORMAT, "name": plan.config.name, "n_jobs": len(plan.jobs),
            "jobs": plan_job_keys(plan)}
    fd, tmp = tempfile.mkstemp(prefix=f".{PLAN_MANIFEST}.", suffix=".tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, separators=(",", ":"))
        os.replace(tmp, out_dir / PLAN_MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_dir / PLAN_MANIFEST


def read_plan_manifest(run_dir: str | Path) -> dict[str, list[str]] | None:
    """{task: job keys} of the plan last built for run_dir, or None when it has no plan.json (a run
    folder made before plans were recorded). A malformed file is an error naming it."""
    path = Path(run_dir) / PLAN_MANIFEST
    if not path.is_file():
        return None
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    jobs = body.get("jobs") if isinstance(body, dict) else None
    if (not isinstance(body, dict) or body.get("format") != _MANIFEST_FORMAT or not isinstance(jobs, dict)
            or not all(isinstance(k, list) and all(isinstance(x, str) for x in k) for k in jobs.values())):
        raise ValueError(f"{path}: not a warmfast plan manifest (expected format {_MANIFEST_FORMAT!r} with "
                         f"jobs: {{task: [keys]}}, got format {body.get('format') if isinstance(body, dict) else body!r})")
    return jobs


def generate_request(job: JobRecord):
    """The engine request of a job, built from its spec alone (adapter name = arm name)."""
    s, sampling = job.spec, job.spec["sampling"]
    return GenerateRequest(messages=s["messages"], adapter=s["arm"] if s["adapter"] is not None else None,
                           max_new_tokens=sampling["max_new_tokens"], temperature=sampling["temperature"],
                           top_p=sampling["top_p"], top_k=sampling["top_k"], min_p=sampling["min_p"],
                           seed=s["seed"], stop=list(sampling["stop"]), request_id=s["request_id"])
