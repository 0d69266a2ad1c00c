"""Live adapters: LoRA stacks preallocated at a fixed capacity, and the name -> slot table over them.

The capacity (`AdapterCapacity`: how many adapters, their largest rank, which projections) is
fixed when the engine starts, and every stack of model/adapters.py's layout is allocated at it
once: `A: [max_adapters, n_slices * max_rank, in]`, `B: [max_adapters, out_total, max_rank]`, for
every fused group the capacity covers, in every layer. Loading an adapter writes its slot in
place (zero-padded to max_rank, zeros for the slices it does not target: both add exactly zero);
unloading zeroes the slot and frees it for the next load. Nothing is reallocated, so the base
weights, the KV pool and captured CUDA graphs (which hold the stacks' addresses) all stay valid,
and between two scheduler steps a slot-table update is all that changes.

A request resolves its adapter to a slot once, when it is admitted, and keeps it to the end. The
step core counts those holders (`acquire` at admission, `release` when a request finishes or is
aborted); an adapter with holders cannot be unloaded, so a slot never changes under a request.
Loads and unloads are not thread-safe: make them between steps, from the thread that drives the
engine. Reading the files is the slow part (`load` = `adapters.load_adapter` + `add`): a server can
read an adapter elsewhere and only `add` it between steps.

Tensor parallel: `shard` (model/parallel.py `lora_slicer`) cuts each slot's full tensors to this
rank's part, exactly as at load time; every rank must make the same load/unload calls in the
same order (as it makes the same score/generate calls), so the slot tables stay identical.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from warmfast.model.adapters import GROUPS, MODULE_GROUP, AdapterError, LoraAdapter, load_adapter, stack_adapters
from warmfast.model.config import ModelConfig

ALL_MODULES = tuple(m for mods in GROUPS.values() for m in mods)
DEFAULT_RANK = 16  # max_lora_rank when max_adapters is given but no adapter is loaded at start


class AdapterCapacityError(AdapterError):
    """An adapter does not fit the engine's fixed adapter capacity (slots, rank or projections)."""


class AdapterInUseError(AdapterError):
    """An adapter cannot be unloaded while unfinished requests use it."""


