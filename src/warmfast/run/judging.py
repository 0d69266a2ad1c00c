"""The judging stages of a run: which judge decides what, for which tasks.

A stage has a role ("refusal" or "evaluation"), the tasks it covers, a spec (every setting that
decides its verdicts: part of each judgement's key) and a function from (job, generation) pairs to
verdicts. The runner keys, resumes and stores them all the same way.

    refusal     every task     the refusal phrase list (protocol.json), case-insensitive
    evaluation  grid tasks     the LLM judge: log-prob judge on warmfast, or an OpenAI-compatible one
    capability  mmlu / gsm8k   answer extraction (letter / final number) against the reference
                advbench       the refusal rules: REFUSED or COMPLIED

A judgement's `judge` is "<stage name>:<first 8 hex of the stage spec's hash>", so verdicts of two
differently configured judges on one store never pass for each other.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from warmfast.judge import extract
from warmfast.judge.logprob import LogprobJudge, LogprobJudgeConfig
from warmfast.judge.openai import OpenAIJudge, OpenAIJudgeConfig
from warmfast.judge.prompts import JudgeItem, JudgePrompt, Verdict
from warmfast.judge.refusal import ADVBENCH_EXTRA_PHRASES, RefusalRule, compat_phrases
from warmfast.openai_client import ClientConfig
from warmfast.run.config import GRID_TASKS, ConfigError, JudgeSpec, RunConfig, resolve_text
from warmfast.run.store import Generation, JobRecord, Judgement, Store, content_key, judgement_key

log = logging.getLogger("warmfast.run")
# Extraction verdicts were once keyed by content_key({"source": inspect.getsource(judge.extract)});
# this is that key for the extract.py of RULES_VERSION 1 (warmfast up to commit e4d1b09).
LEGACY_EXTRACT_SOURCE_KEY = "7559c0af0c8a0daf010ffaa6d58997f99e6e9821f0f73520e4af9feefa23bd3e"
SELF_JUDGED_WARNING = ("no separate judge is configured (judge.model: generation): the subject model judged its "
                       "own answers, which can favour it; configure a judge model or endpoint for study figures")

# (pairs of job and its generation, the run's store) -> one verdict per pair
JudgeFn = Callable[[Sequence[tuple[JobRecord, Generation]], Store], list[Verdict]]


@dataclass
class Stage:
    role: str
    name: str
    tasks: tuple[str, ...]
    spec: dict
    judge: JudgeFn
    # specs under which this stage's verdicts were keyed by an earlier warmfast, for the same
    # rules: a verdict found under one is carried over to today's key (carry_over), not re-made
    legacy_specs: tuple[dict, ...] = ()

    @property
    def judge_name(self) -> str:
        return f"{self.name}:{content_key(self.spec)[:8]}"


def judge_item(job: JobRecord, gen: Generation, answers: str) -> JudgeItem:
    refs = job.meta.get("judge_answers") or []
    if not refs:
        raise ValueError(f"job {job.key[:12]} ({job.task} {job.meta.get('question_key')!r}) has no reference "
                         "answer for the judge")
    answer = refs[0] if answers == "first" else " / ".join(refs)
    return JudgeItem(job.meta["judge_question"], gen.text, answer)


def refusal_phrases(config: RunConfig, protocol: dict) -> tuple[str, ...]:
    phrases = config.refusal.phrases
    if isinstance(phrases, str):
        phrases = resolve_text(phrases, protocol, "refusal.phrases")
    if not isinstance(phrases, list) or not phrases:
        raise ConfigError(f"refusal.phrases: resolved to {phrases!r}, expected a non-empty list of phrases")
    if config.refusal.compat:  # the authors' pattern list (their mojibake entry), used as regexes

        return compat_phrases(phrases)
    return tuple(p.lower() for p in phrases)


def refusal_stage(config: RunConfig, protocol: dict, tasks: tuple[str, ...]) -> Stage:
    rule = RefusalRule(refusal_phrases(config, protocol), name="config", regex=config.refusal.compat)

    def judge(pairs, store):
        out = []
        for _, gen in pairs:
            hit = rule.matched(gen.text)
            out.append(Verdict("REFUSAL" if hit else "ANSWER", 1.0 if hit else 0.0, None, {"matched": hit}))
        return out

    spec = {"kind": "refusal_rules", "phrases": list(rule.phrases)}
    if rule.regex:  # the compat rule: the phrases are the authors' regular expressions
        spec["regex"] = True
    return Stage("refusal", "refusal_rules", tasks, spec, judge)


def advbench_stage(config: RunConfig, protocol: dict) -> Stage:
    phrases = refusal_phrases(config, protocol)
    if config.refusal.advbench_extra:
        phrases = tuple(dict.fromkeys(phrases + ADVBENCH_EXTRA_PHRASES))
    rule = RefusalRule(phrases, name="advbench", regex=config.refusal.compat)

    def judge(pairs, store):
        out = []
        for _, gen in pairs:
            hit = rule.matched(gen.text)
            out.append(Verdict("REFUSED" if hit else "COMPLIED", 1.0 if hit else 0.0, None, {"matched": hit}))
        return out

    return Stage("capability", "advbench_refusal", ("advbench",),
                 {"kind": "advbench_refusal", "phrases": list(rule.phrases)}, judge)


def extraction_stage(task: str) -> Stage:
    def judge(pairs, store):
        out = []
        for job, gen in pairs:
            gold = job.meta["judge_answers"][0]
            if task == "mmlu":
                found = extract.extract_mmlu_letter(gen.text, [job.meta[c] for c in "ABCD"])
                ok = found == gold
            else:
                found = extract.extract_gsm8k_number(gen.text)
                ok = extract.numbers_equal(found, gold)
            out.append(Verdict("CORRECT" if ok else "INCORRECT", 1.0 if ok else 0.0, None,
                               {"extracted": found, "gold": gold}))
        return out

    # the rules' identity is their version (judge/extract.py): a changed rule re-grades, an unchanged one never does
    spec = {"kind": "extraction", "task": task, "rules_version": extract.RULES_VERSION}
    legacy = ()
    if extract.RULES_VERSION == 1:  # the same rules, keyed by extract.py's source text before versions
        legacy = ({"kind": "extraction", "task": task, "rules": LEGACY_EXTRACT_SOURCE_KEY},)
    return Stage("capability", f"{task}_extraction", (task,), spec, judge, legacy)


class LLMJudge:
    """The configured free-text judge behind one call: judge(items, store) -> verdicts.

    spec: every setting that decides a verdict (never an API key). The log-prob judge's engine is
    loaded by `engine_loader()` on first use only, so a fully judged run never loads a model."""

    def __init__(self, j: JudgeSpec, protocol: dict, chunk_size: int, engine_loader, model_id: str,
                 engine_adapter: str | None):
        self.answers = j.answers
        prompt = JudgePrompt(resolve_text(j.prompt, protocol, "judge.prompt"), tuple(j.verdicts),
                             None if j.system is None else resolve_text(j.system, protocol, "judge.system"))
        self._impl = None
        if j.kind == "logprob":
            self.name = "logprob_judge"
            self._cfg = LogprobJudgeConfig(prompt, j.template, j.verdict_prefix, engine_adapter, chunk_size)
            self._engine_loader, self._model_id = engine_loader, model_id
            self.spec = {"kind": "logprob", "model": model_id, "adapter": j.adapter, "prompt": prompt.spec(),
                         "template": j.template, "verdict_prefix": j.verdict_prefix, "answers": j.answers}
        elif j.kind == "openai":
            self.name = "openai_judge"
            if j.api_key_env is not None and not os.environ.get(j.api_key_env):
                raise ConfigError(f"judge.api_key_env: the variable {j.api_key_env} is not set; export the key "
                                  "(or set api_key_env: null for an endpoint without authentication)")
            client = ClientConfig(j.base_url, j.api_key_env, j.timeout_s, j.max_retries, j.backoff_s)
            self._cfg = OpenAIJudgeConfig(j.model, client, prompt, j.temperature, j.max_tokens, j.seed, j.concurrency)
            self.spec = {"kind": "openai", "url": client.base_url, "model": j.model, "prompt": prompt.spec(),
                         "temperature": j.temperature, "max_tokens": j.max_tokens, "seed": j.seed,
                         "answers": j.answers}
        else:
            raise ConfigError(f"judge.kind: {j.kind!r} is not an LLM judge (logprob or openai)")
        self.kind = j.kind

    def __call__(self, items: Sequence[JudgeItem], store: Store | None, progress: bool = False) -> list[Verdict]:
        if self._impl is None:
            if self.kind == "logprob":
                self._impl = LogprobJudge(self._engine_loader(), self._cfg, self._model_id)
            else:
                self._impl = OpenAIJudge(self._cfg, store)
        return self._impl.judge(items, progress=progress)


def llm_stage(config: RunConfig, protocol: dict, tasks: tuple[str, ...], judge_engine, judge_model_id: str) -> Stage:
    """The free-text judge. judge_engine() -> the warmfast Engine of the log-prob judge (called only
    when something is left to judge); judge_model_id: that model's content identity."""
    j = config.judge
    # with model: generation the adapter is an arm (engine adapter names are arm names); a
    # separate judge model loads its adapter under the name "judge"
    engine_adapter = j.adapter if j.model == "generation" else ("judge" if j.adapter else None)
    llm = LLMJudge(j, protocol, config.runner.judge_chunk_size, judge_engine, judge_model_id, engine_adapter)
    self_judged = j.kind == "logprob" and j.model == "generation"
    if self_judged:
        log.warning("judge: %s", SELF_JUDGED_WARNING)

    def judge(pairs, store):
        verdicts = llm([judge_item(job, gen, j.answers) for job, gen in pairs], store)
        if self_judged:  # recorded with each verdict, so a report read from the store says so too
            verdicts = [Verdict(v.verdict, v.score, v.confidence, {**v.detail, "self_judged": True}) for v in verdicts]
        return verdicts

    return Stage("evaluation", llm.name, tasks, llm.spec, judge)


