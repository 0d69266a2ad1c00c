"""Incremental detokenisation, stop strings, EOS ids and max_new_tokens: when a request is done.

Text grows token by token without ever ending inside a multi-byte character: a byte-level BPE
token can carry half of a UTF-8 sequence, and decoding it alone yields U+FFFD, so a delta that
ends in U+FFFD is held back until the following token completes the character. Deltas are
computed against a short window of recent tokens (not the whole output), so each step costs
O(window), and their concatenation equals `tokenizer.decode(all_ids)` for byte-level tokenizers.

Finishing rules, checked after every token, in this order:
  EOS id (any id from generation_config.json / config.json / the tokenizer) -> "stop"; the EOS
      token is not part of token_ids or text;
  a stop string appears in the text -> "stop"; text is cut before the earliest stop string,
      token_ids keep the token that completed it;
  max_new_tokens tokens generated -> "length".
"""
from __future__ import annotations

from dataclasses import dataclass, field

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Stable text of a growing id list. `add(id)` returns the newly stable text (maybe "")."""

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tok = tokenizer  # anything with decode(ids, skip_special_tokens=...)
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0  # window start: decoding from here reproduces the text's tail
        self.read = 0  # ids before this index are already in self.text
        self.text = ""

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=self.skip)

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """At the end: emit whatever is held back (a truly incomplete character stays U+FFFD)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self.read == len(self.ids):
            return ""
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if not final and after.endswith(REPLACEMENT):
            return ""  # the last token ends inside a character: wait for the next one
        if not after.startswith(before):  # a merge changed earlier text: re-anchor on full text
            full = self._decode(self.ids)
            delta = full[len(self.text):] if full.startswith(self.text) else ""
        else:
            delta = after[len(before):]
        self.text += delta
        self.prefix, self.read = self.read, len(self.ids)
        return delta


@dataclass(slots=True)
class StopCriteria:
    max_new_tokens: int
    eos_ids: frozenset[int] = frozenset()
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {list(self.stop)!r}")
        self.stop = tuple(self.stop)


@dataclass(slots=True)
class OutputState:
    """One request's output: token ids, stable text, and why it finished (None while running)."""
    criteria: StopCriteria
    detok: IncrementalDetokenizer
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    num_generated: int = 0  # tokens sampled, EOS included
    stream: bool = False  # detokenise every token (streamed text), not only at the end
    _cut: int | None = None  # text index of the earliest stop string

    def append(self, token_id: int) -> bool:
        """Record a sampled token; True when the request is finished."""
        if self.finish_reason is not None:
            raise RuntimeError("OutputState.append: the request has already finished")
        self.num_generated += 1
        if token_id in self.criteria.eos_ids:
            self.finish_reason = "stop"
            return True
        self.token_ids.append(token_id)
        if self.criteria.stop or self.stream:  # else the text is only needed at the end
            delta = self.detok.add(token_id)
            if delta and self.criteria.stop:
                self._find_stop(len(delta))
                if self._cut is not None:
                    self.finish_reason = "stop"
                    return True
        if self.num_generated >= self.criteria.max_new_tokens:
            self.finish_reason = "length"
            return True
        return False

    def _find_stop(self, delta_len: int) -> None:
        text = self.detok.text
        longest = max(len(s) for s in self.criteria.stop)
        start = max(0, len(text) - delta_len - longest + 1)  # a new match must touch the delta
        hits = [k for s in self.criteria.stop if (k := text.find(s, start)) >= 0]
        if hits:
            self._cut = min(hits)

    def stable_text(self) -> str:
        """The text so far that no later token can change (a streamed prefix of the final text):
        while running, the last (longest stop string - 1) characters are held back, since a stop
        string completed by a later token may start inside them and cut them off."""
        if self._cut is not None:
            return self.detok.text[:self._cut]
        text = self.detok.text
        if self.criteria.stop and self.finish_reason is None:
            text = text[:max(0, len(text) - max(len(s) for s in self.criteria.stop) + 1)]
        return text

    @property
    def text(self) -> str:
        if self._cut is not None:
            return self.detok.text[:self._cut]
        for t in self.token_ids[len(self.detok.ids):]:  # catch up (no stop strings: all at once)
            self.detok.ids.append(t)
        self.detok.flush()
        return self.detok.text
