"""The log-prob fields of `warmfast generate` output rows (the schema: docs/cli.md): each token's
id, its text, its log-prob under the row's adapter and the row's k most likely tokens, from the
engine core's GenerateResult (the generation pass itself, no second forward)."""
from __future__ import annotations

from warmfast.engine.api import Engine, GenerateRequest, GenerateResult
from warmfast.engine.prepare import prompt_ids


class LogprobRows:
    """The log-prob fields of `warmfast generate` output rows (docs/cli.md). One entry per token:
    {"token_id", "token" (the token decoded alone), "logprob" (log_softmax of the raw logits),
    "top_logprobs": [{"token_id", "token", "logprob"}, ...] (the row's k most likely, most likely
    first; [] for k = 0 or no k)}."""

    def __init__(self, eng: Engine):
        self.eng, self._pieces = eng, {}

    def piece(self, token_id: int) -> str:
        s = self._pieces.get(token_id)
        if s is None:
            s = self._pieces[token_id] = self.eng.tok.hf.decode([token_id], skip_special_tokens=False)
        return s

    def entry(self, token_id: int, logprob: float | None, top=()) -> dict:
        return {"token_id": token_id, "token": self.piece(token_id), "logprob": logprob,
                "top_logprobs": [{"token_id": t, "token": self.piece(t), "logprob": lp} for t, lp in top]}

    def generated(self, res: GenerateResult) -> dict:
        """logprobs: one entry per token id; stop_token: the EOS that ended it (in neither text nor
        token_ids), or null. Nothing when the row did not ask for logprobs."""
        if res.logprobs is None:
            return {}
        stop = res.stop_token
        return {"logprobs": [self.entry(t.token_id, t.logprob, t.top) for t in res.logprobs],
                "stop_token": None if stop is None else self.entry(stop.token_id, stop.logprob, stop.top)}

    def prompt(self, res: GenerateResult, req: GenerateRequest, where: str) -> dict:
        """prompt_logprobs: one entry per prompt token; the first has logprob null (nothing
        conditions it). Nothing when the row did not ask for them."""
        if res.prompt_logprobs is None:
            return {}
        ids = prompt_ids(self.eng, req, where)  # as the core tokenised it (encodes are cached)
        if res.prompt_top is not None:  # logprobs=k asked too: each entry with its top k
            rest = [self.entry(t.token_id, t.logprob, t.top) for t in res.prompt_top]
        else:
            rest = [self.entry(t, lp) for t, lp in zip(ids[1:], res.prompt_logprobs)]
        return {"prompt_logprobs": [self.entry(ids[0], None), *rest]}
