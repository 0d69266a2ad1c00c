"""The public API (a contract, see DESIGN.md): Engine, ScoreRequest/Result, GenerateRequest/Result
(the request and result types live in engine/requests.py), and the step-driven core behind them
(Engine.core(): engine/core.py)."""
from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from pathlib import Path

import torch

from warmfast.engine import generator, scorer
from warmfast.engine.backend import select_backend
from warmfast.engine.core import CoreConfig, EngineCore
from warmfast.engine.device import check_device, resolve_dtype
from warmfast.engine.requests import (GenerateRequest, GenerateResult, RequestOutput, ScoreRequest,  # noqa: F401
                                      ScoreResult, TokenLogprob)
from warmfast.engine.tensor_parallel import TPWorkers, agree, start_workers, tp_devices
from warmfast.engine.tokens import TokenizerCache
from warmfast.errors import InputError, UnknownAdapterError
from warmfast.kernels.rope import rope_inv_freq
from warmfast.model.adapter_slots import AdapterCapacity, AdapterSlots
from warmfast.model.adapters import AdapterError, load_adapter
from warmfast.model.config import ModelConfig
from warmfast.model.gguf import cached_conversion
from warmfast.model.gpt2 import GPT2Model, is_gpt2_folder, load_gpt2
from warmfast.model.llama import Model
from warmfast.model.parallel import (TensorParallelError, TPGroup, check_divisible, local_config, lora_slicer,
                                     weight_slicer)
from warmfast.model.weights import load_weights

log = logging.getLogger("warmfast")
BASE_NAMES = (None, "base")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_adapter_name(name) -> None:
    if name in BASE_NAMES or not isinstance(name, str) or not name:
        raise AdapterError(f"adapter name {name!r} is reserved or empty: 'base'/None mean "
                           "the model without an adapter")


