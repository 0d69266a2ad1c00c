"""Ahead-of-time compilation of every Triton launch the engine makes, for GPU targets, on a CPU.

The launches are recorded from the real launchers (bench/compile_launches.py); each is turned
into the signature, constexprs and alignment attributes that Triton's runtime computes for it
(`native_specialize_impl`, as JITFunction.run does: 16-byte aligned pointers and ints divisible
by 16 get `tt.divisibility`, ints equal to 1 become constants), and an autotuned kernel is
compiled once per config its pruning keeps. Each distinct variant is compiled for every
requested sm_XX by the triton wheel's own LLVM and ptxas; `ptxas -v` on the PTX gives registers,
spill bytes and static shared memory, Triton's metadata the dynamic shared memory. A variant
that fails to compile, spills, or needs more shared memory than the target has is a failure.

  python bench/bench_compile.py                                   # sm_90, the installed triton
  python bench/bench_compile.py --arch 90 80 --json bench/results/aot_compile.json
  python bench/bench_compile.py --arch 90 80 --triton-path ~/.cache/warmfast/triton-3.6.0 --json OUT
      # (also compiles under the triton installed in that folder, in a subprocess:
      #  pip install --no-deps --target ~/.cache/warmfast/triton-3.6.0 triton==3.6.0)
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.backends.nvidia.compiler import CUDABackend  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime import autotuner  # noqa: E402
from triton.runtime.jit import native_specialize_impl  # noqa: E402

from compile_launches import WORKLOADS, Launch, record_workload  # noqa: E402

SMEM_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}  # bytes per block (opt-in max)


class _Pointer:
    """What Triton's specializer reads of a tensor argument: its dtype and address alignment."""

    def __init__(self, t: torch.Tensor):
        self.dtype, self._ptr = t.dtype, 16 if t.data_ptr() % 16 == 0 else 4

    def data_ptr(self) -> int:
        return self._ptr


