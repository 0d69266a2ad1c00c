"""GPT-2 (GPT2LMHeadModel) for scoring: config, weights in the engine's layout, and the forward.

The study's SocioT warmth metric (PROTOCOL section 3) scores with GPT-2 124M. GPT-2 is not a
Llama-family model, so it gets its own small forward rather than flags in model/llama.py:

- learned absolute position embeddings `wpe` (no rotary), added to `wte` at the input;
- pre-LN blocks with LayerNorm (weight and bias), a final `ln_f`;
- attention with fused q|k|v and biases everywhere, heads == kv heads;
- a gelu MLP (`gelu_new` = the tanh approximation, or exact `gelu`);
- lm_head tied to `wte`.

The checkpoint stores HF `Conv1D` weights transposed ([in, out]); they are transposed once at
load into the [out, in] layout F.linear takes, like the rest of the engine. Tensor names may carry
a `transformer.` prefix (what transformers' save_pretrained writes) or not (the original `gpt2`
checkpoint); the causal-mask buffers `attn.bias` / `attn.masked_bias` some checkpoints hold are
never read. Only safetensors checkpoints are read (as for every model warmfast loads).

Scoring only: the model exposes what engine/scorer.py uses from model/llama.py's Model
(`forward(ops, batch) -> [T, H]`, `.weights.lm_head`, `.cfg.vocab_size`, `.lora`); generation
and LoRA adapters are refused with a clear error. GPT-2's tokenizer adds no BOS, so a string
ScoreRequest context is its text tokens alone: the first context token is never predicted (it
conditions the rest), and an empty string context is an error (pass token ids, e.g.
[eos_token_id] = <|endoftext|>, to condition on a start-of-text token explicitly).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from warmfast.model.adapters import AdapterError
from warmfast.model.batch import Batch
from warmfast.model.config import ModelConfigError
from warmfast.model.eos import eos_ids
from warmfast.model.weights import WeightsError, _Reader, checkpoint_files

ARCHITECTURE = "GPT2LMHeadModel"
ACTIVATIONS = {"gelu_new": "tanh", "gelu": "none"}  # config name -> F.gelu(approximate=...)


@dataclass(slots=True)
class GPT2Config:
    vocab_size: int
    hidden_size: int  # n_embd
    num_layers: int  # n_layer
    num_heads: int  # n_head
    intermediate_size: int  # n_inner, default 4 * n_embd
    max_position_embeddings: int  # n_positions: rows of wpe
    layer_norm_eps: float
    activation: str  # "gelu_new" | "gelu"
    tie_word_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    source: str = "<memory>"  # the config.json this came from, for error messages

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ModelConfigError(f"{self.source}: {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ModelConfigError(f"{self.source}: n_embd={self.hidden_size} is not a multiple of "
                                   f"n_head={self.num_heads}")
        if self.activation not in ACTIVATIONS:
            raise ModelConfigError(f"{self.source}: activation_function={self.activation!r} is not "
                                   f"supported for {ARCHITECTURE} (supported: {', '.join(ACTIVATIONS)})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<memory>") -> "GPT2Config":
        if ARCHITECTURE not in (raw.get("architectures") or []):
            raise ModelConfigError(f"{source}: architectures={raw.get('architectures')} does not name "
                                   f"{ARCHITECTURE}")

        def need(key):
            if key not in raw:
                raise ModelConfigError(f"{source}: missing required key {key!r} for {ARCHITECTURE}")
            return raw[key]

        # options that change the math and that no released GPT-2 checkpoint sets
        for key, default in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                             ("add_cross_attention", False)):
            if raw.get(key, default) != default:
                raise ModelConfigError(f"{source}: {key}={raw[key]!r} is not supported for {ARCHITECTURE} "
                                       f"(supported: {key}={default})")
        hidden = need("n_embd")
        return cls(vocab_size=need("vocab_size"), hidden_size=hidden, num_layers=need("n_layer"),
                   num_heads=need("n_head"), intermediate_size=raw.get("n_inner") or 4 * hidden,
                   max_position_embeddings=need("n_positions"),
                   layer_norm_eps=float(raw.get("layer_norm_epsilon", 1e-5)),
                   activation=raw.get("activation_function", "gelu_new"),
                   tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
                   bos_token_id=raw.get("bos_token_id"),
                   eos_token_ids=eos_ids(raw.get("eos_token_id"), source),
                   source=source)


def is_gpt2_folder(model_dir: str | Path) -> bool:
    """Whether `model_dir/config.json` names GPT2LMHeadModel. A missing or unreadable config.json
    is not GPT-2 here: ModelConfig.from_folder then reports it."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return False
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return isinstance(raw, dict) and ARCHITECTURE in (raw.get("architectures") or [])


@dataclass(slots=True)
class GPT2LayerWeights:
    ln_1: tuple[torch.Tensor, torch.Tensor]  # LayerNorm (weight [H], bias [H])
    qkv: torch.Tensor  # [3H, H]  (checkpoint c_attn [H, 3H], transposed)
    qkv_bias: torch.Tensor  # [3H]
    o: torch.Tensor  # [H, H]  (attn.c_proj)
    o_bias: torch.Tensor  # [H]
    ln_2: tuple[torch.Tensor, torch.Tensor]
    fc: torch.Tensor  # [I, H]  (mlp.c_fc)
    fc_bias: torch.Tensor  # [I]
    proj: torch.Tensor  # [H, I]  (mlp.c_proj)
    proj_bias: torch.Tensor  # [H]


