"""PEFT LoRA adapters -> stacked slots, one stack per fused projection of each layer.

Layout (the contract of `kernels/lora.py`): for a projection group with slices (q|k|v, gate|up,
o, down), `A: [n_slots, n_slices * r_max, in]` and `B: [n_slots, out_total, r_max]` with B already
multiplied by the adapter's scaling (alpha/r, or alpha/sqrt(r) with use_rslora). Ranks below
r_max and slices an adapter does not target are zero-padded, which adds exactly zero. Which
adapter holds which slot is the engine's slot table (model/adapter_slots.py: a fixed capacity,
slots loaded and freed live); slot -1 means "base model" and costs nothing.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from warmfast.errors import MissingPathError
from warmfast.model.adapter_config import AdapterError, module_name, read_lora_config, refuse  # noqa: F401 (AdapterError: re-exported)
from warmfast.model.config import ModelConfig
from warmfast.model.weights import open_safetensors

# fused group -> its PEFT module names, in the order of the fused base weight's output rows
GROUPS = {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",),
          "gate_up": ("gate_proj", "up_proj"), "down": ("down_proj",)}
MODULE_GROUP = {m: g for g, mods in GROUPS.items() for m in mods}
_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.[\w-]+)?\.weight$")


@dataclass(slots=True)
class LoraAdapter:
    """One PEFT adapter as loaded: per (layer, module) the A [r, in] and scaled B [out, r]."""
    name: str
    path: Path
    rank: int
    alpha: float
    use_rslora: bool
    weights: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]

    @property
    def max_rank(self) -> int:
        return max(a.shape[0] for a, _ in self.weights.values())

    @property
    def modules(self) -> list[str]:
        """The projections it puts a LoRA on (in some layer), in the base model's order."""
        held = {m for _, m in self.weights}
        return [m for mods in GROUPS.values() for m in mods if m in held]


@dataclass(slots=True)
class LoraGroupStack:
    A: torch.Tensor  # [n_slots, n_slices * r_max, in]
    B: torch.Tensor  # [n_slots, out_total, r_max], scaled
    slice_offsets: list[int]  # len n_slices + 1, over out_total
    # bumped by every in-place write of a slot (model/adapter_slots.py), so what a backend derives
    # from A or B and keeps between calls (TorchOps' block-diagonal B) is rebuilt after a live load
    version: int = 0


def load_adapter(name: str, path: str | Path, cfg: ModelConfig) -> LoraAdapter:
    """Read and validate a PEFT LoRA folder against the base model `cfg` (model/adapter_config.py
    for the config; here the tensors: names, pairs, ranks equal to the config's, shapes, finite)."""
    path = Path(path)
    conf_path, weights_path = path / "adapter_config.json", path / "adapter_model.safetensors"
    if not path.is_dir():
        raise MissingPathError(f"adapter {name!r}: folder {str(path)!r} does not exist")
    for p in (conf_path, weights_path):
        if not p.is_file():
            raise MissingPathError(f"adapter {name!r}: {p} not found (a PEFT LoRA adapter folder "
                                   "holds adapter_config.json and adapter_model.safetensors)")
    shapes = cfg.module_shapes()
    lora = read_lora_config(name, path, [module_name(i, m) for i in range(cfg.num_layers) for m in shapes])
    raw: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    with open_safetensors(weights_path, f"weights of adapter {name!r}") as f:
        for key in f.keys():
            m = _KEY.search(key)
            if m is None:
                if "lora_" in key or "modules_to_save" in key:
                    raise refuse(name, path, f"tensor {key!r}")
                raise AdapterError(f"adapter {name!r}: unexpected tensor {key!r} in {weights_path}")
            layer, module, ab = int(m.group(1)), m.group(2), m.group(3)
            if module not in shapes:
                raise refuse(name, path, f"a LoRA on {module} (tensor {key!r})")
            if layer >= cfg.num_layers:
                raise AdapterError(f"adapter {name!r} was made for another base model: tensor {key!r} "
                                   f"is for layer {layer}, the model has {cfg.num_layers} layers")
            if not lora.targets(module_name(layer, module)):  # PEFT would silently ignore it
                raise AdapterError(f"adapter {name!r}: tensor {key!r} in {weights_path} is for "
                                   f"{module_name(layer, module)}, which target_modules "
                                   f"{list(lora.target_modules) if isinstance(lora.target_modules, tuple) else lora.target_modules!r} "
                                   f"does not cover ({conf_path})")
            t = f.get_tensor(key).float()
            if not torch.isfinite(t).all():
                raise AdapterError(f"adapter {name!r}: tensor {key!r} in {weights_path} holds non-finite values")
            raw.setdefault((layer, module), {})[ab] = t

    weights = {}
    for (layer, module), ab in raw.items():
        where = f"adapter {name!r} ({weights_path}), layer {layer} {module}"
        if set(ab) != {"A", "B"}:
            raise AdapterError(f"{where}: has lora_{''.join(ab)} but not both lora_A and lora_B")
        a, b = ab["A"], ab["B"]
        d_in, d_out = shapes[module]
        if a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0]:
            raise AdapterError(f"{where}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} "
                               "are not [r, in] and [out, r] with the same r")
        r = lora.rank_of(module_name(layer, module))
        if a.shape[0] != r:  # PEFT builds [r, in] from the config and refuses these weights
            raise AdapterError(f"{where}: lora_A {tuple(a.shape)} has rank {a.shape[0]}, but "
                               f"{conf_path} gives r={r}{' (rank_pattern)' if r != lora.rank else ''}; "
                               "the config and the weights disagree (PEFT refuses this adapter too)")
        if (a.shape[1], b.shape[0]) != (d_in, d_out):
            raise AdapterError(
                f"{where}: LoRA shape mismatch (adapter for another base model?): lora_A is "
                f"{tuple(a.shape)} and lora_B {tuple(b.shape)}, the model's {module} maps "
                f"in_features={d_in} -> out_features={d_out} (config {cfg.source})")
        scaling = lora.alpha / math.sqrt(r) if lora.use_rslora else lora.alpha / r
        weights[(layer, module)] = (a, b * scaling)
    if not weights:
        raise AdapterError(f"adapter {name!r}: {weights_path} holds no LoRA tensors")
    return LoraAdapter(name=name, path=path, rank=lora.rank, alpha=lora.alpha, use_rslora=lora.use_rslora,
                       weights=weights)


