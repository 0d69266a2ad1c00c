"""Data-parallel split of the grid by content hash: which rank owns which generation chunk.

The runner cuts the plan into fixed chunks (consecutive jobs, `runner.chunk_size` each; a chunk is
one engine call and one store transaction) and, under `warmfast run CONFIG --shard RANK/WORLD`
(torchrun: `--shard env`), runs only its rank's chunks into its own store file; an unsharded run
merges the shard stores and fills any gap (run/runner.py, run/store.py `Store.merge_from`).

This module decides ownership from content alone: chunk c belongs to rank
`owner(chunk_key(c), world)`, where `chunk_key` is the SHA-256 of the chunk's job keys (themselves
content hashes). Every rank computes the same split with no communication, and a chunk keeps its
owner wherever it sits in the plan. Whole chunks (not single jobs) are split so that the engine
sees exactly the batches of a one-process run, which makes the merged store equal to it.
runner.plan_chunks uses `rank_chunks` for `--shard`.
"""
from __future__ import annotations

from collections.abc import Sequence

from warmfast.run.store import JobRecord, content_key


def chunk_key(chunk: Sequence[JobRecord]) -> str:
    """Content identity of a chunk: the hash of its jobs' content keys, in plan order."""
    if not chunk:
        raise ValueError("chunk_key: an empty chunk has no identity")
    return content_key({"chunk": [j.key for j in chunk]})


def owner(key: str, world: int) -> int:
    """The rank in [0, world) that owns the work with this SHA-256 hex key (uniform over ranks)."""
    if not isinstance(world, int) or world < 1:
        raise ValueError(f"world size must be a positive integer, got {world!r}")
    if len(key) != 64:
        raise ValueError(f"owner: expected a SHA-256 hex key (64 characters), got {key!r}")
    return int(key[:16], 16) % world


def rank_chunks(chunks: Sequence[Sequence[JobRecord]], rank: int, world: int) -> list[list[JobRecord]]:
    """The chunks `rank` of `world` owns, in plan order (every chunk has exactly one owner)."""
    if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world):
        raise ValueError(f"rank {rank!r} is not in [0, world={world!r})")
    return [list(c) for c in chunks if owner(chunk_key(c), world) == rank]


def load_per_rank(chunks: Sequence[Sequence[JobRecord]], world: int) -> list[int]:
    """Jobs per rank under the content-hash split (for logs and docs/scale.md's balance estimate)."""
    load = [0] * world
    for c in chunks:
        load[owner(chunk_key(c), world)] += len(c)
    return load