class Engine:
    """A base model and any number of LoRA adapters, scored and sampled in shared batches."""

    def __init__(self, model: Model | GPT2Model, tokenizer: TokenizerCache, adapter_slots: AdapterSlots | None,
                 device: torch.device, dtype: torch.dtype, backend: str, max_batch_tokens: int,
                 max_seq_len: int, tp: TPGroup | None = None):
        self.model, self.tok = model, tokenizer
        self.tp = tp  # this process's place in a tensor-parallel engine, None = one process
        self.tp_workers: TPWorkers | None = None  # rank 0 of a tensor-parallel engine: the other ranks
        self._cores = 0  # EngineCores made so far (each names its KV cache on every rank)
        self.adapter_slots = adapter_slots  # name -> slot over model.lora (None: GPT-2, no adapters)
        self.device, self.dtype = device, dtype
        self.ops = select_backend(backend, device)
        self.backend = self.ops.name
        self.max_batch_tokens, self.max_seq_len = max_batch_tokens, max_seq_len
        self.generate_stats = None  # GenerateStats of the last generate() call (engine/generator.py)
        self.decode_graphs = None  # CUDA graphs + KV pool kept across generate() calls (engine/cuda_graphs.py)
        log.info("warmfast engine: backend=%s device=%s dtype=%s adapters=%s%s", self.backend,
                 device, dtype, self.adapter_names,
                 "" if adapter_slots is None else f" ({adapter_slots.capacity.describe()})")

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, adapters: dict[str, str | Path] | None = None,
                        device: str = "cpu", dtype: str = "float32", backend: str = "auto",
                        max_batch_tokens: int = 8192, max_seq_len: int | None = None,
                        tensor_parallel: int = 1, max_adapters: int | None = None,
                        max_lora_rank: int | None = None,
                        lora_target_modules: list[str] | None = None) -> "Engine":
        """tensor_parallel=N > 1: the model is split over N ranks: this process is rank 0 and
        starts N-1 worker processes (engine/tensor_parallel.py); each loads only its slice of
        every weight and adapter. Nothing else changes for the caller: the engine schedules here
        and drives the workers each step. CPU: gloo; CUDA: NCCL over N consecutive GPUs from
        `device`'s index (cuda = cuda:0, or cuda:LOCAL_RANK*N under torchrun). close() stops them.

        Adapter capacity, fixed here for the engine's life (`load_adapter` fills it later):
        max_adapters slots of rank up to max_lora_rank on lora_target_modules (PEFT module names;
        whole fused groups: q_proj covers k_proj and v_proj). Defaults: exactly what `adapters`
        need, so an engine started without adapters has no slots and costs nothing; pass
        max_adapters (rank default 16, every projection) to load adapters later."""
        dev = check_device(device)
        if str(model_dir).endswith(".gguf"):  # de-quantised once into a cache folder (model/gguf.py)
            model_dir = cached_conversion(model_dir, "float32" if dtype == "auto" else dtype)
        load = dict(model_dir=str(model_dir), adapters={k: str(v) for k, v in (adapters or {}).items()},
                    dtype=resolve_dtype(dtype, dev, model_dir),  # "auto": bf16 on a GPU that has it, fp32 on CPU
                    backend=backend, max_batch_tokens=max_batch_tokens, max_seq_len=max_seq_len,
                    max_adapters=max_adapters, max_lora_rank=max_lora_rank,
                    lora_target_modules=lora_target_modules)
        if tensor_parallel == 1:
            return cls._load(**load, device=dev)
        return cls._load_parallel(tensor_parallel, dev, load)

    @classmethod
    def _load_parallel(cls, n: int, dev: torch.device, load: dict) -> "Engine":
        """Rank 0 of an n-rank engine: start the workers, load this shard, agree on the outcome."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise TensorParallelError(f"tensor_parallel must be a positive integer, got {n!r}")
        if is_gpt2_folder(load["model_dir"]):
            raise TensorParallelError(f"{load['model_dir']}: tensor_parallel={n} is not supported for GPT-2 "
                                      "(warmfast runs GPT-2 on one device, for scoring only)")
        check_divisible(ModelConfig.from_folder(load["model_dir"]), n)  # before any process starts
        devices = tp_devices(dev, n)
        workers = start_workers(n, devices, load, threads=max(1, torch.get_num_threads() // n))
        engine = error = None
        try:
            try:
                engine = cls._load(**load, device=devices[0], tp=(0, n))
            except Exception as err:  # the workers learn of it in agree() and stop
                error = err
            statuses = agree(None if error is None else f"{type(error).__name__}: {error}", n)
        except BaseException as err:
            workers.fail(err)
            raise
        failed = [f"rank {r}: {s}" for r, s in enumerate(statuses) if s is not None]
        if failed:
            workers.stop_failed("; ".join(failed))
            if error is not None:
                raise error
            raise TensorParallelError(f"{load['model_dir']}: tensor-parallel load failed on {'; '.join(failed)}")
        engine.tp_workers = workers
        weakref.finalize(engine, workers.close)  # the workers stop with the engine, or at exit
        return engine

    @classmethod
    def _load(cls, model_dir: str, adapters: dict[str, str], device: torch.device, dtype: str, backend: str,
              max_batch_tokens: int, max_seq_len: int | None, max_adapters: int | None,
              max_lora_rank: int | None, lora_target_modules: list[str] | None,
              tp: tuple[int, int] | None = None) -> "Engine":
        """This process's engine, or its shard (tp = (rank, size)) of a tensor-parallel one."""
        dev = device
        if is_gpt2_folder(model_dir):  # scoring only, no adapters (model/gpt2.py)
            gpt2 = load_gpt2(model_dir, adapters, DTYPES[dtype], dev)
            n_pos = gpt2.cfg.max_position_embeddings
            if max_adapters:
                raise AdapterError(f"{model_dir}: warmfast runs GPT-2 without adapters (scoring only); "
                                   f"got max_adapters={max_adapters}")
            return cls(gpt2, TokenizerCache(model_dir), None, dev, DTYPES[dtype], backend,
                       max_batch_tokens, min(max_seq_len or n_pos, n_pos))
        cfg = ModelConfig.from_folder(model_dir)
        group = None
        if tp is not None:
            check_divisible(cfg, tp[1])
            group = TPGroup(rank=tp[0], size=tp[1])
        for name in adapters:
            check_adapter_name(name)
        loaded = [load_adapter(name, path, cfg) for name, path in adapters.items()]
        capacity = AdapterCapacity.for_adapters(loaded, max_adapters, max_lora_rank, lora_target_modules)
        for i, adapter in enumerate(loaded):  # before the weights load: a capacity error comes at once
            capacity.check(adapter, list(adapters)[:i])
        weights = load_weights(model_dir, cfg, DTYPES[dtype], dev,
                               shard=None if group is None else weight_slicer(cfg, group))
        inv_freq = rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling).to(dev)
        slots = AdapterSlots(cfg, capacity, DTYPES[dtype], dev,
                             shard=None if group is None else lora_slicer(cfg, group))
        for adapter in loaded:  # slot i = the i-th adapter given
            slots.add(adapter)
        model = Model(cfg if group is None else local_config(cfg, group), weights, slots.stacks, inv_freq, tp=group)
        max_len = min(max_seq_len or cfg.max_position_embeddings, cfg.max_position_embeddings)
        return cls(model, TokenizerCache(model_dir), slots, dev, DTYPES[dtype], backend,
                   max_batch_tokens, max_len, tp=group)

    def next_core_id(self) -> int:
        self._cores += 1
        return self._cores

    def close(self) -> None:
        """Stop the tensor-parallel workers (nothing to do for one process); the engine cannot be
        used afterwards. Idempotent; also done when the engine is garbage-collected, or at exit."""
        if self.tp_workers is not None:
            self.tp_workers.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def adapter_names(self) -> list[str]:
        """The loaded adapters, in slot order."""
        return [] if self.adapter_slots is None else self.adapter_slots.loaded

    def load_adapter(self, name: str, path: str | Path) -> int:
        """Load a PEFT LoRA adapter into a free slot without touching the base model; returns its
        slot. Call it between score/generate calls (or scheduler steps): it writes the slot's
        preallocated LoRA tensors in place. Past the capacity fixed at from_pretrained
        (max_adapters, max_lora_rank, lora_target_modules) it raises AdapterCapacityError naming
        the adapter, its rank and targets, and the capacity. Tensor parallel: the workers load it too."""
        if self.adapter_slots is None:
            raise AdapterError(f"{self.model.cfg.source}: warmfast runs GPT-2 without adapters "
                               f"(scoring only); cannot load adapter {name!r}")
        check_adapter_name(name)
        slot = self.adapter_slots.load(name, path)
        if self.tp_workers is not None:  # loaded here, so it loads there: same file, same checks
            self.tp_workers.send("load_adapter", name, str(path))
        log.info("warmfast engine: loaded adapter %r from %s into slot %d", name, path, slot)
        return slot

    def unload_adapter(self, name: str) -> None:
        """Unload adapter `name` and free its slot for the next load_adapter. Refused
        (AdapterInUseError) while unfinished requests of the step core use it."""
        if self.adapter_slots is None:
            raise AdapterError(f"unload_adapter: no adapter named {name!r} is loaded (GPT-2 runs without adapters)")
        slot = self.adapter_slots.remove(name)
        if self.tp_workers is not None:
            self.tp_workers.send("unload_adapter", name)
        log.info("warmfast engine: unloaded adapter %r (slot %d is free)", name, slot)

    def slot(self, adapter: str | None, where: str) -> int:
        """Adapter name -> stacked slot (-1 for the base model)."""
        if adapter in BASE_NAMES:
            return -1
        slot = None if self.adapter_slots is None else self.adapter_slots.slot_of(adapter)
        if slot is None:
            raise UnknownAdapterError(f"{where}: unknown adapter {adapter!r}; loaded adapters are "
                                      f"{self.adapter_names} (None or 'base' = no adapter)")
        return slot

    @torch.inference_mode()
    def score(self, requests: list[ScoreRequest], max_batch_tokens: int | None = None,
              progress: bool = False) -> list[ScoreResult]:
        return scorer.score(self, requests, max_batch_tokens or self.max_batch_tokens, progress)

    @torch.inference_mode()
    def generate(self, requests: list[GenerateRequest], max_batch_size: int = 64,
                 progress: bool = False, **knobs) -> list[GenerateResult]:
        """Paged KV cache, continuous batching, mixed adapters (engine/core.py). knobs:
        max_batch_tokens, block_size, kv_blocks, kv_memory_fraction, cuda_graphs, sampler."""
        self._check_generates()
        return generator.generate(self, requests, max_batch_size, progress, **knobs)

    def stream(self, requests: list[GenerateRequest | ScoreRequest], max_batch_size: int = 64,
               **knobs) -> Iterator[RequestOutput]:
        """Outputs as they come: for each step, each request's new token ids, the text they made
        stable (never half a character) and their log-probs (GenerateRequest.logprobs); a
        request's last output has finished=True and its result. request_id = index in `requests`.
        Every request is validated before the first step. knobs as for generate()."""
        if any(isinstance(r, GenerateRequest) for r in requests):
            self._check_generates()
        return generator.stream(self, requests, max_batch_size, **knobs)

    def core(self, **knobs) -> EngineCore:
        """A step-driven core over this engine: add_request / step / abort / has_unfinished
        (engine/core.py); knobs are CoreConfig fields. Close it (or use `with`) when done, so the
        engine's KV pool is free for the next one."""
        return EngineCore(self, CoreConfig(**knobs))

    def _check_generates(self) -> None:
        if isinstance(self.model, GPT2Model):
            raise InputError(f"{self.model.cfg.source}: generation is not supported for GPT-2; "
                             "warmfast runs GPT-2 for scoring only (Engine.score)")