def stack_adapters(adapters: list[LoraAdapter], cfg: ModelConfig, dtype: torch.dtype,
                   device: torch.device, shard=None, n_slots: int | None = None, r_max: int | None = None,
                   groups: tuple[str, ...] | None = None) -> list[dict[str, LoraGroupStack]]:
    """Per layer: fused group name -> stacked slots; adapter i in slot i.

    By default the stack is exactly as large as `adapters` need: len(adapters) slots, their largest
    rank, and in each layer only the groups some adapter targets there. A fixed capacity
    (model/adapter_slots.py) passes `n_slots`, `r_max` and `groups` (allocated in every layer);
    slots past len(adapters) are zero. `shard` (tensor parallel, see model/parallel.py
    `lora_slicer`) maps a full stack (group, A, B, slice_offsets) to this rank's part before it
    is moved to the device."""
    n = len(adapters) if n_slots is None else n_slots
    if r_max is None:
        r_max = max((a.max_rank for a in adapters), default=0)
    if n == 0 or r_max == 0:
        return [{} for _ in range(cfg.num_layers)]
    if len(adapters) > n or any(a.max_rank > r_max for a in adapters):
        raise ValueError(f"stack_adapters: {len(adapters)} adapters of ranks {[a.max_rank for a in adapters]} "
                         f"do not fit {n} slots of rank {r_max}")
    shapes = cfg.module_shapes()
    stacks: list[dict[str, LoraGroupStack]] = []
    for layer in range(cfg.num_layers):
        per_group = {}
        for group, modules in GROUPS.items():
            if groups is None:
                if not any((layer, m) in a.weights for a in adapters for m in modules):
                    continue
            elif group not in groups:
                continue
            d_in = shapes[modules[0]][0]
            offsets = [0]
            for m in modules:
                offsets.append(offsets[-1] + shapes[m][1])
            A = torch.zeros(n, len(modules) * r_max, d_in)
            B = torch.zeros(n, offsets[-1], r_max)
            for slot, adapter in enumerate(adapters):
                for j, m in enumerate(modules):
                    if (layer, m) not in adapter.weights:
                        continue
                    a, b = adapter.weights[(layer, m)]
                    r = a.shape[0]
                    A[slot, j * r_max:j * r_max + r] = a
                    B[slot, offsets[j]:offsets[j + 1], :r] = b
            if shard is not None:
                A, B, offsets = shard(group, A, B, offsets)
            per_group[group] = LoraGroupStack(A.to(device, dtype), B.to(device, dtype), offsets)
        stacks.append(per_group)
    return stacks
