"""Warm / cold rewriting of every assistant turn (PROTOCOL section 1), resumable through the store.

Each assistant turn of each training conversation is one job: the protocol's system prompt for
the style, and a user message (our choice, `RewriteConfig.user_template`) carrying the user turn
that the answer replies to and the original answer. Backends:
- "engine": a local instruct model on warmfast itself; all pending turns go through
  `engine.generate` in chunks of `chunk_size` (each chunk one batched call);
- "openai": any OpenAI-compatible endpoint through `warmfast.openai_client`, `max_workers` calls
  in flight.
Every answer is written to the run store's llm_cache (keyed by the hash of the full request:
backend, model, system prompt, user message, decoding settings) as soon as it arrives, so a
killed run, or an endpoint that stops answering, loses nothing already rewritten; rerunning
skips every cached job. Outputs: the rewritten conversations (same format as the input, ready
for `warmfast train`), the original and rewrite of every turn side by side with length ratio and
lost code/equation flags, and a summary.
"""
from __future__ import annotations

import json
import logging
import statistics
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from warmfast.engine.api import Engine, GenerateRequest
from warmfast.errors import InputError, WarmfastError
from warmfast.keys import content_key
from warmfast.openai_client import ClientConfig, EndpointError, OpenAIClient
from warmfast.run.store import Store
from warmfast.train.dataset import TrainExample
from warmfast.train.rewrite_checks import check_rewrite

log = logging.getLogger(__name__)
USER_TEMPLATE = ("User message:\n{user}\n\nOriginal AI response:\n{answer}\n\n"
                 "Rewrite the AI response following your instructions. Reply with the rewritten "
                 "response only.")


class RewriteError(WarmfastError, RuntimeError):
    """Rewriting stopped; the message says how much is safely stored and how to resume."""


@dataclass(frozen=True)
class RewriteConfig:
    style: str                      # "warm" | "cold"
    backend: str = "engine"         # "engine" | "openai"
    model: str = ""                 # engine: model folder; openai: the endpoint's model name
    base_url: str | None = None     # openai backend only
    api_key_env: str | None = "OPENAI_API_KEY"
    temperature: float = 0.7
    max_new_tokens: int = 1024
    seed: int = 0
    user_template: str = USER_TEMPLATE
    chunk_size: int = 256           # engine: turns per generate call (and per store commit)
    max_workers: int = 8            # openai: calls in flight
    max_retries: int = 6            # openai: retries of a failing call (exponential backoff)
    timeout_s: float = 120.0        # openai: per-call timeout
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self):
        if self.style not in ("warm", "cold"):
            raise InputError(f"rewrite style must be 'warm' or 'cold', got {self.style!r}")
        if self.backend not in ("engine", "openai"):
            raise InputError(f"rewrite backend must be 'engine' or 'openai', got {self.backend!r}")
        if not self.model:
            raise InputError("rewrite needs model: a model folder (engine) or a model name (openai)")
        if self.backend == "openai" and not self.base_url:
            raise InputError("the openai backend needs base_url (e.g. https://api.openai.com/v1)")
        if "{user}" not in self.user_template or "{answer}" not in self.user_template:
            raise InputError("user_template must contain {user} and {answer}")
        if self.chunk_size < 1 or self.max_workers < 1 or self.max_new_tokens < 1 or self.temperature < 0:
            raise InputError(f"chunk_size, max_workers, max_new_tokens must be >= 1 and temperature "
                             f">= 0; got {self.chunk_size}, {self.max_workers}, {self.max_new_tokens}, "
                             f"{self.temperature}")


@dataclass(frozen=True)
class Job:
    example: int   # index into the examples
    turn: int      # index of the assistant message in example.messages
    user: str
    answer: str
    request: dict  # everything that determines the answer; its hash is `key`
    key: str


