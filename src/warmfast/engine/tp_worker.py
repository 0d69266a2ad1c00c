"""A tensor-parallel worker: ranks 1..n-1 of an engine whose rank 0 started it (engine/tensor_parallel.py).

    python -m warmfast.engine.tp_worker      # started by Engine.from_pretrained(tensor_parallel=n)

Its stdin carries rank 0's messages (pickles): first where and what to load, then commands until
"stop" or until rank 0's process ends (EOF). Its stdout is a report pipe, and nothing else writes
there once main() runs: "joining" when it is about to join the process group, and the error if it
fails (then it exits). Anything printed goes to stderr. (An import that fails ends the process
before main(): rank 0 then reports its exit code and the traceback is on stderr.)
"""
from __future__ import annotations

import os
import pickle
import sys
import traceback

import torch
import torch.distributed as dist

from warmfast.engine import executor, tensor_parallel
from warmfast.engine.api import Engine
from warmfast.engine.core import cuda_pool_blocks


def main() -> int:
    reports = os.fdopen(os.dup(1), "wb")  # the report pipe; fd 1 (print, libraries) goes to stderr
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    start = pickle.load(requests)
    rank, size = start["rank"], start["size"]
    torch.set_num_threads(start["threads"])
    device = torch.device(start["device"])
    tensor_parallel.send(reports, "joining")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(start["backend"], init_method=f"file://{start['store']}", rank=rank,
                            world_size=size, timeout=tensor_parallel.JOIN_TIMEOUT)
    engine, status = None, None
    try:
        engine = Engine._load(**start["load"], device=device, tp=(rank, size))
    except Exception as err:  # every rank learns of it below; rank 0 raises it
        status = f"{type(err).__name__}: {err}"
    if any(tensor_parallel.agree(status, size)):
        dist.destroy_process_group()
        return 1
    caches: dict[int, object] = {}
    try:
        with torch.inference_mode():
            while True:
                try:
                    command = pickle.load(requests)
                except EOFError:  # rank 0's process has ended
                    return 0
                kind, *args = command
                if kind == "step":
                    plan = args[0]
                    cache = caches.get(plan.core)
                    if plan.cached and cache is None:
                        cache = caches[plan.core] = executor.new_cache(engine, plan.num_blocks, plan.block_size)
                    executor.execute(engine, plan, cache if plan.cached else None)
                elif kind == "drop_cache":
                    caches.pop(args[0], None)
                elif kind == "pool_blocks":
                    cuda_pool_blocks(engine, *args)
                elif kind == "load_adapter":
                    engine.load_adapter(*args)
                elif kind == "unload_adapter":
                    engine.unload_adapter(*args)
                elif kind == "stop":
                    dist.destroy_process_group()
                    return 0
                else:
                    raise ValueError(f"unknown command {kind!r} from rank 0")
    except BaseException as err:
        tensor_parallel_report(reports, err)
        os._exit(1)  # leave at once: the others learn of it from the broken connection


def tensor_parallel_report(reports, err: BaseException) -> None:
    """Tell rank 0 why this worker stops (one line), and print the whole traceback to stderr."""
    traceback.print_exc(file=sys.stderr)
    try:
        pickle.dump(f"{type(err).__name__}: {err}", reports)
        reports.flush()
    except OSError:
        pass  # rank 0 has gone: nobody to tell


if __name__ == "__main__":
    sys.exit(main())
