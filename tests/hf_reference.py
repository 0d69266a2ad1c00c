"""HF transformers + PEFT as the independent reference for engine tests."""
from __future__ import annotations

import torch


class HFReference:
    """One PeftModel holding every adapter; score/generate one row at a time."""

    def __init__(self, paths):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(paths.model_dir)
        base = AutoModelForCausalLM.from_pretrained(paths.model_dir, dtype=torch.float32)
        names = list(paths.adapters)
        self.model = PeftModel.from_pretrained(base, paths.adapters[names[0]], adapter_name=names[0])
        for n in names[1:]:
            self.model.load_adapter(paths.adapters[n], adapter_name=n)
        self.model.eval()

    def ids(self, context, continuation):
        ctx = self.tok(context).input_ids if isinstance(context, str) else list(context)
        cont = (self.tok(continuation, add_special_tokens=False).input_ids
                if isinstance(continuation, str) else list(continuation))
        return ctx, cont

    def _run(self, adapter, fn):
        if adapter is None:
            with self.model.disable_adapter():
                return fn()
        self.model.set_adapter(adapter)
        return fn()

    @torch.no_grad()
    def token_logprobs(self, context, continuation, adapter) -> list[float]:
        ctx, cont = self.ids(context, continuation)
        logits = self._run(adapter, lambda: self.model(torch.tensor([ctx + cont])).logits[0])
        lp = torch.log_softmax(logits.float(), -1)
        return [lp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont)]

    @torch.no_grad()
    def logprob_rows(self, ids: list[int], adapter) -> torch.Tensor:
        """log_softmax of the fp32 logits at every position of `ids` [len(ids), V]: row j is the
        distribution of token j + 1."""
        logits = self._run(adapter, lambda: self.model(torch.tensor([list(ids)])).logits[0])
        return torch.log_softmax(logits.float(), -1)

    @torch.no_grad()
    def greedy(self, prompt_ids: list[int], adapter, max_new_tokens: int) -> list[int]:
        ids = torch.tensor([prompt_ids])
        out = self._run(adapter, lambda: self.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=self.tok.pad_token_id))
        return out[0, len(prompt_ids):].tolist()
