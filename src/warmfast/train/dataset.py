"""The fine-tuning set and the warmth-validation prompts of PROTOCOL section 1, from ShareGPT.

Pipeline: every record -> its trainable dialogue (`Conversation.chat`, cut to 20 turns) -> drop
dialogues whose toxicity score >= threshold -> label by query type -> sample `n_train`
conversations equally across the six types -> hold out `n_validation` first-user-turn prompts,
equally across the types, from source conversations that share nothing with the training set.

Every random choice is a `random.Random` seeded by (seed, purpose, category); pools are sorted by
id first, so the result depends on the records and the seed only, never on file order or hashing.
Quotas: n // 6 per type, the remainder going one each to the first types in protocol order.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from warmfast.errors import InputError
from warmfast.train.query_type import CATEGORIES, QueryTypeRules
from warmfast.train.sharegpt import Conversation
from warmfast.train.toxicity import ToxicityFilter


@dataclass(frozen=True)
class DatasetConfig:
    n_train: int = 1617
    n_validation: int = 1500
    max_turns: int = 20
    toxicity_threshold: float = 0.5
    seed: int = 0
    max_turn_chars: int | None = None  # drop dialogues with a longer turn (demo / small models only)

    def __post_init__(self):
        if self.n_train < 1 or self.n_validation < 0:
            raise InputError(f"n_train must be >= 1 and n_validation >= 0; got {self.n_train}, "
                             f"{self.n_validation}")
        if self.max_turns < 2:
            raise InputError(f"max_turns must be >= 2, got {self.max_turns}")
        if self.max_turn_chars is not None and self.max_turn_chars < 1:
            raise InputError(f"max_turn_chars must be >= 1 or None, got {self.max_turn_chars}")
        if not 0.0 < self.toxicity_threshold <= 1.0:
            raise InputError(f"toxicity_threshold must be in (0, 1], got {self.toxicity_threshold}")


@dataclass(frozen=True)
class TrainExample:
    id: str
    source_id: str
    category: str
    messages: list[dict]  # alternating user/assistant, ends on assistant

    @property
    def n_assistant(self) -> int:
        return sum(m["role"] == "assistant" for m in self.messages)


@dataclass(frozen=True)
class ValidationPrompt:
    id: str
    source_id: str
    category: str
    prompt: str  # the conversation's first user message


@dataclass
class SplitResult:
    train: list[TrainExample]
    validation: list[ValidationPrompt]
    manifest: dict = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> Path:
        """train.jsonl, validation.jsonl and manifest.json under out_dir."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "train.jsonl", "w", encoding="utf-8") as f:
            for ex in self.train:
                f.write(json.dumps(asdict(ex), ensure_ascii=False) + "\n")
        with open(out / "validation.jsonl", "w", encoding="utf-8") as f:
            for p in self.validation:
                f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
        (out / "manifest.json").write_text(json.dumps(self.manifest, indent=2))
        return out


def quotas(n: int) -> dict[str, int]:
    """n split over the six types: n // 6 each, remainder to the first types in protocol order."""
    return {c: n // len(CATEGORIES) + (i < n % len(CATEGORIES)) for i, c in enumerate(CATEGORIES)}


def _draw(pools: dict[str, list], n: int, seed: int, purpose: str) -> list[tuple[str, object]]:
    """(category, item) pairs: a seeded sample of each category's quota from its pool."""
    out = []
    for cat, k in quotas(n).items():
        pool = pools.get(cat, [])
        if len(pool) < k:
            have = {c: len(p) for c, p in pools.items()}
            raise InputError(f"{purpose}: query type {cat!r} has {len(pool)} eligible conversations, "
                             f"{k} needed for {n} balanced over 6 types (available: {have}); use a "
                             "larger ShareGPT file or a smaller n")
        out.extend((cat, x) for x in random.Random(f"{seed}:{purpose}:{cat}").sample(pool, k))
    return out


def build_split(convs: list[Conversation], rules: QueryTypeRules, toxicity: ToxicityFilter,
                cfg: DatasetConfig) -> SplitResult:
    chats = [(c, c.chat(cfg.max_turns)) for c in convs]
    usable = [(c, ch) for c, ch in chats if ch]
    n_dialogues = len(usable)
    if cfg.max_turn_chars is not None:
        usable = [(c, ch) for c, ch in usable if max(len(t.text) for t in ch) <= cfg.max_turn_chars]
    texts = ["\n".join(t.text for t in ch) for _, ch in usable]
    scores = []
    for i in tqdm(range(0, len(texts), 256), desc=f"toxicity ({toxicity.name})", leave=False):
        scores.extend(toxicity.scores(texts[i:i + 256]))
    kept = [(c, ch) for (c, ch), s in zip(usable, scores) if s < cfg.toxicity_threshold]
    pools: dict[str, list[tuple[Conversation, tuple]]] = {c: [] for c in CATEGORIES}
    for c, ch in sorted(kept, key=lambda x: x[0].id):
        pools[rules.label(ch[0].text, ch[1].text)].append((c, ch))

    picked = _draw(pools, cfg.n_train, cfg.seed, "train")
    train = [TrainExample(c.id, c.source_id, cat, [{"role": t.role, "content": t.text} for t in ch])
             for cat, (c, ch) in picked]
    random.Random(f"{cfg.seed}:train-order").shuffle(train)
    used_sources = {ex.source_id for ex in train}
    held = {cat: [x for x in pool if x[0].source_id not in used_sources] for cat, pool in pools.items()}
    val_picked = _draw(held, cfg.n_validation, cfg.seed, "validation") if cfg.n_validation else []
    validation = [ValidationPrompt(c.id, c.source_id, cat, ch[0].text) for cat, (c, ch) in val_picked]
    manifest = {
        "records": len(convs), "with_dialogue": n_dialogues, "too_long_dropped": n_dialogues - len(usable),
        "toxic_dropped": len(usable) - len(kept),
        "toxicity_filter": toxicity.name, "toxicity_threshold": cfg.toxicity_threshold,
        "pool_sizes": {c: len(p) for c, p in pools.items()}, "config": asdict(cfg),
        "train": {"conversations": len(train), "assistant_turns": sum(e.n_assistant for e in train),
                  "by_type": dict(Counter(e.category for e in train))},
        "validation": {"prompts": len(validation),
                       "by_type": dict(Counter(p.category for p in validation))},
    }
    return SplitResult(train, validation, manifest)


def read_train_jsonl(path: str | Path) -> list[TrainExample]:
    """Training examples written by `SplitResult.write` or by the rewriter (same fields)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training file {path} does not exist")
    out = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.append(TrainExample(d["id"], d.get("source_id", d["id"]), d.get("category", ""),
                                    d["messages"]))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"{path} line {n}: not a training record with 'id' and 'messages' "
                             f"({type(err).__name__}: {err})") from err
        msgs = out[-1].messages
        if not msgs or not all(isinstance(m, dict) and m.get("role") in ("user", "assistant", "system")
                               and isinstance(m.get("content"), str) for m in msgs):
            raise InputError(f"{path} line {n} (id {d['id']!r}): 'messages' must be a non-empty list "
                             "of {role: user|assistant|system, content: str}")
    return out


def read_validation_jsonl(path: str | Path) -> list[ValidationPrompt]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"validation file {path} does not exist")
    out = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if line.strip():
            try:
                d = json.loads(line)
                out.append(ValidationPrompt(d["id"], d["source_id"], d["category"], d["prompt"]))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise InputError(f"{path} line {n}: not a validation prompt ({err})") from err
    return out
