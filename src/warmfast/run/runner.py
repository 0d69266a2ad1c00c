"""Run a study grid: plan -> generate (continuous, resumable) -> judge (resumable) -> export.

Resumption: every job and judgement is keyed by its content. Generation feeds the engine core
continuously (engine/core.py): jobs are added in plan order while fewer than two batches' worth
are unfinished, and every step's finished generations are one store transaction, so the batch
stays full while work remains and a kill at any point loses at most the requests in flight
(tokens do not depend on what shares a batch: Philox-keyed sampling). The plan's job list is still
cut into fixed chunks (by position in the plan, not by what is left): they are what shards are
made of, and judging batches are cut inside them, so a resumed run judges in exactly the batches
an uninterrupted run would have. Nothing finished is ever recomputed.

Many GPUs or nodes (data parallel): launch one `warmfast run CONFIG --shard env` per rank (torchrun
sets RANK, WORLD_SIZE, LOCAL_RANK); rank r takes the chunks whose content hash names it
(run/shard.py) into its own store file store.shard<r>of<world>.sqlite. A final `warmfast run CONFIG`
merges the shard stores (content keys make the merge idempotent), fills any gap and exports.

Tensor parallel: `model.tensor_parallel: T` (or --tensor-parallel T) splits the model over T ranks
inside the engine (engine/tensor_parallel.py); the runner sees one engine either way. Under
torchrun each data-parallel process's engine takes its own T GPUs (cuda:LOCAL_RANK*T onwards).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from warmfast.engine import prepare
from warmfast.engine.api import Engine
from warmfast.engine.core import CoreConfig, EngineCore
from warmfast.errors import RequestError
from warmfast.model.parallel import rank_device
from warmfast.run.config import ConfigError, RunConfig
from warmfast.run.export import export_rows
from warmfast.run.judging import Stage, build_stages, carry_over
from warmfast.run.lock import RunLock
from warmfast.run.plan import Plan, adapter_fingerprint, build_plan, generate_request, model_fingerprint
from warmfast.run.shard import rank_chunks
from warmfast.run.signals import GracefulStop
from warmfast.run.store import Generation, JobRecord, Judgement, Store, StoreError, judgement_key

log = logging.getLogger("warmfast.run")


@dataclass
class RunSummary:
    out_dir: Path
    store_path: Path
    jobs: int
    generated_now: int
    tokens_now: int
    generate_seconds: float
    judged_now: dict[str, int] = field(default_factory=dict)
    unjudged: dict[str, int] = field(default_factory=dict)
    exported: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        rate = self.tokens_now / self.generate_seconds if self.generate_seconds > 0 else 0.0
        out = [f"jobs: {self.jobs} (generated now: {self.generated_now}, {self.tokens_now} tokens, "
               f"{rate:.1f} tokens/s)", f"store: {self.store_path}"]
        for name, n in self.judged_now.items():
            out.append(f"judge {name}: {n} new verdicts" + (f", {self.unjudged[name]} without a verdict"
                                                             if self.unjudged.get(name) else ""))
        out += [f"wrote {p}" for p in self.exported[:3]]
        if len(self.exported) > 3:
            out.append(f"... and {len(self.exported) - 3} per-(model, arm, task) files under {self.out_dir}")
        return out


def _chunks(jobs: list, size: int) -> list[list]:
    return [jobs[i:i + size] for i in range(0, len(jobs), size)]


def plan_chunks(plan: Plan, shard: tuple[int, int] | None = None) -> list[list[JobRecord]]:
    """The plan's fixed generation chunks (cut by position in the full plan), or those of one shard:
    a chunk belongs to the rank its content hash names (run/shard.py). Judging is cut inside these
    chunks too, so a batch's composition never depends on what was done before a kill or on which
    rank runs it."""
    chunks = _chunks(plan.jobs, plan.config.runner.chunk_size)
    if shard is None:
        return chunks
    rank, world = shard
    return rank_chunks(chunks, rank, world)


class EngineHolder:
    """Loads the generation engine (base model + every adapter arm) once, on first use."""

    def __init__(self, plan: Plan):
        self.plan, self.engine = plan, None
        # one process per GPU (or per group of tensor_parallel GPUs) under torchrun
        self.device = plan.config.model.device
        if plan.config.model.tensor_parallel == 1:
            self.device = rank_device(self.device)  # "cuda" is cuda:LOCAL_RANK

    def get(self):
        if self.engine is None:
            m = self.plan.config.model
            self.engine = Engine.from_pretrained(
                str(self.plan.model_dir), adapters={k: str(v) for k, v in self.plan.adapters.items()},
                device=self.device, dtype=m.dtype, backend=m.backend, max_batch_tokens=m.max_batch_tokens,
                max_seq_len=m.max_seq_len, tensor_parallel=m.tensor_parallel)
        return self.engine

    def release(self) -> None:
        """Free the generation engine (and stop its tensor-parallel workers)."""
        if self.engine is not None:
            self.engine.close()
        self.engine = None


def generate(chunks: list[list[JobRecord]], plan: Plan, store: Store, engines: EngineHolder,
             progress: bool, stop: GracefulStop | None = None) -> tuple[int, int, float]:
    """Generate every job without a stored generation; returns (jobs done now, tokens, seconds).
    stop: after each commit, a pending SIGINT/SIGTERM ends the run (run/signals.py)."""
    total = sum(len(c) for c in chunks)
    done = store.done_generations(j.key for c in chunks for j in c)
    if len(done) == total:
        return 0, 0, 0.0
    bar = tqdm(total=total, initial=len(done), unit="job", desc="generate", disable=not progress,
               dynamic_ncols=True)
    try:
        return _generate_continuous([j for c in chunks for j in c if j.key not in done], plan, store,
                                    engines.get(), len(done), total, bar, stop)
    finally:
        bar.close()


def _job_error(j: JobRecord, err: RequestError) -> RequestError:
    """The engine's error about a request, naming the job instead of the request's position."""
    msg = str(err).split(": ", 1)[-1]
    return RequestError(f"task {j.task}, arm {j.arm}, job {j.key[:12]}: {msg}")


def _generate_continuous(todo: list[JobRecord], plan: Plan, store: Store, engine, n_done: int, total: int,
                         bar, stop: GracefulStop | None) -> tuple[int, int, float]:
    cfg = plan.config.runner
    reqs = [generate_request(j) for j in todo]
    max_lens = None
    if engine.device.type == "cpu":  # a CPU pool is sized for the longest jobs (CUDA: free memory)
        max_lens = []
        for i, (j, r) in enumerate(zip(todo, reqs)):
            try:
                max_lens.append(len(prepare.generation(engine, r, f"job {i}").prompt) + r.max_new_tokens - 1)
            except RequestError as err:
                raise _job_error(j, err) from err
    window = 2 * cfg.max_batch_size  # unfinished requests kept in the core: a batch running, one waiting
    n_jobs = n_tok = 0
    t0 = time.perf_counter()
    with EngineCore(engine, CoreConfig(max_batch_size=cfg.max_batch_size, cuda_graphs=cfg.cuda_graphs),
                    max_lens=max_lens) as core:
        nxt = 0
        while nxt < len(todo) or core.has_unfinished():
            while nxt < len(todo) and core.num_unfinished < window:
                try:
                    core.add_request(reqs[nxt], request_id=nxt)
                except RequestError as err:
                    raise _job_error(todo[nxt], err) from err
                nxt += 1
            finished = [o for o in core.step() if o.finished]
            if not finished:
                continue
            gens = [Generation(todo[o.request_id].key, o.result.text, list(o.result.token_ids),
                               o.result.finish_reason, len(o.result.token_ids)) for o in finished]
            store.add_generations(gens)  # one transaction: these jobs are now safe
            n_jobs += len(gens)
            n_tok += sum(g.num_tokens for g in gens)
            steps = sum(core.steps.values())
            bar.update(len(gens))
            bar.set_postfix_str(f"{n_tok / (time.perf_counter() - t0):.1f} tok/s, batch "
                                f"{core.batch_rows / (steps * cfg.max_batch_size):.0%} full")
            if stop is not None and stop.signum is not None:
                bar.close()
                stop.check("generation", n_done + n_jobs, total)
    return n_jobs, n_tok, time.perf_counter() - t0


def judge(chunks: list[list[JobRecord]], plan: Plan, store: Store, stages: list[Stage],
          progress: bool, stop: GracefulStop | None = None) -> tuple[dict, dict, dict]:
    """Run every stage over the jobs it covers that have a generation and no verdict yet.

    Returns ({stage: new verdicts}, {stage: verdicts that are None}, {(role, job key): judgement key})."""
    size = plan.config.runner.judge_chunk_size
    new, unjudged, keymap = {}, {}, {}
    for stage in stages:
        gens = store.generations((j.key for c in chunks for j in c if j.task in stage.tasks), with_tokens=False)
        # judge batches: this stage's jobs of each generation chunk, cut into judge_chunk_size
        batches = [b for c in chunks for b in _chunks([j for j in c if j.task in stage.tasks and j.key in gens], size)]
        keys = {j.key: judgement_key(j.key, stage.role, stage.spec, gens[j.key].text) for b in batches for j in b}
        for job_key, k in keys.items():
            keymap[(stage.role, job_key)] = k
        have = store.judgements(keys.values())
        if stage.legacy_specs:  # verdicts stored under an earlier key format (run/judging.py)
            have.update(carry_over(stage, store, keys, gens, have))
        todo = [[j for j in b if keys[j.key] not in have] for b in batches]
        n_todo = sum(len(b) for b in todo)
        bar = tqdm(total=len(keys), initial=len(keys) - n_todo, unit="answer", desc=stage.name,
                   disable=not progress or not n_todo, dynamic_ncols=True)
        n_done = len(keys) - n_todo
        for batch in todo:
            if not batch:
                continue
            verdicts = stage.judge([(j, gens[j.key]) for j in batch], store)
            store.add_judgements([  # one transaction per batch
                Judgement(keys[j.key], j.key, stage.role, stage.judge_name, v.verdict, v.score, v.confidence, v.detail)
                for j, v in zip(batch, verdicts)])
            bar.update(len(batch))
            n_done += len(batch)
            if stop is not None and stop.signum is not None:
                bar.close()
                stop.check(stage.name, n_done, len(keys))
        bar.close()
        new[stage.name] = n_todo
        stored = store.judgements(keys.values())
        unjudged[stage.name] = sum(1 for k in keys.values() if k in stored and stored[k].verdict is None)
    return new, unjudged, keymap


def export(plan: Plan, store: Store, keymap: dict, out_dir: Path) -> list[Path]:
    gens = store.generations((j.key for j in plan.jobs), with_tokens=False)
    judged = store.judgements(keymap.values())
    rows = []
    for j in plan.jobs:
        if j.key not in gens:
            continue
        g = gens[j.key]
        ev = judged.get(keymap.get(("evaluation", j.key)) or keymap.get(("capability", j.key), ""))
        rf = judged.get(keymap.get(("refusal", j.key), ""))
        rows.append({**j.meta, "output": g.text,
                     "evaluation": None if ev is None else ev.verdict,
                     "refusal": None if rf is None else int(rf.score),
                     "judge_confidence": None if ev is None else ev.confidence,
                     "judge": None if ev is None else ev.judge,
                     "finish_reason": g.finish_reason, "num_tokens": g.num_tokens,
                     "model": j.model, "arm": j.arm, "task": j.task})
    return export_rows(rows, out_dir, plan.config.export)


def shard_store_name(rank: int, world: int) -> str:
    return f"store.shard{rank}of{world}.sqlite"


def run(config: RunConfig, progress: bool = True, generate_only: bool = False,
        skip_generation: bool = False, shard: tuple[int, int] | None = None) -> RunSummary:
    """The whole run. skip_generation: judge and export what is stored (`warmfast judge`).

    shard=(rank, world): generate and judge only this rank's chunks into its own store file
    (`store.shard<rank>of<world>.sqlite`), no export. A later run without shard merges every shard
    store of the run folder into store.sqlite, computes whatever is still missing, and exports."""
    out_dir = Path(config.output_dir)
    if shard is not None:
        rank, world = shard
        if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world):
            raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard!r}")
    store_path = out_dir / (shard_store_name(*shard) if shard else "store.sqlite")
    make_run_folder(out_dir)
    with RunLock(store_path):  # a second run on this store refuses (run/lock.py)
        plan = build_plan(config)
        chunks = plan_chunks(plan, shard)
        with GracefulStop() as stop:  # Ctrl-C / SIGTERM: stop after the current commit
            return _run(plan, chunks, store_path, out_dir, generate_only, skip_generation, shard,
                        progress, stop)


def make_run_folder(out_dir: Path) -> None:
    """Create the run folder; a path that cannot be one is a StoreError naming it."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StoreError(f"output_dir {out_dir}: a file, not a folder (or a file is in its path)") from None
    except PermissionError:
        raise StoreError(f"output_dir {out_dir}: cannot create it (permission denied)") from None
    if not os.access(out_dir, os.W_OK):
        raise StoreError(f"output_dir {out_dir}: not writable (permission denied); a run writes its store there")


