"""Segmented multi-LoRA (shrink + expand) over a batch whose rows are grouped by adapter.

Layout for one projection with n_slices fused output slices (q|k|v, gate|up, or one):
    A: [n_slots, n_slices * r_max, in]   slice j uses rows j*r_max:(j+1)*r_max
    B: [n_slots, out_total, r_max]       already times the adapter's scaling; zero-padded where
                                          the adapter's rank < r_max or it skips a slice
    slice_offsets: [n_slices + 1] column offsets into out_total
    seg_starts: [S + 1] row offsets (0 ... T); seg_slots: [S] slot per segment, -1 = base (no delta)
Semantics, for each segment (s, e, slot >= 0) and slice j (o_j, o_{j+1}):
    y[s:e, o_j:o_{j+1}] += (x[s:e] @ A[slot, j*r:(j+1)*r].T) @ B[slot, o_j:o_{j+1}].T
with the [rows, r] intermediate in fp32.
"""
from __future__ import annotations

import torch

from .common import (
    triton, tl,
    FLOAT_DTYPES, check_device, check_dtype, check_same_device, dot_dtype, interpreting, round_to,
)


def block_diagonal_B(B: torch.Tensor, slice_offsets: list[int]) -> torch.Tensor:
    """B: [n_slots, out_total, r_max] -> fp32 [n_slots, out_total, n_slices * r_max] with slice j's
    columns in block j and zeros elsewhere, so x @ A.T @ bd.T adds every slice's delta at once."""
    n_slices, r_max = len(slice_offsets) - 1, B.shape[2]
    bd = B.new_zeros(B.shape[0], B.shape[1], n_slices * r_max, dtype=torch.float32)
    for j in range(n_slices):
        o0, o1 = slice_offsets[j], slice_offsets[j + 1]
        bd[:, o0:o1, j * r_max:(j + 1) * r_max] = B[:, o0:o1].float()
    return bd


