"""Tensor parallelism over the GPUs of one node (torch.distributed: NCCL on GPUs, gloo on CPU).

Rank 0 schedules and every rank runs the same steps (engine/tensor_parallel.py starts and drives
the ranks); each holds one slice of every large matrix, and the activations between blocks stay
replicated. With n ranks, rank r:

    q|k|v     column-parallel: heads r*Hq/n.. and kv heads r*Hkv/n.. (GQA groups stay whole)
    gate|up   column-parallel: intermediate rows r*I/n..
    o, down   row-parallel: the matching input columns; partial outputs summed by one all-reduce
    embed     vocab-parallel: rows of its vocab range; a lookup outside it gives 0, all-reduced
    lm_head   vocab-parallel: logits of its vocab range only; logsumexp, target logit and argmax
              are combined across ranks (`logprob`), or the logits gathered for sampling
    LoRA      column-parallel groups: A replicated, B split like the base rows;
              row-parallel groups: A split like the base columns, B replicated

Row-parallel LoRA: with x = [x_0 | ... | x_{n-1}] split over ranks, the delta is
(sum_r x_r A_r^T) B^T = sum_r (x_r A_r^T) B^T, because the expand is linear. So each rank adds its
partial delta into its partial output and the one all-reduce that the base GEMM needs anyway sums
the rank-r intermediates too: exactly the "intermediate all-reduced" result, without a second
collective per projection and with the LoRA kernels unchanged.

Sampling is decided once: rank 0 samples from the gathered logits; the other ranks never need the
tokens until rank 0 sends the next step.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from warmfast.errors import WarmfastError
from warmfast.model.config import ModelConfig

COLUMN_PARALLEL = ("qkv", "gate_up")  # fused groups split over their output rows
ROW_PARALLEL = ("o", "down")  # fused groups split over their input columns, then all-reduced
_LAYER_KEY = re.compile(r"^model\.layers\.\d+\.(self_attn|mlp)\.(\w+)\.(weight|bias)$")


class TensorParallelError(WarmfastError, ValueError):
    """A tensor-parallel setup that cannot work (world size, divisibility, process group)."""


@dataclass(frozen=True)
class TPGroup:
    """This process's place in a tensor-parallel group. `group=None` is the default (world) group."""

    rank: int
    size: int
    group: object = None  # torch.distributed.ProcessGroup or None (world)

    def __post_init__(self):
        if self.size < 1 or not 0 <= self.rank < self.size:
            raise TensorParallelError(f"TPGroup: rank {self.rank} is not in [0, size={self.size})")

    def all_reduce(self, t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
        """In-place sum (or `op`) over the group; returns t."""
        dist.all_reduce(t, op=op, group=self.group)
        return t

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """[size, *t.shape]: every rank's t, in rank order (t must have the same shape everywhere)."""
        parts = [torch.empty_like(t) for _ in range(self.size)]
        dist.all_gather(parts, t.contiguous(), group=self.group)
        return torch.stack(parts)


# ---- setup --------------------------------------------------------------------------------------
def rank_device(device: str) -> str:
    """"cuda" under torchrun means this rank's own GPU, cuda:LOCAL_RANK; any other device as given."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def check_divisible(cfg: ModelConfig, n: int) -> None:
    """Raise unless heads, kv heads and the intermediate size split evenly over n ranks."""
    for name, value in (("num_attention_heads", cfg.num_heads), ("num_key_value_heads", cfg.num_kv_heads),
                        ("intermediate_size", cfg.intermediate_size)):
        if value % n:
            raise TensorParallelError(
                f"{cfg.source}: {name}={value} is not divisible by tensor_parallel={n}; choose a "
                f"tensor-parallel degree that divides it (kv heads are split, not replicated)")
    if cfg.vocab_size < n:
        raise TensorParallelError(f"{cfg.source}: vocab_size={cfg.vocab_size} < tensor_parallel={n}")


def local_config(cfg: ModelConfig, tp: TPGroup) -> ModelConfig:
    """The shard's view of the config: its heads, kv heads and intermediate rows; vocab stays global
    (token ids are validated against the whole vocabulary)."""
    return dataclasses.replace(cfg, num_heads=cfg.num_heads // tp.size,
                               num_kv_heads=cfg.num_kv_heads // tp.size,
                               intermediate_size=cfg.intermediate_size // tp.size)


def vocab_range(vocab: int, size: int, rank: int) -> tuple[int, int]:
    """[start, stop) of rank's vocab rows: as even as possible, the first vocab % size ranks get one more."""
    base, extra = divmod(vocab, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


# ---- slicing at load time -----------------------------------------------------------------------
def weight_slicer(cfg: ModelConfig, tp: TPGroup) -> Callable[[str], tuple[int, int, int] | None]:
    """Checkpoint tensor name -> (dim, start, stop) of this rank's part, or None (replicated)."""
    r, n = tp.rank, tp.size
    q, kv, inter = cfg.q_size // n, cfg.kv_size // n, cfg.intermediate_size // n
    rows = {"q_proj": (q * r, q * (r + 1)), "k_proj": (kv * r, kv * (r + 1)),
            "v_proj": (kv * r, kv * (r + 1)), "gate_proj": (inter * r, inter * (r + 1)),
            "up_proj": (inter * r, inter * (r + 1))}
    cols = {"o_proj": (q * r, q * (r + 1)), "down_proj": (inter * r, inter * (r + 1))}
    vocab = vocab_range(cfg.vocab_size, n, r)

    def part(name: str) -> tuple[int, int, int] | None:
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            return (0, *vocab)
        m = _LAYER_KEY.match(name)
        if m is None:
            return None  # norms
        module = m.group(2)
        if module in rows:
            return (0, *rows[module])
        if module in cols and m.group(3) == "weight":
            return (1, *cols[module])
        return None

    return part


def lora_slicer(cfg: ModelConfig, tp: TPGroup):
    """(group, A, B, slice_offsets) of a full stack -> this rank's (A, B, slice_offsets).

    A: [n_slots, n_slices * r_max, in]; B: [n_slots, out_total, r_max] (see model/adapters.py)."""
    r, n = tp.rank, tp.size

    def part(group: str, A: torch.Tensor, B: torch.Tensor, offsets: list[int]):
        if group in COLUMN_PARALLEL:  # each fused slice (q, k, v / gate, up) keeps its r-th part
            pieces, local = [], [0]
            for j in range(len(offsets) - 1):
                width = (offsets[j + 1] - offsets[j]) // n
                pieces.append(B[:, offsets[j] + r * width:offsets[j] + (r + 1) * width])
                local.append(local[-1] + width)
            return A, torch.cat(pieces, dim=1).contiguous(), local
        if group in ROW_PARALLEL:  # the input columns this rank's activations cover
            width = A.shape[2] // n
            return A[:, :, r * width:(r + 1) * width].contiguous(), B, offsets
        raise TensorParallelError(f"LoRA group {group!r} has no tensor-parallel layout")

    return part


# ---- the collectives the forward pass needs -------------------------------------------------------
def embed(weight: torch.Tensor, ids: torch.Tensor, tp: TPGroup, vocab: int) -> torch.Tensor:
    """Vocab-parallel lookup. weight: [V_r, H] this rank's rows; ids: [T] global ids -> [T, H]."""
    start, stop = vocab_range(vocab, tp.size, tp.rank)
    mine = (ids >= start) & (ids < stop)
    h = weight[(ids - start).clamp(0, stop - start - 1)]  # [T, H]
    h.masked_fill_(~mine[:, None], 0)  # exactly one rank holds each id: the sum is exact
    return tp.all_reduce(h)


def logprob(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, tp: TPGroup, vocab: int,
            chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Vocab-parallel log p(target) and argmax, without gathering any logits.

    hidden: [N, H] (same on every rank); weight: [V_r, H] this rank's lm_head rows; targets: int64
    [N] global ids. Per chunk of rows: one all_gather of each rank's (max, argmax) and one all-reduce
    of (sum exp(logit - global max), target logit). Returns (fp32 [N], int64 [N]) on every rank; the
    argmax is the first index of the global max, as a single process would return.
    """
    start, stop = vocab_range(vocab, tp.size, tp.rank)
    w = weight.float()
    n = hidden.shape[0]
    lp = torch.empty(n, dtype=torch.float32, device=hidden.device)
    am = torch.empty(n, dtype=torch.int64, device=hidden.device)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        logits = hidden[s:e].float() @ w.T  # [m, V_r] fp32
        lmax, larg = logits.max(dim=-1)
        # float64 carries the index exactly; [size, 2, m]
        stats = tp.all_gather(torch.stack([lmax.double(), (larg + start).double()]))
        maxes = stats[:, 0]  # [size, m]
        gmax = maxes.max(dim=0).values  # [m]
        first = (maxes == gmax).to(torch.int32).argmax(dim=0)  # lowest rank = lowest vocab index
        am[s:e] = stats[:, 1].gather(0, first[None])[0].long()
        t = targets[s:e]
        mine = (t >= start) & (t < stop)
        tlogit = logits.gather(1, (t - start).clamp(0, stop - start - 1)[:, None])[:, 0]
        gmax32 = gmax.float()
        sums = torch.stack([torch.exp(logits - gmax32[:, None]).sum(dim=-1),
                            tlogit.masked_fill(~mine, 0.0)])  # [2, m]
        tp.all_reduce(sums)
        lp[s:e] = sums[1] - (gmax32 + torch.log(sums[0]))
    return lp, am


def gather_logits(logits: torch.Tensor, tp: TPGroup, vocab: int) -> torch.Tensor:
    """[rows, V_r] this rank's logits -> [rows, V] the full logits, on every rank."""
    width = vocab_range(vocab, tp.size, 0)[1]  # rank 0 holds the widest part
    padded = torch.full((logits.shape[0], width), float("-inf"), dtype=logits.dtype, device=logits.device)
    padded[:, :logits.shape[1]] = logits
    parts = tp.all_gather(padded)  # [size, rows, width]
    sizes = [b - a for a, b in (vocab_range(vocab, tp.size, r) for r in range(tp.size))]
    return torch.cat([parts[r, :, :sizes[r]] for r in range(tp.size)], dim=1)