def _run(plan: Plan, chunks, store_path: Path, out_dir: Path, generate_only: bool, skip_generation: bool,
         shard, progress: bool, stop: GracefulStop) -> RunSummary:
    config = plan.config
    store = Store(store_path)
    engines = None
    try:
        if shard is None:
            for part in sorted(out_dir.glob("store.shard*of*.sqlite")):
                added = store.merge_from(part)
                log.info("merged %s: %s", part.name, added)
        store.add_jobs(j for c in chunks for j in c)
        engines = EngineHolder(plan)
        # judges are set up (paths, fingerprints, API key variable) before hours of generation,
        # so a wrong judge setting fails now; their models load only when used
        stages = None if generate_only else build_stages(config, plan.protocol, *_judge_engine(plan, engines))
        n_gen = n_tok = 0
        secs = 0.0
        if not skip_generation:
            n_gen, n_tok, secs = generate(chunks, plan, store, engines, progress, stop)
        summary = RunSummary(out_dir, store.path, sum(len(c) for c in chunks), n_gen, n_tok, secs)
        if generate_only:
            return summary
        summary.judged_now, summary.unjudged, keymap = judge(chunks, plan, store, stages, progress, stop)
        if shard is None:
            summary.exported = export(plan, store, keymap, out_dir)
        return summary
    finally:
        store.close()
        if engines is not None:
            engines.release()  # the engine's memory, and its tensor-parallel workers, go now


def _judge_engine(plan: Plan, engines: EngineHolder):
    """(a loader of the log-prob judge's engine, the judge model's identity)."""
    j = plan.config.judge
    if j.kind != "logprob":
        return (lambda: None), ""
    if j.model == "generation":
        ident = plan.model_id + (f"+{j.adapter}:{adapter_fingerprint(plan.adapters[j.adapter], 'judge.adapter')}"
                                 if j.adapter else "")
        return engines.get, ident

    model_dir = Path(j.model)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"judge.model: no config.json in {model_dir} (a model folder, or 'generation')")
    ident = f"{model_dir.name}@{model_fingerprint(model_dir)}"
    if j.adapter:
        ident += f"+{adapter_fingerprint(Path(j.adapter), 'judge.adapter')}"

    def load():
        # the generation model is done: free its memory (and its tensor-parallel workers) first
        engines.release()
        m = plan.config.model
        adapters = {"judge": j.adapter} if j.adapter else {}
        return Engine.from_pretrained(model_dir, adapters=adapters, device=j.device or engines.device,
                                      dtype=j.dtype or m.dtype, backend=m.backend,
                                      max_batch_tokens=m.max_batch_tokens)

    return load, ident