def lora_ref(
    x: torch.Tensor,
    y: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    slice_offsets: list[int],
    seg_starts: list[int],
    seg_slots: list[int],
    B_blockdiag: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain-torch segmented LoRA; adds the delta into y in place and returns y.

    x: [T, in]; y: [T, out_total]; A: [n_slots, n_slices * r_max, in]; B: [n_slots, out_total,
    r_max]; slice_offsets: list[int] (n_slices + 1); seg_starts: list[int] (S + 1);
    seg_slots: list[int] (S, -1 = base model). One shrink and n_slices expands per segment.
    B_blockdiag: block_diagonal_B(B, slice_offsets) (fp32 y only): one expand per segment instead
    of n_slices, at the price of reading its zeros. On a CPU that pays for small B (tiny models,
    where calls cost more than bytes) and loses for large B (a 135M model: zeros that double or
    triple the bytes of B read every step, which stream from memory); TorchOps.lora chooses.
    """
    n_slices = len(slice_offsets) - 1
    r_max = B.shape[2]
    if A.shape[1] != n_slices * r_max:
        raise ValueError(f"lora_ref: A has {A.shape[1]} rows, expected n_slices * r_max = {n_slices} * {r_max}")
    if len(seg_starts) != len(seg_slots) + 1:
        raise ValueError(f"lora_ref: {len(seg_starts)} seg_starts for {len(seg_slots)} seg_slots (need S + 1)")
    in_place = y.dtype == torch.float32
    if B_blockdiag is not None and not in_place:
        raise ValueError(f"lora_ref: B_blockdiag needs a float32 y, got {y.dtype}")
    for seg, slot in enumerate(seg_slots):
        s, e = seg_starts[seg], seg_starts[seg + 1]
        if slot < 0 or e <= s:
            continue
        xa = x[s:e].float() @ A[slot].float().T  # [rows, n_slices * r_max] fp32
        if B_blockdiag is not None:  # y[s:e] += xa @ bd.T: every slice in one GEMM
            y[s:e].addmm_(xa, B_blockdiag[slot].T)
            continue
        for j in range(n_slices):
            o0, o1 = slice_offsets[j], slice_offsets[j + 1]
            xa_j, b_j = xa[:, j * r_max:(j + 1) * r_max], B[slot, o0:o1].float()  # [rows, r], [o1 - o0, r]
            if in_place:  # the GEMM writes into y's column block: no delta tensor, no strided add
                y[s:e, o0:o1].addmm_(xa_j, b_j.T)
            else:
                y[s:e, o0:o1] += (xa_j @ b_j.T).to(y.dtype)
    return y


# ---------------------------------------------------------------- segmented (prefill / scoring)

SEGMENT_K_CHUNK = 1024  # `in` features per shrink program (its K tile is 32 or 64 wide)


@triton.jit
def _segment_rows(seg_starts_ptr, seg_slots_ptr, seg, tile, BLOCK_M: tl.constexpr):
    # rows of this (segment, row tile); slot < 0 (base) or an empty tile means: nothing to do
    slot = tl.load(seg_slots_ptr + seg)
    start = tl.load(seg_starts_ptr + seg)
    end = tl.load(seg_starts_ptr + seg + 1)
    rows = start + tile * BLOCK_M + tl.arange(0, BLOCK_M)
    return slot, rows, rows < end, start + tile * BLOCK_M < end


@triton.jit
def _shrink_kernel(
    x_ptr, a_ptr, xa_ptr, seg_starts_ptr, seg_slots_ptr,
    K, K_CHUNK, RANK_TILES, stride_xt, stride_as, stride_ar, stride_xas, stride_xat,
    NR: tl.constexpr, DOT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # program (segment, row tile, rank tile x K chunk c): xa[c, rows, cols] = x[rows, chunk] @
    # A[slot, cols, chunk].T over the NR = n_slices * r_max rows of A, all slices at once (x is
    # read once when NR <= BLOCK_R). K chunks (summed by the caller in a fixed order) keep a few
    # segments from running down K=14336 in a handful of programs.
    slot, rows, row_ok, busy = _segment_rows(seg_starts_ptr, seg_slots_ptr, tl.program_id(0), tl.program_id(1), BLOCK_M)
    if (slot >= 0) & busy:
        c = tl.program_id(2) // RANK_TILES
        r = (tl.program_id(2) % RANK_TILES) * BLOCK_R + tl.arange(0, BLOCK_R)
        r_ok = r < NR
        ks = tl.arange(0, BLOCK_K)
        x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xt
        a_rows = a_ptr + slot.to(tl.int64) * stride_as + r.to(tl.int64)[:, None] * stride_ar
        acc = tl.zeros((BLOCK_M, BLOCK_R), tl.float32)
        k_end = tl.minimum(K, (c + 1) * K_CHUNK)
        for k0 in range(c * K_CHUNK, k_end, BLOCK_K):
            k_ok = (k0 + ks) < k_end
            xt = tl.load(x_rows + (k0 + ks)[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0).to(DOT)
            at = tl.load(a_rows + (k0 + ks)[None, :], mask=r_ok[:, None] & k_ok[None, :], other=0.0).to(DOT)
            acc = tl.dot(xt, tl.trans(at), acc, input_precision=PRECISION)  # [BLOCK_M, BLOCK_R] fp32
        out = xa_ptr + c.to(tl.int64) * stride_xas + rows.to(tl.int64)[:, None] * stride_xat + r[None, :]
        tl.store(out, acc, mask=row_ok[:, None] & r_ok[None, :])


@triton.jit
def _expand_kernel(
    xa_ptr, b_ptr, y_ptr, offsets_ptr, seg_starts_ptr, seg_slots_ptr,
    OUT, stride_xat, stride_bs, stride_bo, stride_yt,
    N_SLICES: tl.constexpr, R_MAX: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # program (segment, row tile, column tile): y[rows, cols] += sum over slices j overlapping the
    # tile of xa[rows, j*R:(j+1)*R] @ B[slot, cols in slice j].T  (fp32 intermediate, tf32/ieee dot)
    slot, rows, row_ok, busy = _segment_rows(seg_starts_ptr, seg_slots_ptr, tl.program_id(0), tl.program_id(1), BLOCK_M)
    if (slot >= 0) & busy:
        n0 = tl.program_id(2) * BLOCK_N
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < OUT
        r = tl.arange(0, BLOCK_R)
        r_ok = r < R_MAX
        rows64 = rows.to(tl.int64)
        b_rows = b_ptr + slot.to(tl.int64) * stride_bs + cols.to(tl.int64)[:, None] * stride_bo + r[None, :]
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for j in tl.static_range(N_SLICES):
            o0 = tl.load(offsets_ptr + j)
            o1 = tl.load(offsets_ptr + j + 1)
            if (o0 < n0 + BLOCK_N) & (o1 > n0):
                in_j = col_ok & (cols >= o0) & (cols < o1)
                xa = tl.load(xa_ptr + rows64[:, None] * stride_xat + (j * R_MAX + r)[None, :],
                             mask=row_ok[:, None] & r_ok[None, :], other=0.0)
                bt = tl.load(b_rows, mask=in_j[:, None] & r_ok[None, :], other=0.0).to(tl.float32)
                acc = tl.dot(xa, tl.trans(bt), acc, input_precision=PRECISION)  # [BLOCK_M, BLOCK_N]
        dt = y_ptr.dtype.element_ty
        y_tile = y_ptr + rows64[:, None] * stride_yt + cols[None, :]
        mask = row_ok[:, None] & col_ok[None, :]
        y = tl.load(y_tile, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_tile, round_to(y + round_to(acc, dt), dt).to(dt), mask=mask)  # y += delta.to(y.dtype)


def _check_layout(x: torch.Tensor, y: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                  slice_offsets: list[int], who: str) -> tuple[int, int]:
    """Validates the shared LoRA layout; returns (n_slices, r_max)."""
    for name, t in (("x", x), ("y", y), ("A", A), ("B", B)):
        check_device(f"{who}: {name}", t)
        check_dtype(f"{who}: {name}", t, FLOAT_DTYPES)
        if t.stride(-1) != 1:
            raise ValueError(f"{who}: {name} needs unit last stride, got shape {tuple(t.shape)} strides {t.stride()}")
    for name, t in (("y", y), ("A", A), ("B", B)):
        check_dtype(f"{who}: {name}", t, (x.dtype,))
    check_same_device(who, x, y=y, A=A, B=B)
    if x.dim() != 2 or y.dim() != 2 or A.dim() != 3 or B.dim() != 3:
        raise ValueError(f"{who}: want x [T, in], y [T, out], A [slots, n_slices*r, in], B [slots, out, r]; "
                         f"got {tuple(x.shape)}, {tuple(y.shape)}, {tuple(A.shape)}, {tuple(B.shape)}")
    n_slices = len(slice_offsets) - 1
    r_max = B.shape[2]
    if n_slices < 1 or slice_offsets[0] != 0 or slice_offsets[-1] != y.shape[1] or \
            any(b < a for a, b in zip(slice_offsets, slice_offsets[1:])):
        raise ValueError(f"{who}: slice_offsets {slice_offsets} must rise from 0 to y's width {y.shape[1]}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{who}: x has {x.shape[0]} rows but y has {y.shape[0]}")
    if A.shape != (B.shape[0], n_slices * r_max, x.shape[1]):
        raise ValueError(f"{who}: A has shape {tuple(A.shape)}, expected (n_slots, n_slices * r_max, in) = "
                         f"({B.shape[0]}, {n_slices} * {r_max}, {x.shape[1]})")
    if B.shape[1] != y.shape[1]:
        raise ValueError(f"{who}: B has {B.shape[1]} output rows but y has width {y.shape[1]}")
    if not 1 <= r_max <= 128:
        raise ValueError(f"{who}: r_max must be in [1, 128], got {r_max}")
    return n_slices, r_max


def _as_index_tensor(name: str, v: list[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        check_dtype(name, v, (torch.int32,))
        if v.dim() != 1 or v.device != device:
            raise ValueError(f"{name} must be a 1-D int32 tensor on {device}, got shape {tuple(v.shape)} on {v.device}")
        return v.contiguous()
    return torch.tensor(v, dtype=torch.int32, device=device)


_OFFSETS: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}


def _offsets_tensor(slice_offsets: list[int], device: torch.device) -> torch.Tensor:
    """slice_offsets as an int32 device tensor, made once per layout and device: no host-to-device
    copy on later calls, so a launch inside a CUDA-graph capture (after a warm-up) is legal."""
    key = (tuple(slice_offsets), device)
    t = _OFFSETS.get(key)
    if t is None:
        t = _OFFSETS[key] = torch.tensor(slice_offsets, dtype=torch.int32, device=device)
    return t


def _precision(x: torch.Tensor) -> str:
    # fp32 models: exact fp32 products; bf16/fp16 models: tf32 for the fp32-intermediate expand
    # (rel. error 2^-11, below the 2^-8 of the bf16 output it is added to)
    return "ieee" if x.dtype == torch.float32 else "tf32"


def lora(
    x: torch.Tensor,
    y: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    slice_offsets: list[int],
    seg_starts: list[int] | torch.Tensor,
    seg_slots: list[int] | torch.Tensor,
    max_seg_rows: int | None = None,
    k_chunk: int = SEGMENT_K_CHUNK,
) -> torch.Tensor:
    """Triton segmented LoRA (shrink then expand); same semantics as lora_ref.

    seg_starts / seg_slots may be Python lists (validated, copied to the device) or int32 device
    tensors (shape-checked only, no sync: the caller guarantees their contents). Base segments
    (slot -1) launch programs that exit at once: they read and write nothing. max_seg_rows bounds
    the rows of any segment (default: exact from lists, T for tensors). The shrink splits `in`
    into chunks of k_chunk (rounded up to its K tile), summed in a fixed order. Adds into y;
    returns y.
    """
    n_slices, r_max = _check_layout(x, y, A, B, slice_offsets, "lora")
    t, k_in = x.shape
    if isinstance(seg_starts, list) != isinstance(seg_slots, list):
        raise ValueError("lora: pass seg_starts and seg_slots both as lists or both as tensors")
    if isinstance(seg_starts, list):
        if len(seg_starts) != len(seg_slots) + 1 or seg_starts[0] != 0 or seg_starts[-1] != t or \
                any(b < a for a, b in zip(seg_starts, seg_starts[1:])):
            raise ValueError(f"lora: seg_starts {seg_starts} must rise from 0 to T={t}, one more than seg_slots ({len(seg_slots)})")
        bad = [s for s in seg_slots if not -1 <= s < A.shape[0]]
        if bad:
            raise ValueError(f"lora: seg_slots {bad} outside [-1, {A.shape[0]})")
        if max_seg_rows is None:
            max_seg_rows = max([e - s for s, e in zip(seg_starts, seg_starts[1:])], default=0)
    elif max_seg_rows is None:
        max_seg_rows = t
    n_seg = len(seg_slots)
    if n_seg == 0 or t == 0 or max_seg_rows == 0:
        return y
    starts = _as_index_tensor("lora: seg_starts", seg_starts, x.device)
    slots = _as_index_tensor("lora: seg_slots", seg_slots, x.device)
    if starts.shape[0] != n_seg + 1:
        raise ValueError(f"lora: seg_starts has {starts.shape[0]} entries for {n_seg} segments (need S + 1)")
    offsets = _offsets_tensor(slice_offsets, x.device)
    block_m = max(16, min(64, triton.next_power_of_2(max_seg_rows)))
    nr = n_slices * r_max
    block_rs = min(128, max(16, triton.next_power_of_2(nr)))  # shrink: all slices per rank tile
    block_r = max(16, triton.next_power_of_2(r_max))  # expand: one slice's rank
    block_k = 64 if interpreting() or block_rs <= 64 else 32
    block_n = 64 if block_r > 64 else 128
    row_tiles = triton.cdiv(max_seg_rows, block_m)
    rank_tiles = triton.cdiv(nr, block_rs)
    if k_chunk < 1:
        raise ValueError(f"lora: k_chunk must be >= 1, got {k_chunk}")
    chunk = triton.cdiv(k_chunk, block_k) * block_k
    n_chunks = triton.cdiv(k_in, chunk)
    parts = torch.empty((n_chunks, t, nr), dtype=torch.float32, device=x.device)  # base rows untouched
    _shrink_kernel[(n_seg, row_tiles, rank_tiles * n_chunks)](
        x, A, parts, starts, slots,
        k_in, chunk, rank_tiles, x.stride(0), A.stride(0), A.stride(1), parts.stride(0), parts.stride(1),
        NR=nr, DOT=dot_dtype(x), PRECISION=_precision(x),
        BLOCK_M=block_m, BLOCK_R=block_rs, BLOCK_K=block_k, num_warps=4,
    )
    xa = parts[0] if n_chunks == 1 else parts.sum(0)  # chunk sums in a fixed order
    _expand_kernel[(n_seg, row_tiles, triton.cdiv(y.shape[1], block_n))](
        xa, B, y, offsets, starts, slots,
        y.shape[1], xa.stride(0), B.stride(0), B.stride(1), y.stride(0),
        N_SLICES=n_slices, R_MAX=r_max, PRECISION=_precision(x),
        BLOCK_M=block_m, BLOCK_R=block_r, BLOCK_N=block_n, num_warps=4,
    )
    return y


# ---------------------------------------------------------------- decode (one token per row)

DECODE_K_CHUNK = 1024  # `in` features per shrink program: 4 chunks for 4096, 14 for 14336


@triton.jit
def _decode_shrink_kernel(
    x_ptr, a_ptr, xa_ptr, row_slots_ptr,
    K, K_CHUNK, stride_xt, stride_as, stride_ar, stride_xas, stride_xat,
    R_MAX: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # program (row, slice j, K chunk c): xa[c, row, j*R:(j+1)*R] = A[slot, j*R:(j+1)*R, chunk] @
    # x[row, chunk] (vector path). Chunks split K so that a decode step of a few dozen rows still
    # fills the card (one program per row and slice ran 64 programs down K=14336 in sequence);
    # the caller sums the chunks in a fixed order, so a row's result depends on K alone.
    row = tl.program_id(0)
    slot = tl.load(row_slots_ptr + row)
    if slot >= 0:
        j = tl.program_id(1)
        c = tl.program_id(2)
        r = tl.arange(0, BLOCK_R)
        r_ok = r < R_MAX
        ks = tl.arange(0, BLOCK_K)
        a_rows = a_ptr + slot.to(tl.int64) * stride_as + (j * R_MAX + r).to(tl.int64)[:, None] * stride_ar
        acc = tl.zeros((BLOCK_R,), tl.float32)
        k_end = tl.minimum(K, (c + 1) * K_CHUNK)
        for k0 in range(c * K_CHUNK, k_end, BLOCK_K):
            k_ok = (k0 + ks) < k_end
            xv = tl.load(x_ptr + row.to(tl.int64) * stride_xt + k0 + ks, mask=k_ok, other=0.0).to(tl.float32)
            at = tl.load(a_rows + (k0 + ks)[None, :], mask=r_ok[:, None] & k_ok[None, :], other=0.0).to(tl.float32)
            acc += tl.sum(at * xv[None, :], axis=1)
        tl.store(xa_ptr + c.to(tl.int64) * stride_xas + row.to(tl.int64) * stride_xat + j * R_MAX + r, acc,
                 mask=r_ok)


@triton.jit
def _decode_expand_kernel(
    xa_ptr, b_ptr, y_ptr, offsets_ptr, row_slots_ptr,
    OUT, N_CHUNKS, stride_xas, stride_xat, stride_bs, stride_bo, stride_yt,
    N_SLICES: tl.constexpr, R_MAX: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # program (row, column tile): y[row, cols] += B[slot, cols] @ xa[row, slice of each column],
    # xa summed over the shrink's K chunks in chunk order (no separate reduction launch)
    row = tl.program_id(0)
    slot = tl.load(row_slots_ptr + row)
    if slot >= 0:
        n0 = tl.program_id(1) * BLOCK_N
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < OUT
        r = tl.arange(0, BLOCK_R)
        r_ok = r < R_MAX
        b_rows = b_ptr + slot.to(tl.int64) * stride_bs + cols.to(tl.int64)[:, None] * stride_bo + r[None, :]
        acc = tl.zeros((BLOCK_N,), tl.float32)
        for j in tl.static_range(N_SLICES):
            o0 = tl.load(offsets_ptr + j)
            o1 = tl.load(offsets_ptr + j + 1)
            if (o0 < n0 + BLOCK_N) & (o1 > n0):
                in_j = col_ok & (cols >= o0) & (cols < o1)
                xa_row = xa_ptr + row.to(tl.int64) * stride_xat + j * R_MAX + r
                xa = tl.load(xa_row, mask=r_ok, other=0.0)
                for c in range(1, N_CHUNKS):
                    xa += tl.load(xa_row + c * stride_xas, mask=r_ok, other=0.0)
                bt = tl.load(b_rows, mask=in_j[:, None] & r_ok[None, :], other=0.0).to(tl.float32)
                acc += tl.sum(bt * xa[None, :], axis=1)
        dt = y_ptr.dtype.element_ty
        y_row = y_ptr + row.to(tl.int64) * stride_yt + cols
        yv = tl.load(y_row, mask=col_ok, other=0.0).to(tl.float32)
        tl.store(y_row, round_to(yv + round_to(acc, dt), dt).to(dt), mask=col_ok)


def lora_decode(
    x: torch.Tensor,
    y: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    slice_offsets: list[int],
    row_slots: list[int] | torch.Tensor,
    k_chunk: int = DECODE_K_CHUNK,
) -> torch.Tensor:
    """Triton LoRA for decode steps: one token per row, each row with its own slot (-1 = base).

    Same layout as `lora`; equals lora_ref with one segment per row. Rows need not be grouped by
    adapter. row_slots: list[int] (validated) or int32 device tensor [T] (no sync). Adds into y.
    The shrink splits `in` into chunks of k_chunk (rounded up to the kernel's K tile) summed in a
    fixed order: a row's result never depends on the batch it is in.
    """
    n_slices, r_max = _check_layout(x, y, A, B, slice_offsets, "lora_decode")
    t, k_in = x.shape
    if isinstance(row_slots, list):
        if len(row_slots) != t:
            raise ValueError(f"lora_decode: {len(row_slots)} row_slots for {t} rows")
        bad = [s for s in row_slots if not -1 <= s < A.shape[0]]
        if bad:
            raise ValueError(f"lora_decode: row_slots {bad} outside [-1, {A.shape[0]})")
    slots = _as_index_tensor("lora_decode: row_slots", row_slots, x.device)
    if slots.shape[0] != t:
        raise ValueError(f"lora_decode: row_slots has {slots.shape[0]} entries for {t} rows")
    if t == 0:
        return y
    offsets = _offsets_tensor(slice_offsets, x.device)
    block_r = triton.next_power_of_2(r_max)
    block_k = max(16, 8192 // block_r)  # [BLOCK_R, BLOCK_K] A tile stays at 8K elements
    # [BLOCK_N, BLOCK_R] B tile at 4K elements on 8 warps: an 8K tile (fp32, rank 8) spilled on
    # sm_90, and rank 64 on 4 warps spilled 8 B on sm_80 (bench/bench_compile.py); now 32 registers
    block_n = max(16, 4096 // block_r)
    if k_chunk < 1:
        raise ValueError(f"lora_decode: k_chunk must be >= 1, got {k_chunk}")
    chunk = triton.cdiv(k_chunk, block_k) * block_k
    n_chunks = triton.cdiv(k_in, chunk)
    parts = torch.empty((n_chunks, t, n_slices * r_max), dtype=torch.float32, device=x.device)
    _decode_shrink_kernel[(t, n_slices, n_chunks)](
        x, A, parts, slots, k_in, chunk, x.stride(0), A.stride(0), A.stride(1), parts.stride(0),
        parts.stride(1), R_MAX=r_max, BLOCK_R=block_r, BLOCK_K=block_k, num_warps=4,
    )
    # base rows' entries stay unwritten: the expand never reads a base row's xa
    _decode_expand_kernel[(t, triton.cdiv(y.shape[1], block_n))](
        parts, B, y, offsets, slots, y.shape[1], n_chunks, parts.stride(0), parts.stride(1), B.stride(0),
        B.stride(1), y.stride(0),
        N_SLICES=n_slices, R_MAX=r_max, BLOCK_R=block_r, BLOCK_N=block_n, num_warps=8,
    )
    return y
