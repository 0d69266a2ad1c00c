"""The Triton launches the engine makes, recorded without a GPU and without running a kernel.

The launchers of kernels/ are called exactly as the engine calls them (a real Llama forward over
scoring, prefill, decode, mixed and CUDA-graph decode batches, the lm_head log-prob and the
sampler) on CPU tensors, with Triton in its compiling mode (not the interpreter, whose
launchers pick interpreter-only tile sizes and dot dtypes). JITFunction.run and Autotuner.run are
swapped for a recorder, so each launch is kept as (kernel, bound arguments, options) and nothing
executes; the outputs stay uninitialised, which no launcher reads but the sampler's row check
(its ValueError is expected and ignored). bench/bench_compile.py turns each record into the
signature, constexprs and alignment attributes Triton's own runtime would compute.
"""
from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass

os.environ["TRITON_INTERPRET"] = "0"  # before the kernels import: jit functions, GPU tile sizes

import torch  # noqa: E402
from triton.runtime import autotuner, jit  # noqa: E402

# model shapes the engine meets (Llama-3.1-8B, a 1B-class model with head_dim 64, the tiny test
# model in fp32 as the GPU tests run it); adapters on every projection
SHAPES = {
    "llama8b": dict(hidden=4096, inter=14336, heads=32, kv=8, vocab=128256),
    "llama1b": dict(hidden=2048, inter=8192, heads=32, kv=8, vocab=128256),
    "tiny": dict(hidden=64, inter=128, heads=4, kv=2, vocab=512),
}
WORKLOADS = {  # name -> (shape, dtype, LoRA rank)
    "llama8b-bf16-r16": ("llama8b", torch.bfloat16, 16),
    "llama8b-bf16-r64": ("llama8b", torch.bfloat16, 64),
    "llama1b-bf16-r16": ("llama1b", torch.bfloat16, 16),
    "tiny-fp32-r8": ("tiny", torch.float32, 8),
}


@dataclass
class Launch:
    kernel: object  # the JITFunction (or the Autotuner wrapping it)
    args: dict  # parameter name -> value, every parameter of the kernel
    options: dict  # num_warps, num_stages, ... as passed at the launch (autotuned: none)
    workload: str = ""


@contextlib.contextmanager
def recording(out: list[Launch], workload: str):
    """Record every launch into `out` instead of running it; CPU tensors are accepted."""
    from warmfast.kernels import activation, attention, logprob, lora, norm, rope, sampling

    def record(kernel, fn, args, kwargs):
        sig = inspect.signature(fn.fn)
        opts = {k: kwargs.pop(k) for k in list(kwargs) if k not in sig.parameters}
        for k in ("grid", "warmup"):
            opts.pop(k, None)
        bound = sig.bind_partial(*args, **kwargs)  # an autotuned launch lacks its config params
        bound.apply_defaults()
        out.append(Launch(kernel, dict(bound.arguments), opts, workload))

    def jit_run(self, *args, grid, warmup, **kwargs):
        record(self, self, args, kwargs)

    def tuned_run(self, *args, **kwargs):
        record(self, self.fn, args, kwargs)

    saved = (jit.JITFunction.run, autotuner.Autotuner.run)
    modules = (activation, attention, logprob, lora, norm, rope, sampling)
    checks = [(m, m.check_device) for m in modules if hasattr(m, "check_device")]
    jit.JITFunction.run, autotuner.Autotuner.run = jit_run, tuned_run
    for m, _ in checks:
        m.check_device = lambda name, t: None
    try:
        yield out
    finally:
        jit.JITFunction.run, autotuner.Autotuner.run = saved
        for m, f in checks:
            m.check_device = f


