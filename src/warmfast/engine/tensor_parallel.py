"""Tensor parallelism inside the engine: rank 0 is the caller's process, ranks 1..n-1 are worker
processes it starts and drives. Callers see one engine:

    eng = wf.Engine.from_pretrained(model_dir, adapters=..., tensor_parallel=2)   # starts 1 worker
    eng.generate(...); eng.score(...); eng.core(); eng.load_adapter(...)            # as with one rank
    eng.close()                                          # or at exit: the workers stop with it

Start (`start_workers`): rank 0 makes a rendezvous folder and starts n-1 workers
(`python -m warmfast.engine.tp_worker`), each told over its stdin its rank and what to load. All n
join one torch.distributed process group (a FileStore in that folder; gloo on CPU, NCCL on CUDA
with rank r on GPU base+r), load their shard of every weight and adapter (model/parallel.py), and
agree on the outcome: a load error on any rank stops every rank, and rank 0 raises it.

Steps: rank 0's core schedules alone. Before each step it writes the step (engine/executor.py
StepPlan: lists of ids, positions, block tables) to every worker's stdin, then runs it itself;
the collectives of the forward pass meet inside. Rank 0 samples from the gathered logits, so
nothing is decided anywhere else and the workers answer nothing while they are well. Adapter
loads and unloads, KV pool sizing and freed caches travel the same way, in the same order.

Failure: a worker that fails writes its error to its stdout and exits; rank 0's collective then
fails (its peer is gone) and raises TensorParallelError naming the rank and its error. A failure
on rank 0 inside a step stops the workers (they would wait in a collective for a rank that will
not come). Either way the engine is broken from then on: every later call says why. A worker
idles blocked on its stdin, not in a collective, so hours between steps cost nothing, and it
exits when rank 0's process ends (its stdin closes).
"""
from __future__ import annotations

import logging
import os
import pickle
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from warmfast.model.parallel import TensorParallelError

log = logging.getLogger("warmfast")
JOIN_TIMEOUT = timedelta(minutes=10)  # the process group's collectives (a step takes far less)
_GRACE_S = 5.0  # after a failed collective: how long a failing worker gets to report and exit


def tp_devices(device: torch.device, n: int) -> list[torch.device]:
    """Each rank's device: the CPU for all, or n consecutive GPUs from `device`'s index (cuda
    without an index: from 0, or from LOCAL_RANK * n under torchrun, one group of n GPUs per
    data-parallel process)."""
    if device.type != "cuda":
        return [device] * n
    base = device.index
    if base is None:
        base = int(os.environ.get("LOCAL_RANK", 0)) * n
    count = torch.cuda.device_count()
    if base + n > count:
        raise TensorParallelError(f"tensor_parallel={n} on {device} needs GPUs cuda:{base}..cuda:{base + n - 1}, "
                                  f"but this machine shows {count}")
    return [torch.device("cuda", base + r) for r in range(n)]


def check_no_process_group(n: int) -> None:
    if dist.is_initialized():
        raise TensorParallelError(
            f"tensor_parallel={n}: the engine's ranks form their own torch.distributed process group, "
            f"and this process already has one (world of {dist.get_world_size()}): close the other "
            "tensor-parallel engine first (Engine.close()), or launch this process without one")


