"""Chat-template tokenization for SFT: token ids plus a mask of the assistant tokens (the loss targets).

Each conversation is rendered once with the model's own chat template and tokenized as one text
(no extra special tokens: the template writes BOS itself). Assistant spans are found by rendering
prefixes: for assistant turn i, `render(messages[:i], add_generation_prompt=True)` ends where the
answer starts and `render(messages[:i+1])` ends where the answer's turn ends, so the span covers
the answer and the template's end-of-turn marker (the model learns to stop). A token is a target
when its characters lie inside a span. Templates whose prefix renderings are not prefixes of the
full rendering cannot be split this way and raise an error naming the example.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from warmfast.errors import InputError


@dataclass(frozen=True)
class Tokenized:
    id: str
    input_ids: list[int]     # [L], L <= max_len
    target_mask: list[bool]  # [L], True at assistant tokens (predicted from the previous position)
    truncated: bool

    @property
    def n_targets(self) -> int:
        return sum(self.target_mask[1:])  # position 0 is never predicted


def _render(tok, messages: list[dict], gen_prompt: bool) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt)


def tokenize_chat(tok, example_id: str, messages: list[dict], max_len: int) -> Tokenized:
    """Render `messages` with the chat template, tokenize, mark assistant tokens, cut to max_len."""
    if getattr(tok, "chat_template", None) is None:
        raise InputError(f"the tokenizer of {getattr(tok, 'name_or_path', '?')} has no chat template; "
                         "SFT renders conversations with the model's own template")
    full = _render(tok, messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = _render(tok, messages[:i], True)
        end = _render(tok, messages[: i + 1], False)
        if not (end.startswith(start) and full.startswith(end)):
            raise InputError(f"example {example_id!r}: the chat template's rendering of the first "
                             f"{i} messages is not a prefix of the whole conversation; cannot find "
                             "the assistant tokens")
        spans.append((len(start), len(end)))
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    # a token is a target when it ends inside a span (byte-level BPE merges never cross the
    # template's special tokens, so a token belongs wholly to one side of a span boundary)
    mask = [any(s < e_tok <= e and e_tok > s_tok for s, e in spans) for s_tok, e_tok in offsets]
    truncated = len(ids) > max_len
    return Tokenized(example_id, ids[:max_len], mask[:max_len], truncated)


def collate(batch: list[Tokenized], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors: input_ids [B, L], attention_mask [B, L], labels [B, L] (-100 = no loss)."""
    width = max(len(t.input_ids) for t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for r, t in enumerate(batch):
        n = len(t.input_ids)
        ids[r, :n] = torch.tensor(t.input_ids)
        attn[r, :n] = 1
        labels[r, :n] = torch.where(torch.tensor(t.target_mask), ids[r, :n], -100)
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}
