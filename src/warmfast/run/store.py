"""The grid's results store: one SQLite file in WAL mode, every row keyed by the hash of its content.

A job's key is the SHA-256 of the canonical JSON of everything that determines its result (model,
arm, adapter identity, messages, sampling settings, seed, task, ...). Because keys are content
hashes, inserting the same job twice is a no-op, two configs that share jobs share results, and a
changed setting makes a new key instead of silently reusing an old answer.

Tables
  jobs        key, kind, model, arm, task, spec (hashed JSON), meta (export columns, JSON)
  generations job_key -> text, token_ids, finish_reason, num_tokens          (one per job)
  judgements  key = hash(job_key, role, judge spec) -> verdict, score, confidence, detail
  llm_cache   key = hash(endpoint request) -> response JSON    (OpenAI-compatible judge / rewriter)

Durability: WAL journal with synchronous=FULL, and every batch of results is one short
transaction, so a SIGKILL at any point loses only the batch that was still being computed.
`created_at` columns are bookkeeping only; `content_snapshot` leaves them out so two stores can be
compared by content.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from warmfast.errors import WarmfastError
from warmfast.keys import canonical_json, content_key

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    key   TEXT PRIMARY KEY,
    kind  TEXT NOT NULL,
    model TEXT NOT NULL,
    arm   TEXT NOT NULL,
    task  TEXT NOT NULL,
    spec  TEXT NOT NULL,
    meta  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS generations (
    job_key       TEXT PRIMARY KEY REFERENCES jobs(key),
    text          TEXT NOT NULL,
    token_ids     TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    num_tokens    INTEGER NOT NULL,
    created_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS judgements (
    key        TEXT PRIMARY KEY,
    job_key    TEXT NOT NULL REFERENCES jobs(key),
    role       TEXT NOT NULL,
    judge      TEXT NOT NULL,
    verdict    TEXT,
    score      REAL,
    confidence REAL,
    detail     TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS judgements_by_job ON judgements(job_key);
CREATE TABLE IF NOT EXISTS llm_cache (
    key        TEXT PRIMARY KEY,
    request    TEXT NOT NULL,
    response   TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""

# Columns that carry content (everything except created_at), per table, in a fixed order.
_CONTENT_COLUMNS = {
    "jobs": ("key", "kind", "model", "arm", "task", "spec", "meta"),
    "generations": ("job_key", "text", "token_ids", "finish_reason", "num_tokens"),
    "judgements": ("key", "job_key", "role", "judge", "verdict", "score", "confidence", "detail"),
    "llm_cache": ("key", "request", "response"),
}


class StoreError(WarmfastError, RuntimeError):
    """A store file warmfast cannot use (other schema version, not a warmfast store, ...)."""


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One unit of generation work. `spec` is exactly what `key` hashes; `meta` rides along for export."""

    key: str
    kind: str
    model: str
    arm: str
    task: str
    spec: dict
    meta: dict

    def __post_init__(self):
        expected = content_key(self.spec)
        if self.key != expected:
            raise ValueError(f"JobRecord key {self.key[:12]}... does not hash its spec (expected {expected[:12]}...)")
        for name in ("kind", "model", "arm", "task"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"JobRecord {self.key[:12]}...: {name} must be a non-empty string, "
                                 f"got {getattr(self, name)!r}")

    @classmethod
    def from_spec(cls, kind: str, model: str, arm: str, task: str, spec: dict, meta: dict) -> "JobRecord":
        return cls(content_key(spec), kind, model, arm, task, spec, meta)


@dataclass(frozen=True, slots=True)
class Generation:
    job_key: str
    text: str
    token_ids: list[int]
    finish_reason: str
    num_tokens: int


@dataclass(frozen=True, slots=True)
class Judgement:
    """A judge's decision on one job's output. `role` is what the verdict is for ("evaluation",
    "refusal"); `judge` names the judge; `score` is the numeric form (1.0 correct / refused);
    `confidence` is the judge's probability for its verdict when it has one (log-prob judge)."""

    key: str
    job_key: str
    role: str
    judge: str
    verdict: str | None
    score: float | None
    confidence: float | None
    detail: dict


def judgement_key(job_key: str, role: str, judge_spec: Mapping[str, object], output: str) -> str:
    """Identity of a judgement: the job, what is judged, the judge's full settings and the text judged."""
    return content_key({"job": job_key, "role": role, "judge": dict(judge_spec), "output": output})


