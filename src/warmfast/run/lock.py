"""One run at a time per store: a lock file beside the store, held for the whole run.

The lock is an OS file lock (flock; msvcrt on Windows) on `<store>.lock`, so it is released by the
kernel whenever its owner ends, even by SIGKILL: a lock left by a dead process is simply taken
over (and the takeover is logged). The file holds the owner's pid, host and start time, which a
refused second run prints. Shards of one run lock their own store files and run side by side.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from warmfast.errors import WarmfastError

log = logging.getLogger("warmfast.run")

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


class RunLocked(WarmfastError):
    """Another live process holds the run folder's lock."""


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:  # held by another process
        return False


class RunLock:
    def __init__(self, store_path: Path):
        self.path = Path(f"{store_path}.lock")
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            owner = self._owner(fd)
            os.close(fd)
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(owner.get("started", 0)))
            raise RunLocked(f"{self.path.parent} is in use by another warmfast run (pid {owner.get('pid', '?')} "
                            f"on host {owner.get('host', '?')}, since {since}; lock {self.path}); wait for it "
                            "to finish or stop it: two runs on one folder would compute the same jobs twice")
        old = self._owner(fd)
        if old.get("pid") is not None:
            log.warning("%s: taking over the lock of pid %s on %s, which ended without releasing it",
                        self.path, old.get("pid"), old.get("host"))
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, me.encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty lock file: released cleanly (the file stays: see below)
        os.close(self._fd)  # closing drops the lock; unlinking could race a process opening it now
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    @staticmethod
    def _owner(fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        try:
            owner = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            return {}
        return owner if isinstance(owner, dict) else {}