@dataclass(slots=True)
class GPT2Weights:
    wte: torch.Tensor  # [V, H]
    wpe: torch.Tensor  # [P, H]
    layers: list[GPT2LayerWeights]
    ln_f: tuple[torch.Tensor, torch.Tensor]
    lm_head: torch.Tensor  # [V, H]; the same storage as wte when tied


def load_gpt2_weights(model_dir: str | Path, cfg: GPT2Config, dtype: torch.dtype,
                      device: torch.device) -> GPT2Weights:
    """GPT-2 safetensors -> GPT2Weights, Conv1D weights transposed to [out, in]."""
    model_dir = Path(model_dir)
    files = checkpoint_files(model_dir)
    if "transformer.wte.weight" in files:
        pre = "transformer."
    elif "wte.weight" in files:
        pre = ""
    else:
        raise WeightsError(f"{model_dir}: neither 'transformer.wte.weight' nor 'wte.weight' is in the "
                           f"checkpoint; is this a {ARCHITECTURE} checkpoint? (first tensors: "
                           f"{sorted(files)[:5]})")
    r = _Reader(files, dtype, device)
    H, I, V, P = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings

    def conv1d(name: str, n_in: int, n_out: int) -> torch.Tensor:  # [in, out] on disk -> [out, in]
        return r.get(name, (n_in, n_out)).t().contiguous()

    def layer_norm(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return r.get(name + ".weight", (H,)), r.get(name + ".bias", (H,))

    layers = []
    for i in range(cfg.num_layers):
        p = f"{pre}h.{i}."
        layers.append(GPT2LayerWeights(
            ln_1=layer_norm(p + "ln_1"),
            qkv=conv1d(p + "attn.c_attn.weight", H, 3 * H), qkv_bias=r.get(p + "attn.c_attn.bias", (3 * H,)),
            o=conv1d(p + "attn.c_proj.weight", H, H), o_bias=r.get(p + "attn.c_proj.bias", (H,)),
            ln_2=layer_norm(p + "ln_2"),
            fc=conv1d(p + "mlp.c_fc.weight", H, I), fc_bias=r.get(p + "mlp.c_fc.bias", (I,)),
            proj=conv1d(p + "mlp.c_proj.weight", I, H), proj_bias=r.get(p + "mlp.c_proj.bias", (H,)),
        ))
    wte = r.get(pre + "wte.weight", (V, H))
    if cfg.tie_word_embeddings or "lm_head.weight" not in files:
        if not cfg.tie_word_embeddings:
            raise WeightsError(f"{model_dir}: tie_word_embeddings=false but the checkpoint has no "
                               "'lm_head.weight'")
        lm_head = wte
    else:
        lm_head = r.get("lm_head.weight", (V, H))
    return GPT2Weights(wte=wte, wpe=r.get(pre + "wpe.weight", (P, H)), layers=layers,
                       ln_f=layer_norm(pre + "ln_f"), lm_head=lm_head)


@dataclass
class GPT2Model:
    """GPT-2 forward over a packed varlen batch; the scorer-facing interface of llama.Model."""
    cfg: GPT2Config
    weights: GPT2Weights
    lora: list[dict] = field(default_factory=list)  # always empty per layer: no adapters on GPT-2

    def forward(self, ops, batch: Batch, kv_cache=None) -> torch.Tensor:
        """Final-LayerNormed hidden states [T, H] of every packed token (fresh rows only)."""
        if kv_cache is not None or batch.is_decode:
            raise ValueError(f"{self.cfg.source}: generation is not supported for GPT-2; warmfast "
                             "runs GPT-2 for scoring only (Engine.score)")
        cfg, W = self.cfg, self.weights
        T, H, eps = batch.num_tokens, cfg.hidden_size, cfg.layer_norm_eps
        if batch.max_seqlen_k > cfg.max_position_embeddings:
            raise ValueError(f"{cfg.source}: a row of {batch.max_seqlen_k} tokens exceeds GPT-2's "
                             f"n_positions={cfg.max_position_embeddings}")
        approximate = ACTIVATIONS[cfg.activation]
        scale = 1.0 / math.sqrt(cfg.head_dim)
        h = W.wte[batch.input_ids] + W.wpe[batch.positions]  # [T, H]
        for w in W.layers:
            x = F.layer_norm(h, (H,), *w.ln_1, eps)
            q, k, v = F.linear(x, w.qkv, w.qkv_bias).split(H, dim=-1)  # 3 x [T, H]
            shape = (T, cfg.num_heads, cfg.head_dim)
            o = ops.attention(q.reshape(shape), k.reshape(shape), v.reshape(shape), batch, scale)
            h = h + F.linear(o.reshape(T, H), w.o, w.o_bias)
            x = F.layer_norm(h, (H,), *w.ln_2, eps)
            x = F.gelu(F.linear(x, w.fc, w.fc_bias), approximate=approximate)  # [T, I]
            h = h + F.linear(x, w.proj, w.proj_bias)
        return F.layer_norm(h, (H,), *W.ln_f, eps)


def load_gpt2(model_dir: str | Path, adapters: dict, dtype: torch.dtype, device: torch.device) -> GPT2Model:
    """The GPT-2 model of `model_dir` for Engine.from_pretrained; refuses what it cannot run."""
    path = Path(model_dir) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelConfigError(f"{path} is not valid JSON: {err}") from err
    cfg = GPT2Config.from_dict(raw, source=str(path))
    if adapters:
        raise AdapterError(f"LoRA adapters {sorted(adapters)} cannot be loaded on {path} "
                           f"({ARCHITECTURE}): warmfast runs GPT-2 as a plain scoring model only")
    weights = load_gpt2_weights(model_dir, cfg, dtype, device)
    return GPT2Model(cfg, weights, lora=[{} for _ in weights.layers])
