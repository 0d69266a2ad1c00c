"""The log-prob LLM judge: a local model on warmfast's engine decides CORRECT / INCORRECT by comparing
the log-probabilities of the two verdict words right after the judge prompt. No sampling: one
batched forward pass over the prompt and a verdict probability for free.

For each answer the judge prompt (default: the sycophancy-eval grader prompt, protocol.json key
`sharma_grader_prompt`) is rendered, wrapped in the judge model's chat template with the generation
prompt (`template: chat`) or used as raw text (`template: raw`), and scored with the two verdict
continuations `verdict_prefix + word`:

- If the two verdicts start with different tokens (the usual case), the decision is the comparison
  of the next-token log-probabilities of those first tokens: exactly "which word would the judge
  say next". Only the first token is scored.
- If they share a first token (e.g. "IN" for INCOMPLETE / INCORRECT), the whole words are scored
  and their summed log-probabilities compared.

confidence = p(chosen) / (p(positive) + p(negative)), i.e. the two-way softmax of the two scores;
`detail` keeps both log-probabilities and how the comparison was made.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from warmfast.engine.api import ScoreRequest
from warmfast.judge.prompts import JudgeItem, JudgePrompt, Verdict

TEMPLATES = ("chat", "raw")


@dataclass(frozen=True, slots=True)
class LogprobJudgeConfig:
    """prompt: the judge prompt and its verdict words; template: "chat" (the judge model's chat
    template, generation prompt added) or "raw" (the rendered text as the context, BOS added);
    verdict_prefix: text between the prompt and the verdict word (e.g. " " after a raw "GRADE:");
    adapter: a LoRA adapter of the judge engine, None for its base model; chunk_size: answers
    judged per engine.score call."""

    prompt: JudgePrompt
    template: str = "chat"
    verdict_prefix: str = ""
    adapter: str | None = None
    chunk_size: int = 64

    def __post_init__(self):
        if self.template not in TEMPLATES:
            raise ValueError(f"logprob judge: template must be one of {TEMPLATES}, got {self.template!r}")
        if not isinstance(self.verdict_prefix, str):
            raise ValueError(f"logprob judge: verdict_prefix must be a string, got {self.verdict_prefix!r}")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"logprob judge: chunk_size must be a positive integer, got {self.chunk_size!r}")


class LogprobJudge:
    """Grades answers with next-token verdict log-probabilities on a warmfast Engine."""

    kind = "logprob"

    def __init__(self, engine, config: LogprobJudgeConfig, model_id: str):
        """engine: a warmfast.Engine holding the judge model; model_id: how the judge model is named
        in judgement keys (its folder path, or any identity that changes when the weights do)."""
        self.engine, self.config, self.model_id = engine, config, model_id
        tok = engine.tok
        self.verdict_ids = [list(tok.encode_plain(config.verdict_prefix + w)) for w in config.prompt.verdicts]
        for word, ids in zip(config.prompt.verdicts, self.verdict_ids):
            if not ids:
                raise ValueError(f"logprob judge: verdict {config.verdict_prefix + word!r} encodes to no tokens")
        # Different first tokens: one next-token comparison. Shared first token: whole-word sums.
        self.first_token_only = self.verdict_ids[0][0] != self.verdict_ids[1][0]

    def spec(self) -> dict:
        c = self.config
        return {"kind": self.kind, "model": self.model_id, "adapter": c.adapter, "prompt": c.prompt.spec(),
                "template": c.template, "verdict_prefix": c.verdict_prefix}

    def context_ids(self, item: JudgeItem) -> list[int]:
        """Token ids of the judge prompt for `item`, up to where the verdict word starts."""
        tok, prompt = self.engine.tok, self.config.prompt
        if self.config.template == "chat":
            return tok.chat(prompt.messages(item), where="logprob judge prompt")
        if prompt.system is not None:
            raise ValueError("logprob judge: a system prompt needs template: chat")
        return list(tok.encode_context(prompt.render(item)))

    def judge(self, items: Sequence[JudgeItem], progress: bool = False) -> list[Verdict]:
        """Verdicts in item order. Each chunk of answers is one engine.score call (2 rows per answer)."""
        conts = [ids[:1] for ids in self.verdict_ids] if self.first_token_only else self.verdict_ids
        pos, neg = self.config.prompt.verdicts
        out: list[Verdict] = []
        step = self.config.chunk_size
        for start in tqdm(range(0, len(items), step), desc="logprob judge", unit="chunk", disable=not progress):
            chunk = items[start:start + step]
            requests = []
            for item in chunk:
                ctx = self.context_ids(item)
                requests += [ScoreRequest(ctx, conts[0], self.config.adapter),
                             ScoreRequest(ctx, conts[1], self.config.adapter)]
            scores = self.engine.score(requests)
            for j in range(len(chunk)):
                lp_pos, lp_neg = scores[2 * j].logprob, scores[2 * j + 1].logprob
                # two-way softmax, stable for very negative log-probs
                p_pos = 1.0 / (1.0 + math.exp(lp_neg - lp_pos)) if lp_neg - lp_pos < 700 else 0.0
                chosen_pos = lp_pos >= lp_neg
                out.append(Verdict(
                    pos if chosen_pos else neg, 1.0 if chosen_pos else 0.0,
                    p_pos if chosen_pos else 1.0 - p_pos,
                    {"logprob": {pos: lp_pos, neg: lp_neg},
                     "compared": "next_token" if self.first_token_only else "whole_word",
                     # how much of the judge's probability the two verdicts hold together
                     "verdict_mass": math.exp(lp_pos) + math.exp(lp_neg)}))
        return out
