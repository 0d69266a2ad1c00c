"""NSFW / toxicity filters for the fine-tuning data (PROTOCOL section 1), behind one small interface.

A filter scores each text in [0, 1]; a conversation is dropped when its score is >= the threshold
(0.5 by default, a config value). Two filters:
- `KeywordToxicity` (default, no model, no download): 1.0 when the text matches any pattern of an
  explicit-content / slur word list (whole words, case-insensitive), else 0.0.
- `DetoxifyToxicity`: the Detoxify "original" classifier the study used; score = max over its
  toxicity, severe_toxicity, obscene, sexual_explicit, threat, insult and identity_attack heads.
  Used only when the package is installed AND its checkpoint is on disk (never downloaded here).
`make_toxicity_filter(kind="auto")` picks Detoxify when both hold, else the keyword filter, and the
chosen filter's `name` goes into the dataset manifest, so every dataset says which filter made it.
"""
from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from warmfast.errors import InputError

log = logging.getLogger(__name__)

# Whole-word patterns for sexually explicit content and slurs. Words with common innocent senses
# ("cock", "sex" in "sex ratio", "rape" in "rapeseed", "naked eye") are left out or restricted.
DEFAULT_PATTERNS: tuple[str, ...] = (
    r"porn\w*", r"nsfw", r"erotic\w*", r"hentai", r"blow ?jobs?", r"hand ?jobs?", r"orgasm\w*",
    r"masturbat\w*", r"dildos?", r"horny", r"nudes", r"boobs", r"tits", r"pussy", r"cunts?",
    r"sluts?", r"whores?", r"fuck\w*", r"motherfuck\w*", r"bitch(es|y)?", r"incest\w*",
    r"bestiality", r"pedophil\w*", r"paedophil\w*", r"child sexual abuse", r"rap(ed|ing|ist|ists)",
    r"sex(ting|ual intercourse| scenes?| slaves?)", r"nigg\w*", r"faggots?", r"fags", r"retards?",
    r"kill yourself", r"kys",
)


class ToxicityFilter(Protocol):
    name: str

    def scores(self, texts: Sequence[str]) -> list[float]:
        """One score in [0, 1] per text; higher = more toxic."""
        ...


@dataclass
class KeywordToxicity:
    """1.0 when any whole-word pattern matches the lower-cased text, else 0.0.

    Patterns are written in lower case (matching lower-cased text is 4x faster than re.IGNORECASE:
    1.6 s instead of 6.8 s over the 5,000-record file)."""
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    name: str = "keyword"
    _regex: re.Pattern = field(init=False, repr=False)

    def __post_init__(self):
        if not self.patterns:
            raise InputError("KeywordToxicity needs at least one pattern")
        for p in self.patterns:
            if p != p.lower():
                raise InputError(f"toxicity pattern {p!r} has upper-case characters; patterns match "
                                 "lower-cased text, so write them in lower case")
            try:
                re.compile(p)
            except re.error as err:
                raise InputError(f"toxicity pattern {p!r} is not a valid regex: {err}") from err
        self._regex = re.compile(r"\b(?:" + "|".join(self.patterns) + r")\b")

    def matches(self, text: str) -> list[str]:
        """The (lower-cased) words that made a text toxic, for inspection and tests."""
        return [m.group(0) for m in self._regex.finditer(text.lower())]

    def scores(self, texts: Sequence[str]) -> list[float]:
        return [1.0 if self._regex.search(t.lower()) else 0.0 for t in texts]


def find_detoxify_checkpoint(model_type: str = "original") -> Path | None:
    """The Detoxify checkpoint in torch hub's cache (where Detoxify itself saves it), if any."""
    ckpt_dir = Path(torch.hub.get_dir()) / "checkpoints"
    hits = sorted(ckpt_dir.glob(f"toxic_{model_type}*.ckpt")) if ckpt_dir.is_dir() else []
    return hits[0] if hits else None


@dataclass
class DetoxifyToxicity:
    """Detoxify on a local checkpoint; texts longer than `max_chars` are cut (BERT reads 512 tokens)."""
    checkpoint: Path
    model_type: str = "original"
    device: str = "cpu"
    batch_size: int = 32
    max_chars: int = 4000
    name: str = "detoxify"

    def __post_init__(self):
        self.checkpoint = Path(self.checkpoint)
        if not self.checkpoint.is_file():
            raise FileNotFoundError(f"Detoxify checkpoint {self.checkpoint} does not exist")
        if importlib.util.find_spec("detoxify") is None:
            raise ImportError("toxicity.kind=detoxify but the detoxify package is not installed "
                              "(pip install detoxify), or use kind=keyword")
        from detoxify import Detoxify

        self._model = Detoxify(self.model_type, checkpoint=str(self.checkpoint), device=self.device)
        self.name = f"detoxify:{self.model_type}"

    def scores(self, texts: Sequence[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            batch = [t[: self.max_chars] for t in texts[i:i + self.batch_size]]
            heads = self._model.predict(batch)  # {head: [score per text]}
            out.extend(max(float(heads[h][k]) for h in heads) for k in range(len(batch)))
        return out


def make_toxicity_filter(kind: str = "auto", checkpoint: str | Path | None = None,
                         patterns: Sequence[str] | None = None) -> ToxicityFilter:
    """kind: "keyword", "detoxify" (error when unavailable) or "auto" (Detoxify when installed and
    its checkpoint is on disk, else keyword; the choice is logged and recorded as `.name`)."""
    if kind not in ("auto", "keyword", "detoxify"):
        raise InputError(f"toxicity.kind must be auto, keyword or detoxify; got {kind!r}")
    keyword = lambda: KeywordToxicity(tuple(patterns) if patterns else DEFAULT_PATTERNS)  # noqa: E731
    if kind == "keyword":
        return keyword()
    ckpt = Path(checkpoint) if checkpoint else find_detoxify_checkpoint()
    if kind == "detoxify":
        if ckpt is None:
            raise FileNotFoundError("toxicity.kind=detoxify: no checkpoint given and none in the "
                                    "torch hub cache; set toxicity.checkpoint to the .ckpt file")
        return DetoxifyToxicity(ckpt)
    if ckpt is not None and importlib.util.find_spec("detoxify") is not None:
        log.info("toxicity filter: Detoxify (%s)", ckpt)
        return DetoxifyToxicity(ckpt)
    log.info("toxicity filter: keyword list (Detoxify %s)",
             "has no checkpoint on disk" if ckpt is None else "is not installed")
    return keyword()
