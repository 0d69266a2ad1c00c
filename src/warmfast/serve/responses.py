"""Engine requests from the request bodies, and response bodies from the engine's results.

Semantics as OpenAI and vLLM define them, and as lm-eval's `local-completions` reads them:
- a text prompt gets the tokenizer's special tokens (BOS); token-id prompts are used as given;
- echo returns the prompt's tokens before the generated ones; the first prompt token's log-prob
  is null (nothing conditions it); every other entry carries the `logprobs` most likely tokens
  plus the actual one, all from one log_softmax, so a greedy token's log-prob equals the max of
  its top dict exactly (lm-eval's is_greedy test);
- max_tokens 0 with echo: the prompt alone;
- a generation ended by EOS lists that EOS token last in its log-probs (not in its text), so
  echo with max_tokens 1 always holds the prompt plus exactly one generated token;
- -inf log-probs become -9999.0 (JSON has no infinity).
"""
from __future__ import annotations

import hashlib
import math
import secrets

from warmfast.engine.requests import GenerateRequest, GenerateResult, TokenLogprob
from warmfast.serve.protocol import ChatRequest, CompletionRequest, Sampling

NEG_INF = -9999.0


def _finite(x: float) -> float:
    return NEG_INF if math.isinf(x) and x < 0 else x


def _choice_key(prompt_ids: list[int], j: int) -> int | None:
    """Sampling key of choice j of n: None (the library's default, a hash of the prompt ids) for
    the first, so n=1 draws exactly what Engine.generate draws; distinct keys for the others."""
    if j == 0:
        return None
    digest = hashlib.blake2b(f"{prompt_ids}/{j}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _sampling(body: Sampling) -> dict:
    top_k = body.top_k if body.top_k is not None and body.top_k > 0 else 0
    return dict(temperature=1.0 if body.temperature is None else body.temperature,
                top_p=1.0 if body.top_p is None else body.top_p, top_k=top_k,
                min_p=body.min_p or 0.0, seed=secrets.randbits(63) if body.seed is None else body.seed,
                stop=list(body.stop or []))


def completion_requests(body: CompletionRequest, prompt_ids: list[list[int]], adapter: str | None
                        ) -> list[GenerateRequest]:
    """One GenerateRequest per (prompt, choice), choice index = prompt index * n + j."""
    out = []
    for ids in prompt_ids:
        for j in range(body.n):
            out.append(GenerateRequest(
                prompt=ids, adapter=adapter, max_new_tokens=max(1, body.max_tokens), **_sampling(body),
                request_id=_choice_key(ids, j), logprobs=body.logprobs,
                prompt_logprobs=body.echo and body.logprobs is not None))
    return out


def chat_requests(body: ChatRequest, ids: list[int], adapter: str | None, default_max: int) -> list[GenerateRequest]:
    k = (body.top_logprobs or 0) if body.logprobs else None
    return [GenerateRequest(prompt=ids, adapter=adapter, max_new_tokens=body.max_new_tokens(default_max),
                            **_sampling(body), request_id=_choice_key(ids, j), logprobs=k)
            for j in range(body.n)]


class Formatter:
    """Token strings and log-prob blocks; `tok` is the HTTP side's own TokenizerCache."""

    def __init__(self, tok):
        self.tok = tok
        self._piece: dict[int, str] = {}

    def piece(self, token_id: int) -> str:
        s = self._piece.get(token_id)
        if s is None:
            s = self._piece[token_id] = self.tok.hf.decode([token_id])
        return s

    def _top(self, tl: TokenLogprob) -> dict[str, float]:
        top = {self.piece(t): _finite(lp) for t, lp in tl.top}
        top.setdefault(self.piece(tl.token_id), _finite(tl.logprob))
        return top

    def completion_logprobs(self, gen: list[TokenLogprob], echo_ids: list[int] | None,
                            prompt_top: list[TokenLogprob] | None, offset: int) -> dict:
        """The completions `logprobs` block: echoed prompt tokens (if echo_ids), then generated."""
        tokens, lps, tops = [], [], []
        if echo_ids is not None:
            tokens.append(self.piece(echo_ids[0]))
            lps.append(None)
            tops.append(None)
            for tl in prompt_top or []:
                tokens.append(self.piece(tl.token_id))
                lps.append(_finite(tl.logprob))
                tops.append(self._top(tl))
        for tl in gen:
            tokens.append(self.piece(tl.token_id))
            lps.append(_finite(tl.logprob))
            tops.append(self._top(tl))
        offsets = []
        for t in tokens:
            offsets.append(offset)
            offset += len(t)
        return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}

    def chat_logprobs(self, gen: list[TokenLogprob]) -> dict:
        def entry(t: int, lp: float) -> dict:
            s = self.piece(t)
            return {"token": s, "logprob": _finite(lp), "bytes": list(s.encode("utf-8"))}

        return {"content": [entry(tl.token_id, tl.logprob) | {"top_logprobs": [entry(t, lp) for t, lp in tl.top]}
                            for tl in gen]}


def generated_logprobs(res: GenerateResult) -> list[TokenLogprob]:
    """The result's token log-probs, with the EOS that ended it (if any) last."""
    out = list(res.logprobs or [])
    if res.stop_token is not None:
        out.append(res.stop_token)
    return out


def completion_choice(fmt: Formatter, index: int, res: GenerateResult, body: CompletionRequest,
                      prompt_text: str, ids: list[int]) -> dict:
    gen_text, gen_lp, finish = res.text, generated_logprobs(res), res.finish_reason
    if body.max_tokens == 0:  # echo of the prompt alone: the one token drawn is dropped
        gen_text, gen_lp, finish = "", [], "length"
    text = prompt_text + gen_text if body.echo else gen_text
    logprobs = None
    if body.logprobs is not None:
        logprobs = fmt.completion_logprobs(gen_lp, ids if body.echo else None, res.prompt_top,
                                           0 if body.echo else len(prompt_text))
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}


def completion_tokens(res: GenerateResult, body: CompletionRequest | None = None) -> int:
    """Tokens generated (the text's; an EOS that ended it is not counted)."""
    return 0 if body is not None and body.max_tokens == 0 else len(res.token_ids)


def usage(prompt_tokens: int, completion: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}
