"""Stopping a run cleanly: SIGINT (Ctrl-C) and SIGTERM end it after its current commit.

While `GracefulStop` is active, the first SIGINT or SIGTERM only sets a flag; the generation and
judging loops call `check` after each store transaction and then raise `Stopped`, whose message
says "stopped; rerun the same command to resume (N of M done)" and whose exit code is 128 + the
signal (130, 143). A second Ctrl-C (or SIGTERM) raises KeyboardInterrupt at once: the batch in
flight is lost, everything committed before it is kept (every batch is one transaction).
"""
from __future__ import annotations

import logging
import signal
import threading

from warmfast.errors import Stopped

log = logging.getLogger("warmfast.run")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():  # only there can handlers be set
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s: stopping after the current batch is saved (press Ctrl-C again to stop at once)",
                    signal.Signals(signum).name)

    def check(self, stage: str, done: int, total: int) -> None:
        """Raise Stopped if a signal came; called right after a commit."""
        if self.signum is not None:
            raise Stopped(f"stopped; rerun the same command to resume ({done} of {total} done; "
                          f"{signal.Signals(self.signum).name} during {stage})", 128 + self.signum)