def build_stages(config: RunConfig, protocol: dict, judge_engine, judge_model_id: str) -> list[Stage]:
    tasks = tuple(t.name for t in config.tasks)
    stages = [refusal_stage(config, protocol, tasks)]
    grid = tuple(t for t in tasks if t in GRID_TASKS)
    if grid and config.judge.kind != "none":
        stages.append(llm_stage(config, protocol, grid, judge_engine, judge_model_id))
    for task in ("mmlu", "gsm8k"):
        if task in tasks:
            stages.append(extraction_stage(task))
    if "advbench" in tasks:
        stages.append(advbench_stage(config, protocol))
    return stages


def carry_over(stage: Stage, store: Store, keys: dict[str, str], gens: dict[str, Generation],
               have: dict[str, Judgement]) -> dict[str, Judgement]:
    """Verdicts of `stage` stored under one of its legacy specs, stored again under today's keys
    (one transaction) and returned by key. keys: {job key: today's judgement key}; have: those
    already stored. A store from before a key change keeps every verdict its rules still give."""
    missing = {job: key for job, key in keys.items() if key not in have}
    moved: dict[str, Judgement] = {}
    for spec in stage.legacy_specs:
        old = {job: judgement_key(job, stage.role, spec, gens[job].text) for job, key in missing.items()
               if key not in moved}
        found = store.judgements(old.values())
        for job, old_key in old.items():
            if old_key in found:
                f = found[old_key]
                moved[missing[job]] = Judgement(missing[job], job, stage.role, stage.judge_name, f.verdict, f.score,
                                                f.confidence, f.detail)
    if moved:
        store.add_judgements(moved.values())
        log.info("%s: %d verdict(s) stored under the earlier key format carried over to today's keys (%s)",
                 stage.name, len(moved), store.path)
    return moved
