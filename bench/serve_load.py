"""Load on `warmfast serve` over loopback vs the same workload through the library directly.

A closed loop of `--clients` clients, each sending `--requests` streaming completions one after
another (random token-id prompts of `--prompt` tokens, up to `--new` tokens, temperature 0.8,
each its own seed), spread over the base model and every adapter, bounded by `--max-seconds`:
  server   `warmfast serve` in a subprocess, the official openai SDK in one thread per client
  library  one EngineCore in this process, the same requests, a client's next request added when
           its previous one finishes (what the server does, minus HTTP, JSON and threads)
Reported for each: requests/s, generated tokens/s, p50/p99 latency and time to first token;
the ratios server/library are the overhead of the HTTP layer (the library runs before and after
the server, the faster run is compared: the machine may be shared). One JSON record to --output-dir.

  python bench/serve_load.py                                    # a tiny random Llama + 3 adapters
  python bench/serve_load.py --clients 16 --requests 4 --new 64
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx


def workload(args, vocab: int, models: list[str]) -> list[list[dict]]:
    """Per client, its requests: prompt ids, model, seed, max_tokens."""
    rng = random.Random(0)
    return [[{"prompt": [rng.randrange(10, vocab) for _ in range(args.prompt)], "model": models[(c + r) % len(models)],
              "seed": 1000 * c + r, "max_tokens": args.new} for r in range(args.requests)] for c in range(args.clients)]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


def summary(lat: list[float], ttft: list[float], tokens: int, seconds: float) -> dict:
    return {"requests": len(lat), "tokens": tokens, "seconds": round(seconds, 3),
            "requests_per_s": round(len(lat) / seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
            "latency_p50_s": round(percentile(lat, 50), 4), "latency_p99_s": round(percentile(lat, 99), 4),
            "ttft_p50_s": round(percentile(ttft, 50), 4), "ttft_p99_s": round(percentile(ttft, 99), 4)}


def run_server(url: str, jobs: list[list[dict]], deadline_s: float) -> dict:
    import openai

    lat, ttft, tokens = [], [], [0]
    lock = threading.Lock()
    t_end = time.perf_counter() + deadline_s

    def client(reqs):
        c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
        for r in reqs:
            if time.perf_counter() > t_end:
                return
            t0, first, n = time.perf_counter(), None, 0
            for chunk in c.completions.create(**r, temperature=0.8, stream=True,
                                              stream_options={"include_usage": True}):
                if first is None and chunk.choices:
                    first = time.perf_counter() - t0
                if chunk.usage is not None:
                    n = chunk.usage.completion_tokens
            with lock:
                lat.append(time.perf_counter() - t0)
                ttft.append(first)
                tokens[0] += n

    before = scrape(url)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(reqs,)) for reqs in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = summary(lat, ttft, tokens[0], time.perf_counter() - t0)
    after = scrape(url)
    steps = after["warmfast_engine_steps_total"] - before["warmfast_engine_steps_total"]
    rows = after["warmfast_batch_rows_total"] - before["warmfast_batch_rows_total"]
    return out | {"engine_steps": int(steps), "rows_per_step": round(rows / max(steps, 1), 2)}


def scrape(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines() if ln and not ln.startswith("#")}


def run_library(eng, base_name: str, jobs: list[list[dict]], deadline_s: float, max_batch: int) -> dict:
    import warmfast as wf

    lat, ttft, tokens = [], [], 0
    nxt = [0] * len(jobs)
    owner: dict[int, tuple[int, float]] = {}  # core id -> (client, start time)
    first: dict[int, float] = {}
    t_begin = time.perf_counter()
    t_end = t_begin + deadline_s
    with eng.core(stream=True, max_batch_size=max_batch) as core:
        def add(c):
            if nxt[c] >= len(jobs[c]) or time.perf_counter() > t_end:
                return
            r = jobs[c][nxt[c]]
            nxt[c] += 1
            req = wf.GenerateRequest(prompt=r["prompt"], adapter=None if r["model"] == base_name else r["model"],
                                     max_new_tokens=r["max_tokens"], temperature=0.8, seed=r["seed"])
            owner[core.add_request(req)] = (c, time.perf_counter())

        for c in range(len(jobs)):
            add(c)
        while core.has_unfinished():
            for out in core.step():
                c, t0 = owner[out.request_id]
                first.setdefault(out.request_id, time.perf_counter() - t0)
                if out.finished:
                    lat.append(time.perf_counter() - t0)
                    ttft.append(first.pop(out.request_id))
                    tokens += len(out.result.token_ids)
                    del owner[out.request_id]
                    add(c)
        steps, rows = sum(core.steps.values()), core.batch_rows
    return summary(lat, ttft, tokens, time.perf_counter() - t_begin) | {
        "engine_steps": steps, "rows_per_step": round(rows / max(steps, 1), 2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder (default: a tiny random Llama + 3 adapters built here)")
    ap.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=4, help="per client, one after another")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-seconds", type=float, default=300.0, help="per system: no new request after this")
    ap.add_argument("--output-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    load_start = os.getloadavg()[0]  # other work on the machine skews every timing here

    import torch

    import warmfast as wf

    tmp = tempfile.TemporaryDirectory()
    if args.model is None:
        from warmfast.model.tiny import build_tiny

        p = build_tiny(Path(tmp.name), n_adapters=3, hidden_size=256, intermediate_size=512, num_layers=4,
                       num_heads=8, num_kv_heads=4, max_position_embeddings=1024)
        args.model = str(p.model_dir)
        args.adapter = [f"a{i}={p.adapters[f'adapter_{i}']}" for i in range(3)]
    adapters = dict(a.split("=", 1) for a in args.adapter)
    base = "base-model"
    models = [base] + list(adapters)
    eng = wf.Engine.from_pretrained(args.model, adapters=adapters)
    jobs = workload(args, eng.model.cfg.vocab_size, models)

    run_library(eng, base, [reqs[:1] for reqs in jobs[:2]], 60, args.max_batch)  # warm-up
    library_before = run_library(eng, base, jobs, args.max_seconds, args.max_batch)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "warmfast", "-q", "serve", "--model", args.model, "--port", str(port),
           "--served-model-name", base, "--max-batch-size", str(args.max_batch),
           "--max-queued", str(max(256, args.clients))] + sum((["--adapter", a] for a in args.adapter), [])
    log = tempfile.TemporaryFile("w+")
    env = {k: v for k, v in os.environ.items() if k != "WARMFAST_API_KEY"}  # an open loopback server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for _ in range(1200):
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                log.seek(0)
                raise SystemExit(f"warmfast serve exited {proc.returncode}: {log.read()}")
            time.sleep(0.25)
        run_server(url, [reqs[:1] for reqs in jobs[:2]], 60)  # warm-up (first-call costs)
        server = run_server(url, jobs, args.max_seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    library_after = run_library(eng, base, jobs, args.max_seconds, args.max_batch)
    library = max((library_before, library_after), key=lambda r: r["tokens_per_s"])  # the less disturbed

    load_after = os.getloadavg()
    record = {
        "bench": "serve_load", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.node(), "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "device": "cpu", "torch": torch.__version__,
        "os_cpus": os.cpu_count(), "loadavg_1min": {"start": round(load_start, 2), "end": round(load_after[0], 2)},
        "model": {"hidden": eng.model.cfg.hidden_size, "layers": eng.model.cfg.num_layers,
                  "vocab": eng.model.cfg.vocab_size, "adapters": len(adapters)},
        "clients": args.clients, "requests_per_client": args.requests, "prompt": args.prompt, "new": args.new,
        "max_batch": args.max_batch, "systems": {"server": server, "library": library},
        "library_runs": [library_before, library_after],  # before and after the server's run
        "server_over_library": {k: round(server[k] / library[k], 3) for k in
                                ("tokens_per_s", "requests_per_s", "latency_p50_s", "ttft_p50_s")},
    }
    out = Path(args.output_dir) / f"serve_load_cpu_{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
