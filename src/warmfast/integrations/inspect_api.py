"""The inspect_ai model provider `warmfast` (tested with inspect-ai 0.3.285); inspect_provider.py
registers it without importing this module (and torch) until a `warmfast/...` model is used.

    inspect eval task.py --model warmfast/warm -M pretrained=DIR -M adapters="warm:DIR|cold:DIR"
    inspect eval task.py --model warmfast/base,warmfast/warm,warmfast/cold -M ...   (every arm)

The model name after `warmfast/` is the arm: an adapter name from `adapters`, or `base` for the
model without an adapter. Providers of every arm that name the same model share one Engine and one
batcher, so the samples of all arms are generated in the same batches.

Model args (-M): pretrained (model folder, required), adapters ("NAME:DIR|NAME:DIR" or a dict),
device ("cpu"), dtype ("auto": config.json's), backend ("auto"), max_seq_len, max_batch_size (64
sequences per step), batch_window_s (0.05: how long the batcher waits for more requests).
Generation: the chat template of the tokenizer (tools are not supported), stop sequences,
max_tokens (default: what fits in the context, at most 1024), temperature (default 0: greedy),
top_p, top_k, seed (default 0; warmfast's sampler is keyed by seed and prompt, so every arm draws
the same random stream), and log-probs (`logprobs`, `top_logprobs`) of the generated tokens (the
engine core's, from the generation pass itself).
Registered through the `inspect_ai` entry-point group (see docs/integrations.md).
"""
from __future__ import annotations

import time
from concurrent.futures import Future

import anyio
from inspect_ai.model import (ChatCompletionChoice, ChatMessage, ChatMessageAssistant, GenerateConfig,
                              Logprob, Logprobs, ModelAPI, ModelOutput, ModelUsage, TopLogprob)
from inspect_ai.tool import ToolChoice, ToolInfo

import warmfast as wf
from warmfast.integrations.batcher import Job, batcher_for
from warmfast.integrations.engines import BASE, check_device, parse_adapters, resolve_dtype, shared_engine

DEFAULT_MAX_TOKENS = 1024


class WarmfastAPI(ModelAPI):
    def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                 config: GenerateConfig = GenerateConfig(), pretrained: str | None = None,
                 adapters=None, device: str = "cpu", dtype: str = "auto", backend: str = "auto",
                 max_seq_len: int | None = None, max_batch_size: int = 64,
                 batch_window_s: float = 0.05, tensor_parallel: int = 1) -> None:
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        where = f"inspect --model warmfast/{model_name}"
        if pretrained is None:
            raise ValueError(f"{where}: the model folder is missing; pass -M pretrained=DIR")
        named = parse_adapters(adapters, f"{where} -M adapters")
        if model_name != BASE and model_name not in named:
            raise ValueError(f"{where}: {model_name!r} is not an adapter; adapters are {list(named)} "
                             f"(warmfast/{BASE} is the model without an adapter)")
        self.arm = None if model_name == BASE else model_name
        self.engine = shared_engine(pretrained, named, device=check_device(device, where),
                                    dtype=resolve_dtype(dtype, pretrained, where), backend=backend,
                                    max_seq_len=max_seq_len, tensor_parallel=int(tensor_parallel))
        self.max_batch_size = int(max_batch_size)
        self.batcher = batcher_for(self.engine, self.max_batch_size, float(batch_window_s))

    def max_connections(self) -> int:
        return self.max_batch_size  # concurrent samples = one full batch

    def collapse_user_messages(self) -> bool:
        return True

    def _request(self, input: list[ChatMessage], config: GenerateConfig, where: str):
        messages = [{"role": m.role, "content": m.text} for m in input]
        ids = self.engine.tok.chat(messages, where)
        room = self.engine.max_seq_len - len(ids)
        if room < 1:
            raise ValueError(f"{where}: the prompt is {len(ids)} tokens, and the model's maximum "
                             f"sequence length is {self.engine.max_seq_len}: no room to generate")
        if (config.num_choices or 1) != 1:
            raise ValueError(f"{where}: num_choices={config.num_choices}; warmfast returns one choice")
        max_new = min(config.max_tokens or DEFAULT_MAX_TOKENS, room)
        req = wf.GenerateRequest(
            prompt=ids, adapter=self.arm, max_new_tokens=max_new,
            temperature=float(config.temperature or 0.0), top_p=float(config.top_p or 1.0),
            top_k=int(config.top_k or 0), seed=int(config.seed or 0), stop=[s for s in config.stop_seqs or [] if s],
            logprobs=(config.top_logprobs or 0) if config.logprobs else None)
        try:  # checked here: a bad value (top_logprobs > 20, ...) fails this sample, not its whole batch
            req.sampling()
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        return req, ids

    def _logprobs(self, res: wf.GenerateResult) -> Logprobs | None:
        if res.logprobs is None:
            return None
        tok = self.engine.tok.hf

        def piece(token_id: int) -> tuple[str, list[int]]:
            text = tok.decode([token_id], skip_special_tokens=False)
            return text, list(text.encode("utf-8"))

        content = []
        for tl in res.logprobs:  # one per generated token id, in order
            text, raw = piece(tl.token_id)
            tops = [TopLogprob(token=piece(i)[0], logprob=v, bytes=piece(i)[1]) for i, v in tl.top]
            content.append(Logprob(token=text, logprob=tl.logprob, bytes=raw, top_logprobs=tops or None))
        return Logprobs(content=content)

    async def generate(self, input: list[ChatMessage], tools: list[ToolInfo], tool_choice: ToolChoice,
                       config: GenerateConfig) -> ModelOutput:
        where = f"warmfast/{self.model_name}"
        if tools:
            raise ValueError(f"{where}: tool calling is not supported by the warmfast provider "
                             f"(got tools {[t.name for t in tools]})")
        req, ids = self._request(input, config, where)
        t0 = time.perf_counter()
        future: Future = self.batcher.submit(Job(req, Future()))
        while not future.done():  # the batcher runs in its own thread; poll without blocking the loop
            await anyio.sleep(0.005)
        res: wf.GenerateResult = future.result()
        choice = ChatCompletionChoice(
            message=ChatMessageAssistant(content=res.text, model=self.model_name, source="generate"),
            stop_reason="stop" if res.finish_reason == "stop" else "max_tokens",
            logprobs=self._logprobs(res))
        n_out = len(res.token_ids)
        return ModelOutput(model=self.model_name, choices=[choice], time=time.perf_counter() - t0,
                           usage=ModelUsage(input_tokens=len(ids), output_tokens=n_out,
                                            total_tokens=len(ids) + n_out))

