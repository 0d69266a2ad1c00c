"""The ranks of one tensor-parallel engine in lockstep during a run: TP rank 0 leads, the others follow.

Under `torchrun ... -m warmfast run CONFIG --shard env --tensor-parallel N` every group of N
consecutive ranks is one tensor-parallel engine (model/parallel.py `parallel_layout`). The engine's
collectives need every rank of the group inside the same call with the same requests, but only one
rank may plan the run, read and write the store shard, judge and report. So:

    leader (TP rank 0)   runs the whole runner (run/runner.py `run`) as one process would, with
                         its engine wrapped in `MirroredEngine`: before each engine call it
                         broadcasts the call (method and its pickled requests) to its group
    followers            never open the store, build the plan or print; they loop in `follow`:
                         receive a command, make the same call on their own shard of the engine,
                         discard the result (the leader's is the same), until "stop"

Commands travel over the layout's `control` group: a gloo group of the N ranks (also under NCCL:
pickled objects stay on the CPU) with a long timeout (parallel.WAIT_TIMEOUT), because a follower
may wait for hours while the leader works alone.

Judging runs on the leader only; what the followers do meanwhile depends on the judge:
- log-prob judge on the generation model (`judge.model: generation`): its `engine.score` calls go
  through the same MirroredEngine, so the followers take part in each one (vocab-parallel logsumexp);
- log-prob judge on another model folder: the leader first releases the generation engine on every
  rank ("release"), then loads the judge model unsharded on its own device and scores alone; the
  followers wait for "stop". Such a judge must fit one device (or use the HTTP judge);
- OpenAI-compatible HTTP judge, refusal rules, answer extraction: no engine; the followers wait.

Failures never leave a rank waiting forever: an exception inside an engine call happens on every
rank of the group (same inputs, same checks), so each raises on its own; any other exception on
the leader (store, config, HTTP) is broadcast as "abort" and the followers raise a
TensorParallelError naming it. torchrun then stops the rest of the launch.
"""
from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import torch.distributed as dist

from warmfast.engine.api import Engine
from warmfast.model.parallel import ParallelLayout, TensorParallelError


class Leader:
    """TP rank 0's side: announces every engine command to the group before making it."""

    def __init__(self, layout: ParallelLayout, device: str):
        if layout.tp.rank != 0:
            raise TensorParallelError(f"Leader: this process is TP rank {layout.tp.rank}, not 0")
        self.layout, self.device = layout, device
        self.in_call = False  # inside an engine call: the followers are in it too

    def _send(self, *command) -> None:
        dist.broadcast_object_list([command], src=self.layout.tp.src, group=self.layout.control)

    def _step(self, fn: Callable[[], Any]) -> Any:
        self.in_call = True
        out = fn()  # an exception leaves in_call set: the followers failed alike, nobody to tell
        self.in_call = False
        return out

    def load(self, **kwargs) -> MirroredEngine:
        """Engine.from_pretrained(**kwargs) on every rank of the group (each on its own device)."""
        self._send("load", kwargs)
        tp = self.layout.tp
        engine = self._step(lambda: Engine.from_pretrained(**kwargs, device=self.device,
                                                           tensor_parallel=tp.size, tp_group=tp))
        return MirroredEngine(engine, self)

    def call(self, engine, method: str, args: tuple, kwargs: dict) -> Any:
        self._send("call", method, args, kwargs)
        return self._step(lambda: getattr(engine, method)(*args, **kwargs))

    def release(self) -> None:
        """The followers drop their engine (the leader drops its own)."""
        self._send("release")

    def stop(self) -> None:
        self._send("stop")

    def abort(self, err: Exception) -> None:
        """Tell the followers the leader failed outside an engine call (inside one they failed too)."""
        if not self.in_call:
            self._send("abort", f"{type(err).__name__}: {err}")


class MirroredEngine:
    """The leader's engine: `score` and `generate` are announced to the followers, then made here.
    Every other attribute (tok, adapter_names, tp, device, ...) is the engine's own."""

    def __init__(self, engine, leader: Leader):
        self._engine, self._leader = engine, leader

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def score(self, requests, **kwargs):
        return self._leader.call(self._engine, "score", (requests,), kwargs)

    def generate(self, requests, **kwargs):
        return self._leader.call(self._engine, "generate", (requests,), kwargs)


def follow(layout: ParallelLayout, device: str) -> int:
    """A follower's whole run: serve the leader's commands until "stop"; returns the calls served."""
    tp = layout.tp
    if tp.rank == 0:
        raise TensorParallelError("follow: TP rank 0 leads; it runs run/runner.py `run` instead")
    engine, served = None, 0
    while True:
        box: list = [None]
        dist.broadcast_object_list(box, src=tp.src, group=layout.control)
        kind, *rest = box[0]
        if kind == "load":
            engine = None
            gc.collect()
            engine = Engine.from_pretrained(**rest[0], device=device, tensor_parallel=tp.size, tp_group=tp)
        elif kind == "call":
            method, args, kwargs = rest
            if engine is None:
                raise TensorParallelError(f"TP rank {tp.rank}: asked to {method} before any engine was loaded")
            getattr(engine, method)(*args, **{**kwargs, "progress": False})  # the leader shows progress
            served += 1
        elif kind == "release":
            engine = None
            gc.collect()
        elif kind == "stop":
            return served
        elif kind == "abort":
            raise TensorParallelError(f"TP rank {tp.rank} stops: its TP rank 0 (global rank {tp.src}) "
                                      f"failed: {rest[0]}")
        else:
            raise TensorParallelError(f"TP rank {tp.rank}: unknown command {kind!r} from global rank {tp.src}")
