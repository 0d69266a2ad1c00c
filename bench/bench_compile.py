"""Compile every Triton kernel for a GPU target without a GPU (the triton wheel ships ptxas).

Catches what the CPU interpreter cannot: code that does not lower to PTX/cubin (a dtype the
backend rejects, a dot shape below 16, too much shared memory for the target). Prints, per kernel
variant, compile seconds, cubin bytes and static shared memory; exits non-zero on any failure.

  TRITON_INTERPRET=0 python bench/bench_compile.py                # all kernels, bf16, sm_90
  python bench/bench_compile.py --ops lora attention --dtypes bf16 fp32 --arch 80
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ["TRITON_INTERPRET"] = "0"  # jit functions, not interpreted ones (before kernels import)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

SMEM_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}  # bytes per block (opt-in max)


def _variants(op: str, dt: str, quick: bool = False):
    """(label, kernel, pointer/scalar types, constexprs, num_warps, num_stages) per kernel variant."""
    from warmfast.kernels import attention as AT
    from warmfast.kernels import logprob as LP
    from warmfast.kernels import lora as LO
    from warmfast.kernels import norm as NO
    from warmfast.kernels import rope as RO

    p = {"bf16": "*bf16", "fp32": "*fp32"}[dt]
    dot = {"bf16": tl.bfloat16, "fp32": tl.float32}[dt]
    if op == "norm":
        for res in (True, False):
            yield (f"rmsnorm res={res}", NO._rmsnorm_kernel,
                   {"x_ptr": p, "res_ptr": p, "w_ptr": p, "out_ptr": p, "res_out_ptr": p, "eps": "fp32"},
                   {"HAS_RES": res, "ROWS": 1, "BLOCK_H": 4096}, 16, 1)
            yield (f"rmsnorm res={res} 8 rows of 256", NO._rmsnorm_kernel,
                   {"x_ptr": p, "res_ptr": p, "w_ptr": p, "out_ptr": p, "res_out_ptr": p, "eps": "fp32"},
                   {"HAS_RES": res, "ROWS": 8, "BLOCK_H": 256}, 8, 1)
    elif op == "rope":
        yield ("rope", RO._rope_kernel, {"q_ptr": p, "k_ptr": p, "pos_ptr": "*i64", "inv_freq_ptr": "*fp32"},
               {"ROWS": 1, "BLOCK_HQ": 32, "BLOCK_HK": 8, "BLOCK_HALF": 64}, 4, 1)
        yield ("rope 4 tokens", RO._rope_kernel, {"q_ptr": p, "k_ptr": p, "pos_ptr": "*i64", "inv_freq_ptr": "*fp32"},
               {"ROWS": 4, "BLOCK_HQ": 4, "BLOCK_HK": 2, "BLOCK_HALF": 8}, 4, 1)
    elif op == "logprob":
        for cfg in LP._configs()[:1] if quick else LP._configs():
            yield (f"logprob {cfg.kwargs} w{cfg.num_warps} s{cfg.num_stages}", LP._logprob_kernel.fn,
                   {"h_ptr": p, "w_ptr": p, "tgt_ptr": "*i64", "m_ptr": "*fp32", "s_ptr": "*fp32",
                    "best_ptr": "*fp32", "arg_ptr": "*i64", "t_ptr": "*fp32"},
                   {"DOT": dot, "BLOCK_V": LP.BLOCK_V, **cfg.kwargs}, cfg.num_warps, cfg.num_stages)
    elif op == "lora":
        prec = "ieee" if dt == "fp32" else "tf32"
        for r in (128,) if quick else (16, 128):
            bk, bn = (64, 128) if r <= 64 else (32, 64)
            nr = 3 * r  # fused q|k|v: all three slices' ranks in one shrink
            yield (f"lora shrink r={r}", LO._shrink_kernel,
                   {"x_ptr": p, "a_ptr": p, "xa_ptr": "*fp32", "seg_starts_ptr": "*i32", "seg_slots_ptr": "*i32"},
                   {"NR": nr, "DOT": dot, "PRECISION": prec, "BLOCK_M": 64,
                    "BLOCK_R": min(128, triton.next_power_of_2(nr)), "BLOCK_K": 64 if nr <= 64 else 32}, 4, 3)
            yield (f"lora expand r={r}", LO._expand_kernel,
                   {"xa_ptr": "*fp32", "b_ptr": p, "y_ptr": p, "offsets_ptr": "*i32", "seg_starts_ptr": "*i32",
                    "seg_slots_ptr": "*i32"},
                   {"N_SLICES": 3, "R_MAX": r, "PRECISION": prec, "BLOCK_M": 64, "BLOCK_R": r, "BLOCK_N": bn}, 4, 3)
            yield (f"lora decode shrink r={r}", LO._decode_shrink_kernel,
                   {"x_ptr": p, "a_ptr": p, "xa_ptr": "*fp32", "row_slots_ptr": "*i32"},
                   {"R_MAX": r, "BLOCK_R": r, "BLOCK_K": max(16, 8192 // r)}, 4, 3)
            yield (f"lora decode expand r={r}", LO._decode_expand_kernel,
                   {"xa_ptr": "*fp32", "b_ptr": p, "y_ptr": p, "offsets_ptr": "*i32", "row_slots_ptr": "*i32"},
                   {"N_SLICES": 2, "R_MAX": r, "BLOCK_R": r, "BLOCK_N": max(16, 8192 // r)}, 4, 3)
    elif op == "attention":
        for d in (64, 128):
            bm, bn, warps = (128, 64, 4) if d <= 64 else (64, 32, 8)
            yield (f"varlen prefill d={d}", AT._prefill_kernel,
                   {"q_ptr": p, "k_ptr": p, "v_ptr": p, "o_ptr": p, "cu_q_ptr": "*i32", "cu_k_ptr": "*i32",
                    "qk_scale": "fp32"},
                   {"GROUPS": 4, "HEAD_DIM": d, "DOT": dot, "PRECISION": "ieee", "BLOCK_M": bm, "BLOCK_N": bn,
                    "BLOCK_D": d}, warps, 2)
            yield (f"paged decode d={d}", AT._paged_decode_kernel,
                   {"q_ptr": p, "k_ptr": p, "v_ptr": p, "o_ptr": p, "tables_ptr": "*i32", "lens_ptr": "*i32",
                    "qk_scale": "fp32"},
                   {"GROUPS": 4, "HEAD_DIM": d, "BLOCK_SIZE": 16, "BLOCK_G": 4, "BLOCK_D": d}, 4, 3)
    else:
        raise ValueError(f"unknown op {op!r}")


def compile_all(ops: list[str], dtypes: list[str], arch: int, quick: bool = False) -> list[str]:
    """Compiles each variant; returns failure messages (empty when everything lowered)."""
    target = GPUTarget("cuda", arch, 32)
    failures = []
    for dt in dtypes:
        for op in ops:
            for label, fn, types, consts, warps, stages in _variants(op, dt, quick):
                sig = {a: ("constexpr" if a in consts else types.get(a, "i32")) for a in fn.arg_names}
                t0 = time.perf_counter()
                try:
                    c = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=target,
                                       options={"num_warps": warps, "num_stages": stages})
                except Exception as e:  # report every variant, then fail at the end
                    failures.append(f"{op} {dt} {label}: {type(e).__name__}: {str(e)[:400]}")
                    print(f"FAIL {op:9s} {dt:4s} {label}: {type(e).__name__}", flush=True)
                    continue
                smem = c.metadata.shared
                limit = SMEM_LIMIT.get(arch)
                if limit is not None and smem > limit:
                    failures.append(f"{op} {dt} {label}: {smem} B shared memory > sm_{arch} limit {limit} B")
                print(f"ok   {op:9s} {dt:4s} {label:40s} {time.perf_counter() - t0:5.1f}s "
                      f"cubin {len(c.asm['cubin']):8d} B  shared {smem:6d} B", flush=True)
    return failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", nargs="+", default=["norm", "rope", "logprob", "lora", "attention"])
    ap.add_argument("--dtypes", nargs="+", default=["bf16"], choices=["bf16", "fp32"])
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 for H100")
    ap.add_argument("--quick", action="store_true", help="one autotune config, the largest LoRA rank only")
    args = ap.parse_args(argv)
    print(f"triton {triton.__version__}, target sm_{args.arch}")
    failures = compile_all(args.ops, args.dtypes, args.arch, args.quick)
    for f in failures:
        print(f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
