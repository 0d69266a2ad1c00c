"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1 (http.server in a thread)."""
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from warmfast.openai_client import ClientConfig, EndpointError, EndpointUnreachable, OpenAIClient

SECRET = "sk-test-0123456789abcdef"


class FakeEndpoint:
    """A chat-completions server. `script` is a list of HTTP statuses (or raw 200 bodies, bytes) to
    answer before succeeding;
    `answer(body) -> str` makes the completion text. Every request is recorded."""

    def __init__(self, answer=lambda body: "CORRECT", script=()):
        self.answer, self.script, self.seen = answer, list(script), []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                    status = outer.script.pop(0) if outer.script else 200
                if isinstance(status, bytes):  # a malformed 200 reply: this body as it is
                    payload = status
                    self.send_response(200)
                elif status != 200:
                    payload = json.dumps({"error": {"message": f"scripted {status}"}}).encode()
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                else:
                    text = outer.answer(body)
                    payload = json.dumps({"model": body["model"], "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    servers = []

    def make(**kw):
        servers.append(FakeEndpoint(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _cfg(url, **kw):
    return ClientConfig(base_url=url, api_key_env="WARMFAST_TEST_KEY", backoff_s=0.01, max_backoff_s=0.05, **kw)


def test_chat_sends_key_and_body_and_reads_the_reply(endpoint, monkeypatch):
    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    ep = endpoint(answer=lambda b: "echo:" + b["messages"][-1]["content"])
    client = OpenAIClient(_cfg(ep.base_url))
    r = client.chat([{"role": "user", "content": "hi"}], model="judge-1", temperature=0.0, max_tokens=4, seed=7)
    assert r.text == "echo:hi" and r.finish_reason == "stop" and r.model == "judge-1"
    assert ep.seen[0]["path"] == "/v1/chat/completions"
    assert ep.seen[0]["auth"] == f"Bearer {SECRET}"
    assert ep.seen[0]["body"] == {"model": "judge-1", "messages": [{"role": "user", "content": "hi"}],
                                  "temperature": 0.0, "max_tokens": 4, "seed": 7}
    assert SECRET not in repr(client)


def test_retries_after_429_and_500_then_succeeds(endpoint, monkeypatch):
    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    ep = endpoint(script=[429, 500, 503])
    client = OpenAIClient(_cfg(ep.base_url, max_retries=3))
    assert client.chat([{"role": "user", "content": "q"}], model="m").text == "CORRECT"
    assert len(ep.seen) == 4


def test_gives_up_after_max_retries_with_the_last_status(endpoint, monkeypatch):
    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    ep = endpoint(script=[500] * 10)
    client = OpenAIClient(_cfg(ep.base_url, max_retries=2))
    with pytest.raises(EndpointError, match="after 3 tries.*HTTP 500") as err:
        client.chat([{"role": "user", "content": "q"}], model="m")
    assert len(ep.seen) == 3 and SECRET not in str(err.value)


def test_client_errors_are_not_retried(endpoint, monkeypatch):
    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    ep = endpoint(script=[401])
    client = OpenAIClient(_cfg(ep.base_url, max_retries=5))
    with pytest.raises(EndpointError, match="HTTP 401: .*scripted 401") as err:
        client.chat([{"role": "user", "content": "q"}], model="m")
    assert len(ep.seen) == 1 and SECRET not in str(err.value)


def test_unreachable_endpoint_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    client = OpenAIClient(_cfg(f"http://127.0.0.1:{port}/v1", max_retries=2))
    with pytest.raises(EndpointUnreachable, match=f"cannot reach http://127.0.0.1:{port}/v1/chat/completions "
                                                  "after 3 tries") as err:
        client.chat([{"role": "user", "content": "q"}], model="m")
    assert SECRET not in str(err.value)


def test_missing_key_variable_and_bad_config_name_the_problem(monkeypatch):
    monkeypatch.delenv("WARMFAST_TEST_KEY", raising=False)
    with pytest.raises(EndpointError, match="WARMFAST_TEST_KEY is not set"):
        OpenAIClient(_cfg("http://127.0.0.1:1/v1"))
    OpenAIClient(ClientConfig(base_url="http://127.0.0.1:1/v1", api_key_env=None))  # local server, no auth
    with pytest.raises(ValueError, match="base_url"):
        ClientConfig(base_url="127.0.0.1:8000")
    with pytest.raises(ValueError, match="max_retries"):
        ClientConfig(base_url="http://x", max_retries=-1)


def test_malformed_reply_is_an_error(endpoint, monkeypatch):
    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    ep = endpoint(answer=lambda b: None)  # content null
    client = OpenAIClient(_cfg(ep.base_url))
    with pytest.raises(EndpointError, match="non-text message content"):
        client.chat([{"role": "user", "content": "q"}], model="m")
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        client.chat([{"role": "user"}], model="m")


def test_malformed_replies_are_retried_then_named(endpoint, monkeypatch):
    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    ep = endpoint(script=[b"<html>502 Bad Gateway</html>", b'{"object": "error"}', b"[1, 2]"])
    client = OpenAIClient(_cfg(ep.base_url, max_retries=3))
    assert client.chat([{"role": "user", "content": "q"}], model="m").text == "CORRECT"  # the 4th try
    assert len(ep.seen) == 4
    ep = endpoint(script=[b"<html>oops</html>"] * 5)
    client = OpenAIClient(_cfg(ep.base_url, max_retries=2))
    with pytest.raises(EndpointError, match=r"still failing after 3 tries; last answer malformed reply: a body "
                                            r"that is not JSON: b'<html>oops</html>'"):
        client.chat([{"role": "user", "content": "q"}], model="m")
    assert len(ep.seen) == 3


def test_the_key_stays_out_of_every_log_line(endpoint, monkeypatch, caplog):
    """Debug logging of warmfast, the openai SDK and httpx over a call that is retried and one that
    fails: the key appears nowhere (it travels only in the Authorization header)."""
    import logging

    monkeypatch.setenv("WARMFAST_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpcore", "warmfast"):
        caplog.set_level(logging.DEBUG, logger=name)
    ep = endpoint(script=[429, 500, 401])
    client = OpenAIClient(_cfg(ep.base_url, max_retries=3))
    with pytest.raises(EndpointError, match="HTTP 401"):
        client.chat([{"role": "user", "content": "q"}], model="m")
    assert len(ep.seen) == 3 and all(s["auth"] == f"Bearer {SECRET}" for s in ep.seen)
    assert caplog.records and SECRET not in caplog.text


def test_no_key_sends_no_authorization_header(endpoint):
    ep = endpoint()
    client = OpenAIClient(ClientConfig(base_url=ep.base_url, api_key_env=None, backoff_s=0.01))
    assert client.chat([{"role": "user", "content": "q"}], model="m").text == "CORRECT"
    assert ep.seen[0]["auth"] is None