def send(stream, message) -> None:
    pickle.dump(message, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


class TPWorkers:
    """Rank 0's handle on ranks 1..n-1: their processes and the pipes that carry its commands."""

    def __init__(self, procs: list[subprocess.Popen], folder: str):
        self.procs, self.folder = procs, folder
        self.broken: str | None = None  # why the group stopped, once it has
        self.closed = False
        self.torn_down = False  # processes stopped, pipes closed, process group left

    # ---- commands --------------------------------------------------------------------------
    def send(self, *command) -> None:
        """Write a command to every worker (one pickle); it takes effect in the worker's order."""
        self.check()
        data = pickle.dumps(command, protocol=pickle.HIGHEST_PROTOCOL)
        for rank, proc in enumerate(self.procs, start=1):
            try:
                proc.stdin.write(data)
                proc.stdin.flush()
            except OSError as err:  # BrokenPipeError: the worker has gone
                self.fail(err)  # raises with the worker's report when it left one
                raise TensorParallelError(f"tensor-parallel rank {rank}: its command pipe broke ({err}); "
                                          f"{self.broken}") from err

    def collective(self, command: tuple, fn: Callable[[], Any]) -> Any:
        """Send `command`, then run fn() here: the workers run the same, and fn's collectives meet
        theirs. Any failure stops the group (see the module's docstring)."""
        self.send(*command)
        try:
            return fn()
        except BaseException as err:
            self.fail(err)
            raise  # fail() raised for a worker's failure; rank 0's own is re-raised as it is

    def drop_cache(self, core_id: int) -> None:
        """A core closed: each worker frees its KV cache."""
        if self.broken is None and not self.closed:
            self.send("drop_cache", core_id)

    def check(self) -> None:
        if self.closed:
            raise TensorParallelError("this tensor-parallel engine is closed (Engine.close()); load it again")
        if self.broken is not None:
            raise TensorParallelError(f"this tensor-parallel engine stopped after an error: {self.broken}; "
                                      "load it again")

    # ---- failure and shutdown -------------------------------------------------------------------
    def fail(self, err: BaseException) -> None:
        """The group is broken: gather what the workers said, stop them, raise the workers' error
        (TensorParallelError) if any reported one, else return (the caller re-raises its own)."""
        if self.broken is not None:
            return
        deadline = time.monotonic() + (_GRACE_S if isinstance(err, (RuntimeError, OSError)) else 0.0)
        reports = []
        for rank, proc in enumerate(self.procs, start=1):
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()  # waiting in a collective for rank 0: it will never come
                proc.wait()
                continue
            said = _read_report(proc)
            reports.append(f"rank {rank} exited with code {proc.returncode}" + (f": {said}" if said else ""))
        self.broken = "; ".join(reports) or f"rank 0 failed inside a step: {type(err).__name__}: {err}"
        self._teardown()
        if reports:
            raise TensorParallelError(f"tensor-parallel {self.broken}") from err

    def stop_failed(self, reason: str) -> None:
        """After a load that failed somewhere: every rank knows and stops by itself; collect them."""
        self.broken = reason
        self._collect()
        self._teardown()

    def close(self) -> None:
        """Stop the workers and leave the process group (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self.broken is None:
            for proc in self.procs:
                try:
                    send(proc.stdin, ("stop",))
                except (BrokenPipeError, OSError):
                    pass  # already gone: _collect() reaps it
            self._collect()
        self._teardown()

    def _collect(self, timeout_s: float = 60.0) -> None:
        """Wait for every worker to exit by itself; kill one that has not within timeout_s."""
        for proc in self.procs:
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _teardown(self) -> None:
        """Kill what still runs, close the pipes, leave the process group: once (the group a later
        engine makes must survive this one's garbage collection)."""
        if self.torn_down:
            return
        self.torn_down = True
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except (BrokenPipeError, OSError):
                    pass
        if dist.is_initialized():
            dist.destroy_process_group()
        shutil.rmtree(self.folder, ignore_errors=True)


def _read_report(proc: subprocess.Popen) -> str:
    """What an exited worker wrote on its report pipe ("" if nothing)."""
    try:
        return str(pickle.load(proc.stdout))
    except (EOFError, pickle.UnpicklingError, OSError, ValueError):
        return ""


def start_workers(n: int, devices: list[torch.device], load: dict, threads: int) -> TPWorkers:
    """Start ranks 1..n-1 and join them in one process group as rank 0 (this process).
    `load`: Engine._load's keyword arguments (model_dir, adapters, dtype, ...), the same on every
    rank; each worker loads its own shard once the group exists."""
    check_no_process_group(n)
    folder = tempfile.mkdtemp(prefix="warmfast-tp-")
    store = os.path.join(folder, "rendezvous")
    backend = "nccl" if devices[0].type == "cuda" else "gloo"
    procs: list[subprocess.Popen] = []
    workers = TPWorkers(procs, folder)
    try:
        for rank in range(1, n):
            proc = subprocess.Popen([sys.executable, "-m", "warmfast.engine.tp_worker"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            procs.append(proc)
            send(proc.stdin, {"rank": rank, "size": n, "store": store, "backend": backend,
                              "device": str(devices[rank]), "threads": threads, "load": load})
        _await_joining(procs)
        if devices[0].type == "cuda":
            torch.cuda.set_device(devices[0])
        dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=n,
                                timeout=JOIN_TIMEOUT)
    except BaseException:
        workers.broken = "the workers did not start"
        workers._teardown()
        raise
    return workers


def _await_joining(procs: list[subprocess.Popen]) -> None:
    """Wait until every worker has imported what it needs and is about to join the process group
    (it says "joining"), so that a worker that dies on the way is reported at once instead of
    after the group's timeout."""
    for rank, proc in enumerate(procs, start=1):
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                try:
                    said = pickle.load(proc.stdout)
                except (EOFError, pickle.UnpicklingError):  # gone, or something printed on its report pipe
                    said = None
                if said == "joining":
                    break
                if proc.poll() is None:  # alive but not making sense: it cannot join
                    proc.kill()
                proc.wait()
                raise TensorParallelError(f"tensor-parallel rank {rank} exited with code {proc.returncode} "
                                          f"before joining the group" + (f": {said}" if said else
                                                                         " (its error is above, on stderr)"))
            if proc.poll() is not None:
                raise TensorParallelError(f"tensor-parallel rank {rank} exited with code {proc.returncode} "
                                          "before joining the group (its error is above, on stderr)")


def agree(status: str | None, size: int) -> list[str | None]:
    """Every rank's load outcome (None: loaded), on every rank."""
    statuses: list = [None] * size
    dist.all_gather_object(statuses, status)
    return statuses
