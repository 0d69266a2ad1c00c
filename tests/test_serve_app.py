"""The HTTP app (serve/app.py) in process over a stub engine loop (no model): 503 with Retry-After
while loading and while draining, and an engine failure in the middle of a stream reaching the
openai SDK as its APIError (a `data: {"error": ...}` event)."""
import openai
import pytest
from fastapi.testclient import TestClient

from warmfast.engine.requests import RequestOutput
from warmfast.engine.tokens import TokenizerCache
from warmfast.serve.app import ServeSettings, Server, create_app
from warmfast.serve.loop import Job, Stats


class StubEngine:
    def __init__(self, model_dir):
        self.tok = TokenizerCache(model_dir)
        self.adapter_names = ["a0"]
        self.max_seq_len = 512


class StubLoop:
    """Accepts every job; its first request yields one token, then the engine 'fails'."""

    def __init__(self, engine, state):
        self.engine, self.state, self.failure = engine, state, None
        self.in_flight, self.stats, self.core = 0, Stats(), None
        self.aborted = []

    def submit(self, requests, aloop):
        job = Job(aloop, requests)
        for item in (("added", None), (0, RequestOutput(0, [5], "hi", None)), ("error", RuntimeError("boom"))):
            aloop.call_soon(job.events.put_nowait, item)
        return job

    def abort(self, job):
        self.aborted.append(job)


@pytest.fixture
def app_for(tiny):
    model_dir = tiny("llama", n_adapters=3).model_dir

    def make(state="ready", draining=False):
        loop = StubLoop(StubEngine(model_dir), state)
        server = Server(loop, ServeSettings("tiny"))
        server.draining = draining
        return TestClient(create_app(server)), loop

    return make


def test_503_with_retry_after_while_loading_and_while_draining(app_for):
    for state, draining, words in (("loading", False, "still loading"), ("ready", True, "draining")):
        client, _ = app_for(state, draining)
        h = client.get("/health")
        assert h.status_code == 503 and "Retry-After" in h.headers
        r = client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2})
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert words in r.json()["error"]["message"] and r.json()["error"]["type"] == "service_unavailable"
    client, _ = app_for("ready")
    assert client.get("/health").status_code == 200


def test_an_engine_failure_mid_stream_is_the_sdks_api_error(app_for):
    http, loop = app_for("ready")
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=http, max_retries=0)
    stream = sdk.completions.create(model="a0", prompt=[1, 2, 3], max_tokens=4, stream=True)
    with pytest.raises(openai.APIError, match="boom"):
        for _ in stream:
            pass
