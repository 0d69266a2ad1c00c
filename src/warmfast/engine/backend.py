"""Backends: the set of ops the forward pass calls.

`torch` runs the plain-torch `*_ref` functions that live beside each kernel (so the oracle of the
tests and the CPU path are one code), plus warmfast._C on the CPU for log-probs and, with an fp32
cache, paged decode attention read in place from the blocks (sampling: engine/sampling.py).
`triton` runs the Triton launchers (GPU, or CPU only under TRITON_INTERPRET=1 in tests).
`auto` means triton on CUDA and torch on CPU; the engine says which it picked and never falls
back after a failure.
"""
from __future__ import annotations

import os

import torch

from warmfast import native
from warmfast.engine.batch import Batch
from warmfast.engine.triton_ops import TritonOps
from warmfast.errors import InputError
from warmfast.kernels import activation, attention, logprob, lora, norm, rope
from warmfast.kernels.common import TRITON_MISSING

BACKENDS = ("auto", "torch", "triton")
BLOCKDIAG_MAX_B = 8192  # elements of one slot's B [out_total, r_max] up to which TorchOps.lora fuses slices


class TorchOps:
    name = "torch"

    def __init__(self, device: torch.device):
        self.device = device
        self._rope_key: tuple | None = None  # (positions, inv_freq, dtype) of the cached cos/sin
        self._rope_cs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._blockdiag: dict[int, tuple] = {}  # id(B) -> (B, stack version, its block-diagonal)

    def rmsnorm(self, x, weight, eps, residual=None):
        return norm.rmsnorm_ref(x, weight, eps, residual)

    def silu_mul(self, gate_up):
        return activation.silu_mul_ref(gate_up)

    def rope(self, q, k, positions, inv_freq):
        # every layer of a forward passes the same positions tensor: cos/sin once per forward
        key = (positions, inv_freq, q.dtype)
        if self._rope_key is None or any(a is not b for a, b in zip(self._rope_key, key)):
            self._rope_key, self._rope_cs = key, rope.rope_cos_sin(positions, inv_freq, q.dtype)
        return rope.rope_apply_ref(q, k, *self._rope_cs)

    def attention(self, q, k, v, batch: Batch, scale: float):
        return attention.varlen_attention_ref(q, k, v, batch.cu_seqlens_q, batch.cu_seqlens_k,
                                              batch.max_seqlen_q, batch.max_seqlen_k, scale)

    def decode_attention(self, q, k_cache, v_cache, batch: Batch, scale: float):
        if self.device.type == "cpu" and k_cache.dtype == torch.float32:
            # C++: no gathered copy of every row's keys, no mask; the torch reference is the oracle
            out = native.C().paged_decode_attention(q.float().numpy(), k_cache.numpy(), v_cache.numpy(),
                                            batch.block_tables.numpy(), batch.seq_lens.numpy(), scale)
            return torch.from_numpy(out)
        return attention.paged_decode_attention_ref(q, k_cache, v_cache, batch.block_tables,
                                                    batch.seq_lens, scale)

    def lora(self, x, y, stack, batch: Batch):
        bd = None
        # lora_ref's one-expand path (a block-diagonal B, built once per stack) only where B is
        # small: same-process A/B on 1 CPU thread (bench/results/README.md, CPU generation), base
        # + 3 rank-16 adapters: 10% faster generation on the tiny model (B of a slot 2-4K
        # elements: calls cost more than bytes), 4% slower on SmolLM2-135M (15-49K: the zeros
        # read from memory each step cost more than the extra calls)
        if y.dtype == torch.float32 and len(stack.slice_offsets) > 2 and \
                stack.B.shape[1] * stack.B.shape[2] < BLOCKDIAG_MAX_B:
            held = self._blockdiag.get(id(stack.B))
            if held is None or held[0] is not stack.B or held[1] != stack.version:  # new, or a slot rewritten
                held = self._blockdiag[id(stack.B)] = (stack.B, stack.version,
                                                       lora.block_diagonal_B(stack.B, stack.slice_offsets))
            bd = held[2]
        return lora.lora_ref(x, y, stack.A, stack.B, stack.slice_offsets, batch.seg_starts,
                             batch.seg_slots, B_blockdiag=bd)

    def logprob(self, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(target) fp32 [N], argmax int64 [N]) without holding more than chunk x V logits."""
        if self.device.type != "cpu":
            lp, am, _ = logprob.logprob_ref(hidden, weight, targets)
            return lp, am
        lps, ams = [], []
        for s in range(0, hidden.shape[0], chunk):
            logits = (hidden[s:s + chunk] @ weight.T).float().contiguous()  # [n, V]
            lp, am, _ = native.C().logprob(logits.numpy(), targets[s:s + chunk].numpy())
            lps.append(torch.from_numpy(lp))
            ams.append(torch.from_numpy(am))
        return torch.cat(lps), torch.cat(ams)


def select_backend(name: str, device: torch.device):
    """Return the ops object for `name`; raise (never fall back) if it cannot run here."""
    if name not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        name = "triton" if device.type == "cuda" else "torch"
    if name == "torch":
        return TorchOps(device)
    if TRITON_MISSING is not None:
        raise ValueError(f"backend='triton' (picked for device={device.type!r}) needs the triton package, which "
                         f"does not import here ({TRITON_MISSING}); install triton or use backend='torch'")
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise InputError(f"backend='triton' needs a CUDA device (got device={device.type!r}); on CPU "
                         "use backend='torch' (or set TRITON_INTERPRET=1, tests only)")

    return TritonOps(device)
