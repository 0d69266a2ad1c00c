"""`warmfast serve` lifecycle: a full queue answers 429 with Retry-After (RateLimitError), SIGTERM
drains (requests in flight finish, new ones get 503, exit 0), the adapter endpoints behind their
flag, a model folder that does not load exits 2 with one line."""
import subprocess
import sys
import threading
import time

import openai
import pytest

import warmfast as wf
from serve_process import ServerProcess, free_port


def _wait(cond, timeout_s=30.0):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_queue_full_429_then_sigterm_drains_and_exits_0(tiny):
    p = tiny("llama", n_adapters=3)
    adapters = {"a0": p.adapters["adapter_0"]}
    server = ServerProcess(p.model_dir, adapters, "--max-queued", "1", "--allow-adapter-updates")
    try:
        eng = wf.Engine.from_pretrained(p.model_dir, adapters=adapters)
        prompt, n = "on and on and on", 480
        lib = eng.generate([wf.GenerateRequest(prompt=prompt, adapter="a0", max_new_tokens=n)])[0]
        assert lib.finish_reason == "length"
        client = server.client(max_retries=0, timeout=120)
        done = {}
        slow = threading.Thread(target=lambda: done.setdefault("r", client.completions.create(
            model="a0", prompt=prompt, max_tokens=n, temperature=0)))
        slow.start()
        _wait(lambda: server.metric("warmfast_requests_in_flight") == 1)
        with pytest.raises(openai.RateLimitError) as err:
            client.completions.create(model="a0", prompt="x", max_tokens=2)
        assert err.value.response.headers["Retry-After"] == "1"
        server.proc.send_signal(15)  # SIGTERM while the slow request runs
        _wait(lambda: server.get("/health").status_code == 503)
        with pytest.raises(openai.InternalServerError) as err:  # 503 while draining
            client.completions.create(model="a0", prompt="x", max_tokens=2)
        assert err.value.status_code == 503
        slow.join(timeout=120)
        assert done["r"].choices[0].text == lib.text  # the request in flight finished in full
        server.proc.wait(timeout=60)
        assert server.proc.returncode == 0, server.output()
        assert "drained" in server.output()
    finally:
        server.stop()


def test_adapter_endpoints_behind_their_flag(tiny):
    p = tiny("llama", n_adapters=3)
    live = hasattr(wf.Engine, "load_adapter")  # live loading lands with the adapters16 branch
    capacity = ["--max-adapters", "2", "--max-lora-rank", "64"] if live else []
    server = ServerProcess(p.model_dir, {"a0": p.adapters["adapter_0"]}, "--allow-adapter-updates", *capacity)
    try:
        body = {"lora_name": "late", "lora_path": str(p.adapters["adapter_1"])}
        if not live:
            for path, b in (("/v1/load_lora_adapter", body), ("/v1/unload_lora_adapter", {"lora_name": "a0"})):
                r = server.post(path, b)
                assert r.status_code == 501 and "Engine.load_adapter" in r.json()["error"]["message"]
            return
        r = server.post("/v1/unload_lora_adapter", {"lora_name": "zz"})
        assert r.status_code == 404
        r = server.post("/v1/load_lora_adapter", {"lora_name": "a0", "lora_path": str(p.adapters["adapter_1"])})
        assert r.status_code == 400 and "already served" in r.json()["error"]["message"]
        r = server.post("/v1/load_lora_adapter", body)
        assert r.status_code == 200, r.text
        client = server.client(max_retries=0)
        assert "late" in {m.id for m in client.models.list()}
        eng = wf.Engine.from_pretrained(p.model_dir, adapters={"late": p.adapters["adapter_1"]})
        lib = eng.generate([wf.GenerateRequest(prompt="a b c", adapter="late", max_new_tokens=8)])[0]
        assert client.completions.create(model="late", prompt="a b c", max_tokens=8, temperature=0
                                         ).choices[0].text == lib.text
        assert server.post("/v1/unload_lora_adapter", {"lora_name": "late"}).status_code == 200
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="late", prompt="a b c", max_tokens=2)
    finally:
        server.stop()


def test_a_model_that_does_not_load_exits_2_with_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    r = subprocess.run([sys.executable, "-m", "warmfast", "serve", "--model", str(tmp_path), "--port",
                        str(free_port())], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("warmfast serve: the engine failed:") and str(tmp_path) in last