class Store:
    """The SQLite results store of one run directory (or of one rank's shard of it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder; the store must be a SQLite file (move the folder away)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"{self.path}: cannot create its folder ({err.strerror})") from None
        try:
            self._open()
        except sqlite3.Error as err:  # not SQLite, truncated, corrupt, unwritable
            if getattr(self, "_db", None) is not None:
                self._db.close()
            raise StoreError(f"{self.path} is not a warmfast store SQLite can open and write ({err}); "
                             "if it is damaged, move it away and rerun (the run starts afresh)") from err

    def _open(self) -> None:
        # isolation_level=None: we open transactions explicitly, one per batch of results.
        self._db = None
        self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=60.0)
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"{self.path}: SQLite refused WAL mode (journal_mode={mode!r}); "
                             "put the run directory on a local file system")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM store_info WHERE name='schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO store_info VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema version {row[0]}, this warmfast reads "
                             f"version {SCHEMA_VERSION}")

    # ---- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self, sql: str, rows: Sequence[tuple]) -> int:
        """Run one executemany in its own transaction; returns how many rows were new."""
        if not rows:
            return 0
        before = self._db.total_changes
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as err:  # disk full, read-only, locked past the timeout
            raise StoreError(f"{self.path}: cannot write results ({err}); everything committed before is kept") from err
        return self._db.total_changes - before

    # ---- jobs ----------------------------------------------------------------------------
    def add_jobs(self, jobs: Iterable[JobRecord]) -> int:
        """Insert jobs; ones already present (same key) are left as they are. Returns the number new."""
        have = {r[0] for r in self._db.execute("SELECT key FROM jobs")}  # a resumed run re-serialises nothing
        rows = [(j.key, j.kind, j.model, j.arm, j.task, canonical_json(j.spec), canonical_json(j.meta))
                for j in jobs if j.key not in have]
        return self._write("INSERT OR IGNORE INTO jobs VALUES (?,?,?,?,?,?,?)", rows)

    def job(self, key: str) -> JobRecord:
        row = self._db.execute("SELECT key, kind, model, arm, task, spec, meta FROM jobs WHERE key=?",
                               (key,)).fetchone()
        if row is None:
            raise KeyError(f"{self.path}: no job with key {key}")
        return JobRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), json.loads(row[6]))

    def count_jobs(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]

    # ---- generations ---------------------------------------------------------------------
    def add_generations(self, gens: Iterable[Generation]) -> int:
        """Write a batch of finished generations in one transaction (idempotent on job_key)."""
        now = time.time()
        rows = [(g.job_key, g.text, canonical_json(list(g.token_ids)), g.finish_reason, int(g.num_tokens), now)
                for g in gens]
        return self._write("INSERT OR IGNORE INTO generations VALUES (?,?,?,?,?,?)", rows)

    def done_generations(self, keys: Iterable[str] | None = None) -> set[str]:
        """Job keys that already have a generation (of `keys`, or of the whole store)."""
        done = {r[0] for r in self._db.execute("SELECT job_key FROM generations")}
        return done if keys is None else done & set(keys)

    def generations(self, keys: Iterable[str], with_tokens: bool = True) -> dict[str, Generation]:
        """The stored generations of `keys` (absent keys are simply missing from the result).
        with_tokens=False leaves token_ids empty (judging and export need only the text)."""
        out: dict[str, Generation] = {}
        keys = list(keys)
        ids_col = "token_ids" if with_tokens else "'[]'"
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            part = keys[start:start + 500]
            marks = ",".join("?" * len(part))
            for k, text, ids, reason, n in self._db.execute(
                    f"SELECT job_key, text, {ids_col}, finish_reason, num_tokens FROM generations "
                    f"WHERE job_key IN ({marks})", part):
                out[k] = Generation(k, text, json.loads(ids), reason, n)
        return out

    # ---- judgements ----------------------------------------------------------------------
    def add_judgements(self, judgements: Iterable[Judgement]) -> int:
        now = time.time()
        rows = [(j.key, j.job_key, j.role, j.judge, j.verdict, j.score, j.confidence,
                 canonical_json(j.detail), now) for j in judgements]
        return self._write("INSERT OR IGNORE INTO judgements VALUES (?,?,?,?,?,?,?,?,?)", rows)

    def judgements(self, keys: Iterable[str]) -> dict[str, Judgement]:
        out: dict[str, Judgement] = {}
        keys = list(keys)
        for start in range(0, len(keys), 500):
            part = keys[start:start + 500]
            marks = ",".join("?" * len(part))
            for row in self._db.execute(
                    f"SELECT key, job_key, role, judge, verdict, score, confidence, detail FROM judgements "
                    f"WHERE key IN ({marks})", part):
                out[row[0]] = Judgement(*row[:7], json.loads(row[7]))
        return out

    # ---- LLM request cache ---------------------------------------------------------------
    def cached_response(self, key: str) -> dict | None:
        row = self._db.execute("SELECT response FROM llm_cache WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def cache_response(self, key: str, request: Mapping[str, object], response: Mapping[str, object]) -> None:
        """Keep one endpoint response (its own transaction: a paid-for answer is never lost)."""
        self._write("INSERT OR IGNORE INTO llm_cache VALUES (?,?,?,?)",
                    [(key, canonical_json(dict(request)), canonical_json(dict(response)), time.time())])

    # ---- shards ---------------------------------------------------------------------------
    def merge_from(self, other: str | Path) -> dict[str, int]:
        """Copy every row of another store (a rank's shard) into this one, in one transaction.
        Rows are content-keyed, so merging twice, or merging overlapping shards, adds nothing twice.
        Returns the number of new rows per table."""
        other = Path(other)
        if not other.is_file():
            raise StoreError(f"shard store {other} does not exist")
        with Store(other) as src:  # checks it is a warmfast store of this schema version
            del src
        added = {}
        self._db.execute("ATTACH DATABASE ? AS shard", (str(other),))
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for table, cols in (("jobs", "*"), ("generations", "*"), ("judgements", "*"), ("llm_cache", "*")):
                    before = self._db.total_changes
                    self._db.execute(f"INSERT OR IGNORE INTO main.{table} SELECT {cols} FROM shard.{table}")
                    added[table] = self._db.total_changes - before
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        finally:
            self._db.execute("DETACH DATABASE shard")
        return added

    # ---- comparison ----------------------------------------------------------------------
    def content_snapshot(self) -> dict[str, list[tuple]]:
        """Every table's content columns, rows sorted: equal snapshots = equal stores, timestamps aside."""
        snap = {}
        for table, cols in _CONTENT_COLUMNS.items():
            rows = self._db.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
            snap[table] = sorted(rows, key=lambda r: tuple("" if v is None else str(v) for v in r))
        return snap
