"""Safetensors checkpoints (single file or sharded with an index) -> the engine's own layout.

The engine keeps fused projections: q|k|v in one [q+2kv, H] matrix and gate|up in one [2I, H]
matrix, so a decoder layer runs 4 GEMMs instead of 7. No transformers model object is built.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from warmfast.errors import MissingPathError, WarmfastError
from warmfast.model.config import ModelConfig


class WeightsError(WarmfastError, ValueError):
    """A checkpoint that does not match its config or holds unusable values."""


@dataclass(slots=True)
class LayerWeights:
    input_norm: torch.Tensor  # [H]
    qkv: torch.Tensor  # [q + 2*kv, H]
    qkv_bias: torch.Tensor | None  # [q + 2*kv] (Qwen2) or None
    o: torch.Tensor  # [H, q]
    post_norm: torch.Tensor  # [H]
    gate_up: torch.Tensor  # [2*I, H]
    down: torch.Tensor  # [H, I]


@dataclass(slots=True)
class ModelWeights:
    embed: torch.Tensor  # [V, H]
    layers: list[LayerWeights]
    norm: torch.Tensor  # [H]
    lm_head: torch.Tensor  # [V, H]; the same storage as embed when tied


def open_safetensors(path: Path, what: str = "weights"):
    """safe_open(path), with a file safetensors cannot read (truncated, not safetensors, unreadable)
    reported as a WeightsError naming the file and its size."""
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as err:
        size = path.stat().st_size if path.is_file() else None
        raise WeightsError(f"{path}: cannot read these {what} ({size} bytes): {err}; the file is truncated "
                           "or not safetensors (download or save it again)") from err


def checkpoint_files(model_dir: Path) -> dict[str, Path]:
    """Map every tensor name to the safetensors file holding it."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())
        except json.JSONDecodeError as err:
            raise WeightsError(f"{index} is not valid JSON: {err}") from err
        weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        if not isinstance(weight_map, dict):
            raise WeightsError(f"{index}: missing 'weight_map'")
        files = {name: model_dir / fname for name, fname in weight_map.items()}
        for path in set(files.values()):
            if not path.is_file():
                raise MissingPathError(f"shard {path} listed in {index} does not exist")
        return files
    single = model_dir / "model.safetensors"
    if not single.is_file():
        raise MissingPathError(f"no weights in {model_dir}: expected model.safetensors or "
                                "model.safetensors.index.json with its shards")
    with open_safetensors(single) as f:
        return {name: single for name in f.keys()}


class _Reader:
    """Reads named tensors from a set of shards, checking shape and finiteness on the way."""

    def __init__(self, files: dict[str, Path], dtype: torch.dtype, device: torch.device,
                 shard: Callable[[str], tuple[int, int, int] | None] | None = None):
        self.files, self.dtype, self.device = files, dtype, device
        self.shard = shard  # tensor name -> (dim, start, stop) to read, None = the whole tensor
        self._open: dict[Path, object] = {}

    def get(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in self.files:
            raise WeightsError(f"tensor {name!r} is missing from the checkpoint "
                               f"({len(self.files)} tensors in {sorted(set(map(str, self.files.values())))})")
        path = self.files[name]
        if path not in self._open:
            self._open[path] = open_safetensors(path)
        cut = None if self.shard is None else self.shard(name)
        if cut is None:
            t = self._open[path].get_tensor(name)
            full = tuple(t.shape)
        else:  # tensor parallel: read only this rank's rows or columns from the file
            sl = self._open[path].get_slice(name)
            full = tuple(sl.get_shape())
        if full != tuple(shape):
            raise WeightsError(f"tensor {name!r} in {path} has shape {full}, "
                               f"the config expects {tuple(shape)}")
        if cut is not None:
            dim, start, stop = cut
            t = sl[start:stop] if dim == 0 else sl[:, start:stop]
        t = t.to(device=self.device, dtype=self.dtype)
        if not torch.isfinite(t).all():
            bad = (~torch.isfinite(t)).sum().item()
            raise WeightsError(f"tensor {name!r} in {path} holds {bad} non-finite values (NaN/inf)")
        return t


def load_weights(model_dir: str | Path, cfg: ModelConfig, dtype: torch.dtype,
                 device: torch.device,
                 shard: Callable[[str], tuple[int, int, int] | None] | None = None) -> ModelWeights:
    """The model's weights in the engine's fused layout. `shard` (tensor parallel, see
    model/parallel.py `weight_slicer`) names the (dim, start, stop) part of a tensor this process
    reads; shapes are still checked against the full tensor in the file."""
    model_dir = Path(model_dir)
    return _assemble(_Reader(checkpoint_files(model_dir), dtype, device, shard), cfg)


class _TensorReader:
    """Named tensors already in memory (a transformers model's state_dict), checked like a file's."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype, device: torch.device):
        self.files, self.dtype, self.device = tensors, dtype, device

    def get(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in self.files:
            raise WeightsError(f"tensor {name!r} is missing from the state dict ({len(self.files)} tensors)")
        t = self.files[name]
        if tuple(t.shape) != tuple(shape):
            raise WeightsError(f"tensor {name!r} has shape {tuple(t.shape)}, the config expects {tuple(shape)}")
        t = t.detach().to(device=self.device, dtype=self.dtype)  # no copy when both already match
        if not torch.isfinite(t).all():
            raise WeightsError(f"tensor {name!r} holds {(~torch.isfinite(t)).sum().item()} non-finite values")
        return t


def weights_from_tensors(tensors: Mapping[str, torch.Tensor], cfg: ModelConfig, dtype: torch.dtype,
                         device: torch.device) -> ModelWeights:
    """The fused layout from tensors in memory named as in a checkpoint (e.g. a transformers
    model's state_dict()): a bench builds a random model once and hands it to both systems.
    Unfused tensors of the right dtype and device are shared, not copied."""
    return _assemble(_TensorReader(tensors, dtype, device), cfg)


def _assemble(r, cfg: ModelConfig) -> ModelWeights:
    """ModelWeights from a reader whose get(name, shape) returns checked tensors."""
    H, I, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.q_size, cfg.kv_size
    layers = []
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        qkv = torch.cat([r.get(p + "self_attn.q_proj.weight", (q, H)),
                         r.get(p + "self_attn.k_proj.weight", (kv, H)),
                         r.get(p + "self_attn.v_proj.weight", (kv, H))])
        bias = None
        if cfg.qkv_bias:
            bias = torch.cat([r.get(p + "self_attn.q_proj.bias", (q,)),
                              r.get(p + "self_attn.k_proj.bias", (kv,)),
                              r.get(p + "self_attn.v_proj.bias", (kv,))])
        layers.append(LayerWeights(
            input_norm=r.get(p + "input_layernorm.weight", (H,)),
            qkv=qkv,
            qkv_bias=bias,
            o=r.get(p + "self_attn.o_proj.weight", (H, q)),
            post_norm=r.get(p + "post_attention_layernorm.weight", (H,)),
            gate_up=torch.cat([r.get(p + "mlp.gate_proj.weight", (I, H)),
                               r.get(p + "mlp.up_proj.weight", (I, H))]),
            down=r.get(p + "mlp.down_proj.weight", (H, I)),
        ))
    embed = r.get("model.embed_tokens.weight", (V, H))
    if cfg.tie_word_embeddings and "lm_head.weight" not in r.files:
        lm_head = embed
    else:
        lm_head = r.get("lm_head.weight", (V, H))
    return ModelWeights(embed=embed, layers=layers, norm=r.get("model.norm.weight", (H,)), lm_head=lm_head)