def _model(shape: str, dtype: torch.dtype, rank: int, n_adapters: int = 8):
    from warmfast.kernels.rope import rope_inv_freq
    from warmfast.model.adapters import LoraGroupStack
    from warmfast.model.config import ModelConfig
    from warmfast.model.llama import Model
    from warmfast.model.weights import LayerWeights, ModelWeights

    s = SHAPES[shape]
    cfg = ModelConfig.from_dict({"architectures": ["LlamaForCausalLM"], "vocab_size": s["vocab"],
                                 "hidden_size": s["hidden"], "intermediate_size": s["inter"],
                                 "num_hidden_layers": 1, "num_attention_heads": s["heads"],
                                 "num_key_value_heads": s["kv"], "max_position_embeddings": 8192,
                                 "rms_norm_eps": 1e-5, "rope_theta": 500000.0})
    H, I, q, kv = cfg.hidden_size, cfg.intermediate_size, cfg.q_size, cfg.kv_size

    def w(*shape_):
        return torch.zeros(*shape_, dtype=dtype)

    layer = LayerWeights(input_norm=w(H), qkv=w(q + 2 * kv, H), qkv_bias=None, o=w(H, q), post_norm=w(H),
                         gate_up=w(2 * I, H), down=w(H, I))
    head = w(cfg.vocab_size, H)
    weights = ModelWeights(embed=head, layers=[layer], norm=w(H), lm_head=head)
    groups = {"qkv": (H, [q, kv, kv]), "o": (q, [H]), "gate_up": (H, [I, I]), "down": (I, [H])}
    stacks = {}
    for g, (d_in, outs) in groups.items():
        offsets = [0]
        for o in outs:
            offsets.append(offsets[-1] + o)
        stacks[g] = LoraGroupStack(w(n_adapters, len(outs) * rank, d_in), w(n_adapters, offsets[-1], rank), offsets)
    inv_freq = rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    return Model(cfg, weights, [stacks], inv_freq)


def record_workload(name: str) -> list[Launch]:
    """Every launch of one engine workload: scoring, generation prefill, decode, mixed and
    graph-style decode steps, the log-prob head and the sampler."""
    from warmfast.engine.batch import build_decode, build_mixed, build_prefill
    from warmfast.engine.kv_cache import PagedKVCache
    from warmfast.engine.triton_ops import TritonOps
    from warmfast.kernels import logprob, sampling

    shape, dtype, rank = WORKLOADS[name]
    model = _model(shape, dtype, rank)
    cfg, dev = model.cfg, torch.device("cpu")
    ops = TritonOps(dev)
    launches: list[Launch] = []
    with recording(launches, name):
        # scoring: varlen prefill of rows under the base model and two adapters, log-prob head
        rows = [[5] * 23, [6] * 17, [7] * 9]
        hidden = model.forward(ops, build_prefill(rows, [-1, 0, 3], dev))
        logprob.logprob(hidden[:12].contiguous(), model.weights.lm_head, torch.zeros(12, dtype=torch.int64))
        # generation: paged cache, prefill, decode (per-row LoRA, as in CUDA graphs), mixed
        bs = 16
        cache = PagedKVCache(1, 12, bs, cfg.num_kv_heads, cfg.head_dim, dtype, dev)
        tables = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]], dtype=torch.int32)
        model.forward(ops, build_prefill(rows, [-1, 0, 3], dev, tables), cache)
        dec = build_decode([1, 2, 3], [23, 17, 9], [-1, 0, 3], tables, dev)
        model.forward(ops, dec, cache)
        pre = build_prefill([[4] * 11], [5], dev, torch.tensor([[9, 10]], dtype=torch.int32))
        model.forward(ops, build_mixed(build_decode([1, 2], [24, 18], [0, 3], tables[:2], dev), pre), cache)
        # the sampler over the full vocabulary, every filter on
        n, f64, i64 = 3, torch.float64, torch.int64
        with contextlib.suppress(ValueError):  # it reads its (never written) output back
            sampling.sample(torch.ones(n, cfg.vocab_size), torch.zeros(n, dtype=i64), torch.zeros(n, dtype=i64),
                            torch.zeros(n, dtype=i64), torch.full((n,), 0.8, dtype=f64),
                            torch.full((n,), 20, dtype=i64), torch.full((n,), 0.9, dtype=f64),
                            torch.full((n,), 0.05, dtype=f64))
    return launches
