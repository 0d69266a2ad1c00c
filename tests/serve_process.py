"""`warmfast serve` in a subprocess on 127.0.0.1 (a free port), for the server tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, model_dir, adapters: dict, *extra: str, api_key: str | None = None,
                 name: str = "tiny", timeout_s: float = 180.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name, self.api_key = name, api_key
        cmd = [sys.executable, "-m", "warmfast", "serve", "--model", str(model_dir), "--port", str(self.port),
               "--served-model-name", name, *extra]
        for a, d in adapters.items():
            cmd += ["--adapter", f"{a}={d}"]
        env = dict(os.environ)
        env.pop("WARMFAST_API_KEY", None)
        if api_key is not None:
            env["WARMFAST_API_KEY"] = api_key  # through the environment, never the command line
        self.log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty server never blocks
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"warmfast serve exited {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"warmfast serve not ready after {timeout_s}s")

    def client(self, **kw):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.api_key or "none", **kw)

    def post(self, path: str, body, timeout: float = 60, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        if isinstance(body, (bytes, str)):
            return httpx.post(self.url + path, content=body, headers=headers, timeout=timeout, **kw)
        return httpx.post(self.url + path, json=body, headers=headers, timeout=timeout, **kw)

    def get(self, path: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.get(self.url + path, headers=headers, timeout=60)

    def metric(self, name: str) -> float:
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def terminate(self, timeout_s: float = 60.0) -> tuple[int, str]:
        """SIGTERM; the exit status and the output once it ended."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout_s)
        return self.proc.returncode, self.output()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
