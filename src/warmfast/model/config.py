"""Model configuration read from a Hugging Face `config.json` (Llama, Mistral, Qwen2 families)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from warmfast.errors import MissingPathError, WarmfastError
from warmfast.model.eos import eos_ids

# said whenever a model folder is missing or incomplete
MODEL_FOLDER = ("a model folder is a local Hugging Face checkpoint folder holding config.json, the weights "
                "(model.safetensors, or model.safetensors.index.json and its shards) and the tokenizer "
                "(tokenizer.json or tokenizer.model, with tokenizer_config.json)")

# architecture name in config.json -> (family, q/k/v projections carry a bias)
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": ("llama", False),
    "MistralForCausalLM": ("mistral", False),
    "Qwen2ForCausalLM": ("qwen2", True),
}


class ModelConfigError(WarmfastError, ValueError):
    """A model folder whose config.json warmfast cannot run."""


def missing_model_folder(model_dir: str | Path) -> MissingPathError:
    """The error for a model folder that does not exist; a hub id (org/name) gets a download hint."""
    text = str(model_dir)
    hint = ""
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.startswith("."):
        hint = (f"; {text!r} looks like a Hugging Face hub id, and warmfast reads local folders only "
                f"(no downloads): fetch it first, e.g. `huggingface-cli download {text} --local-dir DIR`, "
                "and pass DIR")
    return MissingPathError(f"model folder {text!r} does not exist{hint}; {MODEL_FOLDER}")


@dataclass(slots=True)
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    rope_scaling: dict | None = None  # {"rope_type": "llama3", ...} or None
    qkv_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_window: int | None = None  # Mistral/Qwen2: attention window, None = full causal
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    torch_dtype: str = "float32"
    source: str = "<memory>"  # the config.json this came from, for error messages

    def __post_init__(self):
        where = f"{self.source}"
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ModelConfigError(f"{where}: {name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ModelConfigError(f"{where}: num_attention_heads={self.num_heads} is not a multiple of "
                                   f"num_key_value_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ModelConfigError(f"{where}: head_dim={self.head_dim} must be even for rotary embeddings")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if kind not in ("llama3", "default"):
                raise ModelConfigError(f"{where}: rope scaling type {kind!r} is not supported "
                                       "(supported: none, 'default', 'llama3')")
            if kind == "default":
                self.rope_scaling = None

    @property
    def family(self) -> str:
        return SUPPORTED_ARCHITECTURES[self.architecture][0]

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of every LoRA-targetable projection of a decoder layer."""
        h, i = self.hidden_size, self.intermediate_size
        return {"q_proj": (h, self.q_size), "k_proj": (h, self.kv_size), "v_proj": (h, self.kv_size),
                "o_proj": (self.q_size, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<memory>") -> "ModelConfig":
        archs = raw.get("architectures") or []
        arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
        if arch is None:
            raise ModelConfigError(f"{source}: architectures={archs} is not supported; warmfast runs "
                                   f"{', '.join(SUPPORTED_ARCHITECTURES)}, and GPT2LMHeadModel for "
                                   "scoring only (model/gpt2.py)")
        _, qkv_bias = SUPPORTED_ARCHITECTURES[arch]

        def need(key):
            if key not in raw:
                raise ModelConfigError(f"{source}: missing required key {key!r} for {arch}")
            return raw[key]

        for flag in ("attention_bias", "mlp_bias"):
            if arch != "Qwen2ForCausalLM" and raw.get(flag):
                raise ModelConfigError(f"{source}: {flag}=true is not supported for {arch} "
                                       "(supported: bias-free Llama/Mistral projections, Qwen2 q/k/v bias)")
        act = raw.get("hidden_act", "silu")
        if act != "silu":
            raise ModelConfigError(f"{source}: hidden_act={act!r} is not supported (supported: 'silu')")
        num_heads = need("num_attention_heads")
        hidden = need("hidden_size")
        # transformers 5 writes rope_parameters {rope_theta, rope_type, ...}; released checkpoints
        # carry rope_theta + rope_scaling at top level. Read both.
        rope_params = raw.get("rope_parameters") or {}
        rope_theta = rope_params.get("rope_theta", raw.get("rope_theta", 10000.0))
        scaling = raw.get("rope_scaling") or None
        if scaling is None and rope_params.get("rope_type", "default") != "default":
            scaling = {k: v for k, v in rope_params.items() if k != "rope_theta"}
        window = raw.get("sliding_window")
        if arch == "Qwen2ForCausalLM" and not raw.get("use_sliding_window", False):
            window = None
        return cls(
            architecture=arch,
            vocab_size=need("vocab_size"),
            hidden_size=hidden,
            intermediate_size=need("intermediate_size"),
            num_layers=need("num_hidden_layers"),
            num_heads=num_heads,
            num_kv_heads=raw.get("num_key_value_heads") or num_heads,
            head_dim=raw.get("head_dim") or hidden // num_heads,
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope_theta),
            max_position_embeddings=need("max_position_embeddings"),
            rope_scaling=dict(scaling) if scaling else None,
            qkv_bias=qkv_bias,
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            sliding_window=window,
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=eos_ids(raw.get("eos_token_id"), source),
            torch_dtype=str(raw.get("torch_dtype") or raw.get("dtype") or "float32"),
            source=source,
        )

    @classmethod
    def from_folder(cls, model_dir: str | Path) -> "ModelConfig":
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise missing_model_folder(model_dir)
        path = model_dir / "config.json"
        if not path.is_file():
            raise MissingPathError(f"{path} not found; {MODEL_FOLDER}")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ModelConfigError(f"{path} is not valid JSON: {err}") from err
        return cls.from_dict(raw, source=str(path))