@dataclass(frozen=True, slots=True)
class AdapterCapacity:
    """What the preallocated LoRA stacks hold: `max_adapters` slots of rank up to `max_rank` on
    the projections `modules` (whole fused groups: q_proj brings k_proj and v_proj along)."""
    max_adapters: int
    max_rank: int
    modules: tuple[str, ...]

    def __post_init__(self):
        for field, value, low in (("max_adapters", self.max_adapters, 0), ("max_lora_rank", self.max_rank, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise AdapterError(f"{field} must be an integer >= {low}, got {value!r}")
        bad = [m for m in self.modules if m not in MODULE_GROUP]
        if bad or not self.modules:
            raise AdapterError(f"lora_target_modules must be a non-empty list of {list(ALL_MODULES)}, "
                               f"got {list(self.modules)}")
        groups = {MODULE_GROUP[m] for m in self.modules}
        object.__setattr__(self, "modules", tuple(m for m in ALL_MODULES if MODULE_GROUP[m] in groups))

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(g for g in GROUPS if GROUPS[g][0] in self.modules)

    @classmethod
    def for_adapters(cls, adapters: list[LoraAdapter], max_adapters: int | None = None,
                     max_rank: int | None = None, modules=None) -> "AdapterCapacity":
        """Defaults: exactly what `adapters` need (their number, largest rank and projections);
        with none of them, max_rank=DEFAULT_RANK and every projection."""
        if max_adapters is None:
            max_adapters = len(adapters)
        if max_rank is None:
            max_rank = max((a.max_rank for a in adapters), default=DEFAULT_RANK)
        if modules is None:
            held = {m for a in adapters for m in a.modules}
            modules = tuple(m for m in ALL_MODULES if m in held) if held else ALL_MODULES
        elif isinstance(modules, str):
            modules = (modules,)
        return cls(max_adapters, max_rank, tuple(modules))

    def describe(self) -> str:
        return (f"max_adapters={self.max_adapters}, max_lora_rank={self.max_rank}, "
                f"lora_target_modules={list(self.modules)}")

    def check(self, adapter: LoraAdapter, loaded: list[str]) -> None:
        """Raise AdapterCapacityError unless `adapter` fits beside the `loaded` adapters."""
        outside = [m for m in adapter.modules if m not in self.modules]
        problem = None
        if len(loaded) >= self.max_adapters:
            problem = (f"all {self.max_adapters} adapter slots are taken (by {loaded}); unload one first"
                       if self.max_adapters else "the engine was started without adapter slots")
        elif adapter.max_rank > self.max_rank:
            problem = f"its rank {adapter.max_rank} exceeds max_lora_rank={self.max_rank}"
        elif outside:
            problem = f"it targets {outside}, which the engine's LoRA stacks do not cover"
        if problem is not None:
            raise AdapterCapacityError(
                f"adapter {adapter.name!r} ({adapter.path}; rank {adapter.max_rank}, targets "
                f"{adapter.modules}) does not fit the adapter capacity fixed at start "
                f"({self.describe()}): {problem}. The capacity is set by Engine.from_pretrained("
                "max_adapters=, max_lora_rank=, lora_target_modules=)")


class AdapterSlots:
    """The engine's LoRA stacks (`stacks`, shared with the model) and which adapter holds each slot."""

    def __init__(self, cfg: ModelConfig, capacity: AdapterCapacity, dtype: torch.dtype,
                 device: torch.device, shard=None):
        self.cfg, self.capacity = cfg, capacity  # cfg: the full model's (not a TP rank's view)
        self.dtype, self.device, self.shard = dtype, device, shard
        self.stacks = stack_adapters([], cfg, dtype, device, shard, n_slots=capacity.max_adapters,
                                     r_max=capacity.max_rank, groups=capacity.groups)
        self.names: list[str | None] = [None] * capacity.max_adapters  # slot -> adapter name
        self.paths: list[Path | None] = [None] * capacity.max_adapters
        self.holders = [0] * capacity.max_adapters  # slot -> unfinished requests using it

    @property
    def loaded(self) -> list[str]:
        """Names of the loaded adapters, in slot order."""
        return [n for n in self.names if n is not None]

    def slot_of(self, name: str) -> int | None:
        return self.names.index(name) if name in self.names else None

    def load(self, name: str, path: str | Path) -> int:
        """Read the PEFT adapter at `path` (validated against the base model) into a free slot."""
        return self.add(load_adapter(name, path, self.cfg))

    def add(self, adapter: LoraAdapter) -> int:
        """Write an already read adapter into the lowest free slot; returns the slot."""
        if adapter.name in self.names:
            slot = self.names.index(adapter.name)
            raise AdapterError(f"adapter {adapter.name!r} is already loaded (slot {slot}, from "
                               f"{self.paths[slot]}); unload it first to replace it")
        self.capacity.check(adapter, self.loaded)
        slot = self.names.index(None)
        one = stack_adapters([adapter], self.cfg, self.dtype, self.device, self.shard, n_slots=1,
                             r_max=self.capacity.max_rank, groups=self.capacity.groups)
        self._write(slot, one)
        self.names[slot], self.paths[slot] = adapter.name, adapter.path
        return slot

    def remove(self, name: str) -> int:
        """Unload `name`: its slot is zeroed and free again. Refused while requests hold it."""
        slot = self.slot_of(name)
        if slot is None:
            raise AdapterError(f"unload_adapter: no adapter named {name!r} is loaded; loaded adapters "
                               f"are {self.loaded}")
        if self.holders[slot]:
            raise AdapterInUseError(f"unload_adapter: adapter {name!r} (slot {slot}) is used by "
                                    f"{self.holders[slot]} unfinished request(s); let them finish or "
                                    "abort them, then unload it")
        self._write(slot, None)
        self.names[slot] = self.paths[slot] = None
        return slot

    def acquire(self, slot: int) -> None:
        """A request using `slot` was admitted (slot -1, the base model, is not counted)."""
        if slot >= 0:
            if self.names[slot] is None:
                raise AdapterError(f"acquire: slot {slot} holds no adapter")
            self.holders[slot] += 1

    def release(self, slot: int) -> None:
        """A request using `slot` finished or was aborted."""
        if slot >= 0:
            if self.holders[slot] <= 0:
                raise AdapterError(f"release: slot {slot} ({self.names[slot]!r}) has no unfinished requests")
            self.holders[slot] -= 1

    def _write(self, slot: int, one: list[dict] | None) -> None:
        # one: the adapter's single-slot stacks, same groups and shapes as ours; None: zero the slot
        for layer, per_group in enumerate(self.stacks):
            for group, stack in per_group.items():
                if one is None:
                    stack.A[slot].zero_()
                    stack.B[slot].zero_()
                else:
                    stack.A[slot].copy_(one[layer][group].A[0])
                    stack.B[slot].copy_(one[layer][group].B[0])
                stack.version += 1
