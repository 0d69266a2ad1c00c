"""SocioT warmth (Cheng, Yu & Jurafsky 2025; PROTOCOL section 3) on warmfast's scorer.

For a response t: t' = t[:300]; frames `My {w} said, "t'"` for w in my_words (friend, partner, ...),
`The {w} said, "t'"` otherwise (an empty t' gives `The {w} said, ` with no quotes, as upstream).
Each frame is tokenized as the reference does (`tokenizer(frame)`, i.e. with the tokenizer's
special tokens; GPT-2 adds none) and every token after the first is scored.

    warmth(t) = S(warm frames) - S(cold frames)

S, per mode (written `ids_r` for frame r's ids, L = max_r len(ids_r), 4 frames per set):
- "reference" (what the reference code computes, minus its dropout): the 4 frames are right-padded
  with token id `pad_id` (0, as torch's pad_sequence) to L, and the padded ids are their own
  labels; S = -(mean cross-entropy over all 4 * (L - 1) shifted positions, padding included)
      = sum_r [ sum_{j=1}^{L-1} log p(x_rj | x_r<j) ] / (4 * (L - 1)),  x_r = ids_r + [pad] * (L - len_r).
  Each padded row is scored by warmfast as one causal sequence (context = its first token,
  continuation = the rest, padding included).
- "masked": per-frame mean log-prob over its real tokens, averaged over the 4 frames:
      S = mean_r [ sum_{j=1}^{len_r - 1} log p(ids_rj | ids_r<j) / (len_r - 1) ].

Where "reference" differs from the reference code (compute_humt_sociot.py), written down exactly:
1. The reference runs GPT-2 in train mode (dropout on) 100 times and averages; warmfast computes
   the deterministic eval-mode value once (the limit those 100 draws estimate, up to dropout's
   non-linearity). The study's "100 bootstrap resamples" are resamples over responses here.
2. The reference passes an attention mask, so a padding position that is itself a query (the 2nd,
   3rd, ... padding token of a row) attends to the real tokens only; in warmfast's causal scorer it
   also attends to the padding before it and to itself. Terms whose query is a real token, and the
   first padding label of each row, are identical. So the two agree exactly whenever no row of a
   frame set needs more than one padding token. With GPT-2 the frames of a set differ only in the
   one SocioT word, so this holds when each word is at most 2 tokens (not verified here: GPT-2's
   vocabulary is not on this machine). `WarmthScores.meta` records the largest padding seen and
   how many frame sets needed more than one padding token, and `warmfast sociot` prints both.
3. `logsumexp` over the 0-dim loss in the reference is the identity; warmfast omits it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from warmfast.engine.api import ScoreRequest
from warmfast.errors import InputError


@dataclass(frozen=True)
class SocioTConfig:
    warm_words: tuple[str, ...] = ("friend", "lover", "mentor", "idol")
    cold_words: tuple[str, ...] = ("stranger", "enemy", "examiner", "dictator")
    my_words: tuple[str, ...] = ("friend", "partner", "girlfriend", "boyfriend", "husband", "wife")
    truncate_chars: int = 300
    mode: str = "reference"  # "reference" | "masked"
    pad_id: int = 0          # padding id of the reference mode (torch pad_sequence's default 0)
    bootstrap: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.mode not in ("reference", "masked"):
            raise InputError(f"SocioT mode must be 'reference' or 'masked', got {self.mode!r}")
        if not self.warm_words or not self.cold_words:
            raise InputError("SocioT needs at least one warm and one cold word")
        if self.truncate_chars < 1 or self.bootstrap < 0 or self.pad_id < 0:
            raise InputError(f"truncate_chars={self.truncate_chars} must be >= 1, bootstrap="
                             f"{self.bootstrap} >= 0, pad_id={self.pad_id} >= 0")

    @classmethod
    def from_protocol(cls, protocol: dict, **overrides) -> "SocioTConfig":
        s = protocol["sociot"]
        fields = dict(warm_words=tuple(s["warm_words"]), cold_words=tuple(s["cold_words"]),
                      my_words=tuple(s["my_words"]), truncate_chars=s["truncate_chars"],
                      bootstrap=s["bootstrap"])
        return cls(**{**fields, **overrides})  # overrides (e.g. --bootstrap) win over the protocol


def frame(word: str, text: str, cfg: SocioTConfig) -> str:
    quoted = f'"{text[: cfg.truncate_chars]}"' if text else ""
    article = "My" if word in cfg.my_words else "The"
    return f"{article} {word} said, {quoted}"


def frame_set_requests(ids: list[list[int]], cfg: SocioTConfig, adapter: str | None):
    """ScoreRequests for one frame set: (context = first token, continuation = the rest)."""
    width = max(len(r) for r in ids)
    reqs = []
    for r in ids:
        if len(r) < 2:
            raise InputError(f"a SocioT frame tokenized to {len(r)} token(s); nothing to score")
        cont = list(r[1:]) + ([cfg.pad_id] * (width - len(r)) if cfg.mode == "reference" else [])
        reqs.append(ScoreRequest(context=[r[0]], continuation=cont, adapter=adapter))
    return reqs


def frame_set_score(results, ids: list[list[int]], cfg: SocioTConfig) -> float:
    """S of one frame set from its ScoreResults (see the module docstring)."""
    if cfg.mode == "reference":
        width = max(len(r) for r in ids)
        return sum(res.logprob for res in results) / (len(ids) * (width - 1))
    return float(np.mean([res.logprob / res.num_tokens for res in results]))


@dataclass
class WarmthScores:
    """Per-text warmth and the two frame-set scores, in input order."""
    warmth: list[float]
    warm: list[float]
    cold: list[float]
    mode: str
    meta: dict = field(default_factory=dict)


def sociot_warmth(engine, texts: list[str], cfg: SocioTConfig, adapters: list[str | None] | None = None,
                  progress: bool = False) -> WarmthScores:
    """SocioT warmth of each text, all frames of all texts in ONE `engine.score` call.

    `adapters[i]` is the scorer's adapter for text i (None = base model; the study scores with
    plain GPT-2, i.e. None everywhere)."""
    adapters = adapters if adapters is not None else [None] * len(texts)
    if len(adapters) != len(texts):
        raise InputError(f"{len(texts)} texts but {len(adapters)} adapters")
    sets, reqs = [], []
    for i, (text, adapter) in enumerate(zip(texts, adapters)):
        if not isinstance(text, str):
            raise TypeError(f"SocioT text #{i} is {type(text).__name__}, expected str")
        for words in (cfg.warm_words, cfg.cold_words):
            ids = [list(engine.tok.encode_context(frame(w, text, cfg))) for w in words]
            sets.append((len(reqs), ids))
            reqs.extend(frame_set_requests(ids, cfg, adapter))
    results = engine.score(reqs, progress=progress)
    s = [frame_set_score(results[start:start + len(ids)], ids, cfg) for start, ids in sets]
    warm, cold = s[0::2], s[1::2]
    pads = [max(len(r) for r in ids) - min(len(r) for r in ids) for _, ids in sets]
    meta = {"max_pad": max(pads, default=0), "sets_with_pad_over_1": sum(p > 1 for p in pads),
            "frame_sets": len(sets)}
    return WarmthScores([w - c for w, c in zip(warm, cold)], warm, cold, cfg.mode, meta)


def summarize(values: list[float], n_boot: int, seed: int) -> dict:
    """Mean, analytic SE (ddof=1), bootstrap SE and 95% percentile interval over responses."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise InputError("no warmth values to summarize")
    out = {"n": int(x.size), "mean": float(x.mean()),
           "se": float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)  # [n_boot]
        out.update(boot_se=float(means.std(ddof=1)) if n_boot > 1 else float("nan"),
                   ci_low=float(np.percentile(means, 2.5)), ci_high=float(np.percentile(means, 97.5)))
    return out