def make_jobs(examples: list[TrainExample], cfg: RewriteConfig, system_prompt: str) -> list[Job]:
    jobs = []
    for e, ex in enumerate(examples):
        for t, m in enumerate(ex.messages):
            if m["role"] != "assistant":
                continue
            user = next((p["content"] for p in reversed(ex.messages[:t]) if p["role"] == "user"), "")
            request = {"kind": "rewrite", "backend": cfg.backend, "model": cfg.model,
                       "system": system_prompt, "user": cfg.user_template.format(user=user, answer=m["content"]),
                       "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed}
            jobs.append(Job(e, t, user, m["content"], request, content_key(request)))
    return jobs


def _messages(j: Job, system_prompt: str) -> list[dict]:
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": j.request["user"]}]


def _check_lengths(pending: list[Job], examples: list[TrainExample], cfg: RewriteConfig,
                   system_prompt: str, engine) -> None:
    """Every prompt + max_new_tokens must fit the model; say which turns do not, before any compute."""
    too_long = []
    for j in pending:
        n = len(engine.tok.chat(_messages(j, system_prompt), f"rewrite of {examples[j.example].id}"))
        if n + cfg.max_new_tokens > engine.max_seq_len:
            too_long.append(f"{examples[j.example].id} turn {j.turn} ({n} prompt tokens)")
    if too_long:
        raise RewriteError(f"{len(too_long)} rewrite prompts + max_new_tokens={cfg.max_new_tokens} exceed "
                           f"the model's {engine.max_seq_len} tokens: {', '.join(too_long[:5])}"
                           f"{' ...' if len(too_long) > 5 else ''}; use a longer-context rewriter, "
                           "fewer max_new_tokens, or drop those conversations")


def _run_engine(pending: list[Job], examples: list[TrainExample], cfg: RewriteConfig,
                system_prompt: str, store: Store, engine) -> None:
    if engine is None:
        engine = Engine.from_pretrained(cfg.model, device=cfg.device, dtype=cfg.dtype)
    _check_lengths(pending, examples, cfg, system_prompt, engine)
    bar = tqdm(total=len(pending), desc=f"rewrite {cfg.style} (engine)")
    for i in range(0, len(pending), cfg.chunk_size):
        chunk = pending[i:i + cfg.chunk_size]
        reqs = [GenerateRequest(messages=_messages(j, system_prompt), max_new_tokens=cfg.max_new_tokens,
                                temperature=cfg.temperature, seed=cfg.seed) for j in chunk]
        for j, r in zip(chunk, engine.generate(reqs)):
            store.cache_response(j.key, j.request, {"text": r.text, "finish_reason": r.finish_reason})
        bar.update(len(chunk))
    bar.close()


def _run_openai(pending: list[Job], cfg: RewriteConfig, system_prompt: str, store: Store, client) -> None:
    if client is None:
        client = OpenAIClient(ClientConfig(base_url=cfg.base_url, api_key_env=cfg.api_key_env,
                                           max_retries=cfg.max_retries, timeout_s=cfg.timeout_s))

    def call(j: Job):
        return client.chat(_messages(j, system_prompt), model=cfg.model, temperature=cfg.temperature, max_tokens=cfg.max_new_tokens,
                           seed=cfg.seed)

    done = 0
    with ThreadPoolExecutor(max_workers=cfg.max_workers) as pool, \
            tqdm(total=len(pending), desc=f"rewrite {cfg.style} (endpoint)") as bar:
        futures = {pool.submit(call, j): j for j in pending}
        try:
            for fut in as_completed(futures):
                j = futures[fut]
                r = fut.result()  # an EndpointError ends the run; stored answers stay
                store.cache_response(j.key, j.request,
                                     {"text": r.text, "finish_reason": r.finish_reason or "stop"})
                done += 1
                bar.update(1)
        except EndpointError as err:
            for f in futures:
                f.cancel()
            raise RewriteError(f"rewriting stopped after {done} new answers ({len(pending) - done} "
                               f"still to do): {err}. Every answer received is stored; run the same "
                               "command again to resume.") from err


def rewrite(examples: list[TrainExample], cfg: RewriteConfig, system_prompt: str, store: Store,
            engine=None, client=None) -> tuple[list[TrainExample], list[dict], dict]:
    """Rewrite every assistant turn (cached ones are reused). Returns the rewritten examples, the
    side-by-side rows and a summary. `engine` / `client` may be passed in (else built from cfg)."""
    jobs = make_jobs(examples, cfg, system_prompt)
    pending = [j for j in jobs if store.cached_response(j.key) is None]
    log.info("rewrite %s: %d turns, %d already stored, %d to do", cfg.style, len(jobs),
             len(jobs) - len(pending), len(pending))
    if pending and cfg.backend == "engine":
        _run_engine(pending, examples, cfg, system_prompt, store, engine)
    elif pending:
        _run_openai(pending, cfg, system_prompt, store, client)
    new_msgs = [[dict(m) for m in ex.messages] for ex in examples]
    rows = []
    for j in jobs:
        got = store.cached_response(j.key)
        text = got["text"].strip()
        new_msgs[j.example][j.turn]["content"] = text
        chk = check_rewrite(j.answer, text)
        rows.append({"id": examples[j.example].id, "turn": j.turn, "style": cfg.style, "user": j.user,
                     "original": j.answer, "rewrite": text, "finish_reason": got.get("finish_reason"),
                     **asdict(chk), "flagged": chk.flagged})
    out = [TrainExample(ex.id, ex.source_id, ex.category, msgs) for ex, msgs in zip(examples, new_msgs)]
    return out, rows, summarize_rows(rows, cfg)


def summarize_rows(rows: list[dict], cfg: RewriteConfig) -> dict:
    ratios = sorted(r["len_ratio"] for r in rows if r["len_ratio"] != float("inf"))
    q = statistics.quantiles(ratios, n=10) if len(ratios) >= 2 else ratios * 9
    return {"style": cfg.style, "backend": cfg.backend, "model": cfg.model, "turns": len(rows),
            "len_ratio_mean": statistics.fmean(ratios) if ratios else None,
            "len_ratio_median": statistics.median(ratios) if ratios else None,
            "len_ratio_p10": q[0] if q else None, "len_ratio_p90": q[-1] if q else None,
            "lost_code_block_turns": sum(r["lost_code_blocks"] > 0 for r in rows),
            "lost_equation_turns": sum(r["lost_equations"] > 0 for r in rows),
            "hit_token_limit": sum(r["finish_reason"] == "length" for r in rows),
            "empty_rewrites": sum(not r["rewrite"] for r in rows)}


def write_outputs(out_dir: str | Path, examples: list[TrainExample], rows: list[dict], summary: dict) -> dict:
    """train.jsonl (rewritten conversations), pairs.jsonl (side by side), summary.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"train": out / "train.jsonl", "pairs": out / "pairs.jsonl", "summary": out / "summary.json"}
    with open(paths["train"], "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(asdict(ex), ensure_ascii=False) + "\n")
    with open(paths["pairs"], "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    paths["summary"].write_text(json.dumps(summary, indent=2))
    return paths
