"""A PEFT LoRA adapter's adapter_config.json: read, validated as PEFT validates it, and canonicalised.

Validation follows PEFT's `LoraConfig` and `inject_adapter`: `r` (default 8) is a positive
integer, `lora_alpha` (default 8) a number, `use_rslora` a boolean, `rank_pattern` a mapping of
module patterns to positive ranks; `target_modules` (a list of names, or one string that is a
regex over full module names, or "all-linear") must match at least one projection of the base
model. Features warmfast does not run (DoRA, biases, modules_to_save, ...) are refused by name.
The rank of each module's weights is checked against this config by `adapters.load_adapter`.

`canonical_config` is the part of the config that determines what the adapter computes, in a
form that does not depend on how it was saved (sorted target modules, no base-model path): with
the weights' content it is the adapter's identity in a run's result keys (run/plan.py).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from warmfast.errors import WarmfastError

SUPPORTED = "LoRA on any subset of q,k,v,o,gate,up,down projections (rank, alpha, use_rslora, rank_pattern)"
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
# settings that never change what an adapter computes (where it came from, how it was trained)
_PROVENANCE = ("base_model_name_or_path", "revision", "inference_mode", "task_type", "auto_mapping",
               "peft_version", "lora_dropout", "init_lora_weights", "loftq_config", "eva_config",
               "corda_config", "megatron_config", "megatron_core", "runtime_config")
_DEFAULTS = {"r": 8, "lora_alpha": 8, "use_rslora": False, "rank_pattern": {}, "alpha_pattern": {},
             "use_dora": False, "bias": "none", "modules_to_save": None, "layer_replication": None}


class AdapterError(WarmfastError, ValueError):
    """An adapter warmfast cannot apply to this base model."""


def refuse(name: str, path: Path, feature: str) -> AdapterError:
    return AdapterError(f"adapter {name!r} ({path}) uses {feature}, which warmfast does not "
                        f"support yet; supported: {SUPPORTED}")


def module_name(layer: int, module: str) -> str:
    """The module's full name in the HF model, as PEFT matches target_modules against it."""
    return f"model.layers.{layer}.{'self_attn' if module in ATTENTION else 'mlp'}.{module}"


@dataclass(frozen=True, slots=True)
class LoraConfig:
    rank: int
    alpha: float
    use_rslora: bool
    rank_pattern: dict[str, int]
    target_modules: str | tuple[str, ...]

    def targets(self, full_name: str) -> bool:
        """Whether PEFT would put a LoRA on the module `full_name` (check_target_module_exists)."""
        t = self.target_modules
        if isinstance(t, str):
            return t == "all-linear" or re.fullmatch(t, full_name) is not None
        return any(full_name == m or full_name.endswith("." + m) for m in t)

    def rank_of(self, full_name: str) -> int:
        """r, or the rank_pattern entry whose pattern matches the module (PEFT's get_pattern_key)."""
        for pattern, r in self.rank_pattern.items():
            if re.match(rf"(.*\.)?({pattern})$", full_name):
                return r
        return self.rank


def _read_json(name: str, path: Path) -> dict:
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise AdapterError(f"adapter {name!r}: {path} is not valid JSON: {err}") from err
    if not isinstance(conf, dict):
        raise AdapterError(f"adapter {name!r}: {path} must hold a JSON object, got {type(conf).__name__}")
    return conf


def _positive_int(value, what: str) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def read_lora_config(name: str, path: Path, module_names: list[str]) -> LoraConfig:
    """The validated LoRA settings of `path/adapter_config.json`; module_names: the full names of
    the base model's targetable projections (every layer)."""
    conf_path = path / "adapter_config.json"
    conf = {**_DEFAULTS, **_read_json(name, conf_path)}
    where = f"adapter {name!r}: {conf_path}"
    if conf.get("peft_type", "LORA") != "LORA":
        raise refuse(name, path, f"peft_type={conf.get('peft_type')!r}")
    if conf["use_dora"]:
        raise refuse(name, path, "DoRA (use_dora=true)")
    if conf["modules_to_save"]:
        raise refuse(name, path, f"modules_to_save={conf['modules_to_save']}")
    if conf["bias"] != "none" or conf.get("lora_bias"):
        raise refuse(name, path, f"trained biases (bias={conf['bias']!r})")
    if conf["alpha_pattern"]:
        raise refuse(name, path, f"alpha_pattern={conf['alpha_pattern']}")
    if conf["layer_replication"]:
        raise refuse(name, path, "layer_replication")
    if conf.get("trainable_token_indices"):
        raise refuse(name, path, f"trainable_token_indices={conf['trainable_token_indices']}")
    if not _positive_int(conf["r"], "r"):
        raise AdapterError(f"{where}: r must be a positive integer (PEFT refuses anything else), got {conf['r']!r}")
    alpha = conf["lora_alpha"]
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha != alpha:
        raise AdapterError(f"{where}: lora_alpha must be a number, got {alpha!r}")
    if not isinstance(conf["use_rslora"], bool):
        raise AdapterError(f"{where}: use_rslora must be true or false, got {conf['use_rslora']!r}")
    pattern = conf["rank_pattern"] or {}
    if not isinstance(pattern, dict) or not all(_positive_int(v, k) for k, v in pattern.items()):
        raise AdapterError(f"{where}: rank_pattern must map module patterns to positive integers, got {pattern!r}")
    targets = conf.get("target_modules")
    if isinstance(targets, list) and all(isinstance(t, str) and t for t in targets) and targets:
        targets = tuple(targets)
    elif not (isinstance(targets, str) and targets):
        raise AdapterError(f"{where}: target_modules must be a list of module names or a regex string, "
                           f"got {targets!r}")
    for bad in ("lm_head", "embed_tokens"):
        if bad in (targets if isinstance(targets, tuple) else (targets,)) or (
                isinstance(targets, tuple) and any(t.endswith("." + bad) for t in targets)):
            raise refuse(name, path, f"a LoRA on {bad} (target_modules={list(targets) if isinstance(targets, tuple) else targets})")
    lora = LoraConfig(conf["r"], float(alpha), conf["use_rslora"], dict(pattern), targets)
    if not any(lora.targets(m) for m in module_names):
        short = sorted({m.rsplit(".", 1)[1] for m in module_names})
        raise AdapterError(f"{where}: target_modules {_show(targets)} not found in the base model "
                           f"(its LoRA-targetable modules are {short})")
    return lora


def _show(targets) -> str:
    return repr(list(targets) if isinstance(targets, tuple) else targets)


def canonical_config(path: Path) -> dict:
    """The adapter config as it bears on results: PEFT defaults filled in, provenance and training
    settings dropped, list-valued settings (target_modules, ...) sorted, so re-saving an adapter
    (PEFT writes target_modules from a set, in any order) gives the same dict."""
    raw = {**_DEFAULTS, **_read_json(path.name, path / "adapter_config.json")}
    out = {}
    for key, value in raw.items():
        if key in _PROVENANCE:
            continue
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = sorted(set(value))
        out[key] = value
    return out