def variants(launch: Launch):
    """(jit function, signature, constexprs, attrs, options, label) per config of one launch,
    computed as JITFunction.run computes them."""
    kernel = launch.kernel
    fn = kernel.fn if isinstance(kernel, autotuner.Autotuner) else kernel
    configs = [None]
    if isinstance(kernel, autotuner.Autotuner):
        named = {k: (_Pointer(v) if isinstance(v, torch.Tensor) else v) for k, v in launch.args.items()}
        configs = list(kernel.configs)
        if getattr(kernel, "early_config_prune", None) is not None:
            configs = list(kernel.early_config_prune(configs, named))
    for cfg in configs:
        args = dict(launch.args)
        options = dict(launch.options)
        if cfg is not None:
            args.update(cfg.kwargs)
            options.update(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        signature, constexprs, attrs = {}, {}, {}
        for i, p in enumerate(fn.params):
            value = args[p.name]
            if p.is_constexpr:
                spec = ("constexpr", value)
            else:
                arg = _Pointer(value) if isinstance(value, torch.Tensor) else value
                spec = native_specialize_impl(CUDABackend, arg, p.is_const, not p.do_not_specialize,
                                              not p.do_not_specialize_on_alignment)
                if p.annotation_type:
                    spec = (p.annotation_type, spec[1] if not p.annotation_type[:2] in ("fp", "bf", "u1") else None)
            signature[p.name] = spec[0]
            if spec[0] == "constexpr":
                constexprs[(i,)] = spec[1]
            elif isinstance(spec[1], str):
                attrs[(i,)] = CUDABackend.parse_attr(spec[1])
        opts = {k: options[k] for k in ("num_warps", "num_stages") if k in options}
        label = " ".join(f"{k}={v}" for k, v in (cfg.kwargs.items() if cfg else ()))
        yield fn, signature, constexprs, attrs, opts, label


def _ptxas_usage(ptx: str, arch: int) -> dict:
    """Registers, spills and static shared memory from `ptxas -v` on the kernel's PTX."""
    from triton import knobs

    ptxas = knobs.nvidia.ptxas.path
    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        run = subprocess.run([ptxas, "-v", f"--gpu-name={gpu}", str(src), "-o", str(Path(tmp) / "k.cubin")],
                             capture_output=True, text=True)
    log = run.stdout + run.stderr
    if run.returncode != 0:
        raise RuntimeError(f"ptxas -v failed: {log[-400:]}")

    def num(pattern):
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0
    return {"registers": num(r"Used (\d+) registers"), "spill_stores": num(r"(\d+) bytes spill stores"),
            "spill_loads": num(r"(\d+) bytes spill loads"), "static_smem": num(r"(\d+) bytes smem")}


def _describe(constexprs: dict, fn) -> str:
    names = fn.arg_names
    return ", ".join(f"{names[k[0]]}={v}" for k, v in constexprs.items())


def compile_all(workloads: list[str], archs: list[int], kernels: list[str] | None = None) -> dict:
    """Compile every distinct variant of every workload's launches for each arch (only the
    kernels named in `kernels`, when given)."""
    results, failures, seen = [], [], set()
    for wl in workloads:
        for launch in record_workload(wl):
            for fn, sig, consts, attrs, opts, label in variants(launch):
                if kernels and fn.fn.__name__ not in kernels:
                    continue
                key = (fn.fn.__module__, fn.fn.__name__, str(sorted(sig.items())), str(sorted(consts.items())),
                       str(sorted(attrs.items())), str(sorted(opts.items())))
                if key in seen:
                    continue
                seen.add(key)
                for arch in archs:
                    row = {"kernel": fn.fn.__name__, "workload": wl, "arch": arch, "config": label,
                           "constexprs": _describe(consts, fn), "options": opts,
                           "aligned_args": sorted(fn.arg_names[k[0]] for k in attrs if attrs[k])}
                    t0 = time.perf_counter()
                    try:
                        c = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs),
                                           target=GPUTarget("cuda", arch, 32), options=opts)
                        row.update(_ptxas_usage(c.asm["ptx"], arch), dynamic_smem=c.metadata.shared,
                                   seconds=round(time.perf_counter() - t0, 2))
                    except Exception as e:  # every variant is reported, the run fails at the end
                        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                    problems = []
                    if "error" in row:
                        problems.append(row["error"])
                    else:
                        if row["spill_stores"] or row["spill_loads"]:
                            problems.append(f"spills {row['spill_stores']} B stores / {row['spill_loads']} B loads")
                        smem = row["dynamic_smem"] + row["static_smem"]
                        if smem > SMEM_LIMIT.get(arch, 1 << 30):
                            problems.append(f"{smem} B shared memory > sm_{arch} limit {SMEM_LIMIT[arch]} B")
                    if problems:
                        failures.append(f"sm_{arch} {wl} {fn.fn.__name__} [{row['constexprs']}] "
                                        f"{opts}: {'; '.join(problems)}")
                    print(f"{'FAIL' if problems else 'ok  '} sm_{arch} {fn.fn.__name__:24s} {wl:18s} "
                          f"regs {row.get('registers', '-'):>3} spill {row.get('spill_stores', '-')} "
                          f"smem {row.get('dynamic_smem', '-'):>6} {label}", flush=True)
                    results.append(row)
    return {"triton": triton.__version__, "archs": archs, "workloads": workloads, "variants": results,
            "failures": failures}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, nargs="+", default=[90], help="compute capabilities, e.g. 90 80")
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--kernels", nargs="+", default=None, help="only these kernels, e.g. _sample_kernel")
    ap.add_argument("--triton-path", action="append", default=[],
                    help="a folder holding another triton (pip install --target): compile under it too")
    ap.add_argument("--json", default=None, help="write the report here")
    args = ap.parse_args(argv)
    runs = [compile_all(args.workloads, args.arch, args.kernels)]
    for path in args.triton_path:  # the same compile under another triton, in a fresh process
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.json"
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")])}
            cmd = [sys.executable, __file__, "--arch", *map(str, args.arch), "--workloads", *args.workloads,
                   "--json", str(out), *(["--kernels", *args.kernels] if args.kernels else [])]
            r = subprocess.run(cmd, env=env, text=True)
            if not out.exists():
                runs.append({"triton_path": str(path), "failures": [f"the run under {path} wrote no report (rc {r.returncode})"]})
                continue
            runs.extend(json.loads(out.read_text())["runs"])
    report = {"bench": "aot_compile", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": platform.node(), "torch": torch.__version__, "runs": runs}
    for run in runs:
        print(f"triton {run.get('triton')}: {len(run.get('variants', []))} compiles, {len(run['failures'])} failures")
        for f in run["failures"]:
            print("  " + f, file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 1 if any(run["failures"] for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
