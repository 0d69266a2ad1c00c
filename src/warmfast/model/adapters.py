"""PEFT LoRA adapters -> stacked slots, one stack per fused projection of each layer.

Layout (the contract of `kernels/lora.py`): for a projection group with slices (q|k|v, gate|up,
o, down), `A: [n_slots, n_slices * r_max, in]` and `B: [n_slots, out_total, r_max]` with B already
multiplied by the adapter's scaling (alpha/r, or alpha/sqrt(r) with use_rslora). Ranks below
r_max and slices an adapter does not target are zero-padded, which adds exactly zero. Slot i is
the i-th adapter; slot -1 means "base model" and costs nothing.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from warmfast.model.config import ModelConfig

# fused group -> its PEFT module names, in the order of the fused base weight's output rows
GROUPS = {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",),
          "gate_up": ("gate_proj", "up_proj"), "down": ("down_proj",)}
MODULE_GROUP = {m: g for g, mods in GROUPS.items() for m in mods}
SUPPORTED = "LoRA on any subset of q,k,v,o,gate,up,down projections (rank, alpha, use_rslora, rank_pattern)"
_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.[\w-]+)?\.weight$")


class AdapterError(ValueError):
    """An adapter warmfast cannot apply to this base model."""


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


@dataclass(slots=True)
class LoraGroupStack:
    A: torch.Tensor  # [n_slots, n_slices * r_max, in]
    B: torch.Tensor  # [n_slots, out_total, r_max], scaled
    slice_offsets: list[int]  # len n_slices + 1, over out_total


def _refuse(name: str, path: Path, feature: str) -> AdapterError:
    return AdapterError(f"adapter {name!r} ({path}) uses {feature}, which warmfast does not "
                        f"support yet; supported: {SUPPORTED}")


def load_adapter(name: str, path: str | Path, cfg: ModelConfig) -> LoraAdapter:
    path = Path(path)
    conf_path, weights_path = path / "adapter_config.json", path / "adapter_model.safetensors"
    if not path.is_dir():
        raise FileNotFoundError(f"adapter {name!r}: folder {str(path)!r} does not exist")
    for p in (conf_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"adapter {name!r}: {p} not found (a PEFT LoRA adapter folder "
                                    "holds adapter_config.json and adapter_model.safetensors)")
    conf = json.loads(conf_path.read_text())
    if conf.get("peft_type", "LORA") != "LORA":
        raise _refuse(name, path, f"peft_type={conf.get('peft_type')!r}")
    if conf.get("use_dora"):
        raise _refuse(name, path, "DoRA (use_dora=true)")
    if conf.get("modules_to_save"):
        raise _refuse(name, path, f"modules_to_save={conf['modules_to_save']}")
    if conf.get("bias", "none") != "none" or conf.get("lora_bias"):
        raise _refuse(name, path, f"trained biases (bias={conf.get('bias')!r})")
    if conf.get("alpha_pattern"):
        raise _refuse(name, path, f"alpha_pattern={conf['alpha_pattern']}")
    if conf.get("layer_replication"):
        raise _refuse(name, path, "layer_replication")
    targets = conf.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    for bad in ("lm_head", "embed_tokens"):
        if any(bad in t for t in targets):
            raise _refuse(name, path, f"a LoRA on {bad} (target_modules={targets})")

    rank, alpha, rslora = int(conf["r"]), float(conf["lora_alpha"]), bool(conf.get("use_rslora"))
    shapes = cfg.module_shapes()
    raw: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    with safe_open(str(weights_path), framework="pt") as f:
        for key in f.keys():
            m = _KEY.search(key)
            if m is None:
                if "lora_" in key or "modules_to_save" in key:
                    raise _refuse(name, path, f"tensor {key!r}")
                raise AdapterError(f"adapter {name!r}: unexpected tensor {key!r} in {weights_path}")
            layer, module, ab = int(m.group(1)), m.group(2), m.group(3)
            if module not in shapes:
                raise _refuse(name, path, f"a LoRA on {module} (tensor {key!r})")
            if layer >= cfg.num_layers:
                raise AdapterError(f"adapter {name!r} was made for another base model: tensor {key!r} "
                                   f"is for layer {layer}, the model has {cfg.num_layers} layers")
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
        r = a.shape[0]
        if a.dim() != 2 or b.dim() != 2 or b.shape[1] != r:
            raise AdapterError(f"{where}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} "
                               "are not [r, in] and [out, r] with the same r")
        if (a.shape[1], b.shape[0]) != (d_in, d_out):
            raise AdapterError(
                f"{where}: LoRA shape mismatch (adapter for another base model?): lora_A is "
                f"{tuple(a.shape)} and lora_B {tuple(b.shape)}, the model's {module} maps "
                f"in_features={d_in} -> out_features={d_out} (config {cfg.source})")
        scaling = alpha / math.sqrt(r) if rslora else alpha / r
        weights[(layer, module)] = (a, b * scaling)
    if not weights:
        raise AdapterError(f"adapter {name!r}: {weights_path} holds no LoRA tensors")
    return LoraAdapter(name=name, path=path, rank=rank, alpha=alpha, use_rslora=rslora, weights=weights)


def stack_adapters(adapters: list[LoraAdapter], cfg: ModelConfig, dtype: torch.dtype,
                   device: torch.device, shard=None) -> list[dict[str, LoraGroupStack]]:
    """Per layer: fused group name -> stacked slots, only for groups some adapter targets.

    `shard` (tensor parallel, see model/parallel.py `lora_slicer`) maps a full stack
    (group, A, B, slice_offsets) to this rank's part before it is moved to the device."""
    if not adapters:
        return [{} for _ in range(cfg.num_layers)]
    r_max = max(a.max_rank for a in adapters)
    shapes = cfg.module_shapes()
    n = len(adapters)
    stacks: list[dict[str, LoraGroupStack]] = []
    for layer in range(cfg.num_layers):
        per_group = {}
        for group, modules in GROUPS.items():
            if not any((layer, m) in a.weights for a in adapters for m in modules):
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
