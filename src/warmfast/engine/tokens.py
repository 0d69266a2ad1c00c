"""Tokenizer, chat template and stop tokens from the model folder, with cached encodes.

The study's grid repeats the same contexts across arms and checkpoints, so encodes are memoised.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2.exceptions import TemplateError

from warmfast.errors import MissingPathError, RequestError
from warmfast.model.eos import load_eos_ids


class TokenizerCache:
    def __init__(self, model_dir: str | Path):
        from transformers import AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "tokenizer.json").is_file() and not (model_dir / "tokenizer.model").is_file():
            raise MissingPathError(f"no tokenizer in {model_dir}: expected tokenizer.json "
                                   "(or tokenizer.model) beside config.json")
        self.hf = AutoTokenizer.from_pretrained(str(model_dir))
        self.eos_ids = load_eos_ids(model_dir, self.hf.eos_token_id)
        self.encode_context = lru_cache(maxsize=65536)(self._encode_special)
        self.encode_plain = lru_cache(maxsize=65536)(self._encode_plain)

    def _encode_special(self, text: str) -> tuple[int, ...]:
        return tuple(self.hf(text, add_special_tokens=True)["input_ids"])

    def _encode_plain(self, text: str) -> tuple[int, ...]:
        return tuple(self.hf(text, add_special_tokens=False)["input_ids"])

    def chat(self, messages: list[dict], where: str) -> list[int]:
        """The chat template rendered with the generation prompt; the template adds BOS itself."""
        if self.hf.chat_template is None:
            raise RequestError(f"{where}: messages= needs a chat template, and the tokenizer of this "
                               "model has none (chat_template.jinja or tokenizer_config.json)")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise RequestError(f"{where}: messages[{i}] must be a dict with 'role' and 'content', got {m!r}")

        try:
            text = self.hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except TemplateError as err:  # the template's own checks (roles must alternate, ...)
            raise RequestError(f"{where}: the model's chat template refused these messages: {err}") from err
        return list(self._encode_plain(text))

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=True)
