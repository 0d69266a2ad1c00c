"""`warmfast serve` in a subprocess, driven by the official `openai` SDK and plain HTTP: answers equal
the library's (Engine.generate / Engine.score) for the base model and each adapter (LoRA B
non-zero), concurrent streaming clients over several adapters share batches and each gets what it
gets alone, errors come in OpenAI's shape and map to the SDK's exception types."""
import json
import threading
import time

import httpx
import openai
import pytest

import warmfast as wf
from serve_process import ServerProcess

KEY = "sk-serve-test-0123456789"
MODELS = ["tiny", "a0", "a1", "a2"]  # the base model's served name, then the adapters


def _adapter(model: str):
    return None if model == "tiny" else model


@pytest.fixture(scope="module")
def setup(tiny):
    p = tiny("llama", n_adapters=3)
    adapters = {f"a{i}": p.adapters[f"adapter_{i}"] for i in range(3)}
    server = ServerProcess(p.model_dir, adapters, "--max-batch-size", "32", api_key=KEY)
    eng = wf.Engine.from_pretrained(p.model_dir, adapters=adapters)
    yield server, eng
    server.stop()


@pytest.mark.parametrize("model", MODELS)
def test_greedy_completion_equals_the_library(setup, model):
    server, eng = setup
    client = server.client(max_retries=0)
    lib = eng.generate([wf.GenerateRequest(prompt="the cat sat on", adapter=_adapter(model), max_new_tokens=12)])[0]
    r = client.completions.create(model=model, prompt="the cat sat on", max_tokens=12, temperature=0)
    assert r.choices[0].text == lib.text and r.choices[0].finish_reason == lib.finish_reason
    assert r.usage.completion_tokens == len(lib.token_ids)
    # token-id prompts are used as given (no BOS added)
    ids = list(eng.tok.encode_plain("a quiet house"))
    lib = eng.generate([wf.GenerateRequest(prompt=ids, adapter=_adapter(model), max_new_tokens=6)])[0]
    r = client.completions.create(model=model, prompt=ids, max_tokens=6, temperature=0)
    assert r.choices[0].text == lib.text and r.usage.prompt_tokens == len(ids)


@pytest.mark.parametrize("model", MODELS)
def test_echo_logprobs_score_like_the_library(setup, model):
    """lm-eval's log-likelihood request: prompt token ids, echo, max_tokens 1, logprobs 1; it sums
    token_logprobs[ctxlen:-1] and calls a token greedy when it equals the max of its top dict."""
    server, eng = setup
    tok = eng.tok
    pairs = [("Question: where is the cat?\nAnswer:", " in the house"), ("one two", " three four five"),
             ("a", " b")]
    prompts, ctxlens = [], []
    for ctx, cont in pairs:
        c = list(tok.encode_context(ctx))
        prompts.append(c + list(tok.encode_plain(cont)))
        ctxlens.append(len(c))
    body = {"model": model, "prompt": prompts, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0,
            "seed": 1234}
    out = server.post("/v1/completions", body).json()
    lib = eng.score([wf.ScoreRequest(context=p[:n], continuation=p[n:], adapter=_adapter(model))
                     for p, n in zip(prompts, ctxlens)])
    for choice, p, n, want in zip(sorted(out["choices"], key=lambda c: c["index"]), prompts, ctxlens, lib):
        lp = choice["logprobs"]
        assert len(lp["token_logprobs"]) == len(p) + 1 and lp["token_logprobs"][0] is None
        assert lp["top_logprobs"][0] is None
        got = lp["token_logprobs"][n:-1]
        assert sum(got) == pytest.approx(want.logprob, abs=1e-4)
        assert got == pytest.approx(want.token_logprobs, abs=1e-5)
        greedy = all(t == max(top.values()) for t, top in zip(got, lp["top_logprobs"][n:-1]))
        assert greedy == want.is_greedy
        assert all(1 <= len(top) <= 2 for top in lp["top_logprobs"][1:])
    # max_tokens 0 with echo: the prompt alone
    out = server.post("/v1/completions", body | {"max_tokens": 0, "prompt": prompts[0]}).json()
    assert len(out["choices"][0]["logprobs"]["token_logprobs"]) == len(prompts[0])
    assert out["usage"]["completion_tokens"] == 0


def test_a_greedy_token_equals_its_top_entry_exactly(setup):
    """Prompt = the model's own greedy continuation: every echoed continuation token is greedy."""
    server, eng = setup
    ctx = list(eng.tok.encode_context("seven little birds"))
    gen = eng.generate([wf.GenerateRequest(prompt=ctx, adapter="a1", max_new_tokens=5)])[0].token_ids
    assert len(gen) == 5
    out = server.post("/v1/completions", {"model": "a1", "prompt": ctx + gen, "max_tokens": 1, "echo": True,
                                          "logprobs": 1, "temperature": 0}).json()
    lp = out["choices"][0]["logprobs"]
    for t, top in zip(lp["token_logprobs"][len(ctx):-1], lp["top_logprobs"][len(ctx):-1]):
        assert t == max(top.values())


@pytest.mark.parametrize("model", ["tiny", "a2"])
def test_chat_and_streaming_chat_equal_the_library(setup, model):
    server, eng = setup
    client = server.client(max_retries=0)
    msgs = [{"role": "user", "content": "what is the capital of london?"}]
    lib = eng.generate([wf.GenerateRequest(messages=msgs, adapter=_adapter(model), max_new_tokens=10,
                                           temperature=0.8, seed=7)])[0]
    r = client.chat.completions.create(model=model, messages=msgs, max_completion_tokens=10, temperature=0.8,
                                       seed=7)
    assert r.choices[0].message.content == lib.text and r.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(model=model, messages=msgs, max_tokens=10, temperature=0.8,
                                                 seed=7, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == lib.text
    assert chunks[-1].choices[0].finish_reason == lib.finish_reason
    r = client.chat.completions.create(model=model, messages=msgs, max_tokens=4, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) >= 1 and all(len(c.top_logprobs) == 3 for c in content)
    assert all(c.logprob <= c.top_logprobs[0].logprob + 1e-6 for c in content)


def test_models_list_names_base_and_adapters(setup):
    server, _ = setup
    models = {m.id: m for m in server.client().models.list()}
    assert set(models) == set(MODELS)
    assert all(models[a].model_extra["parent"] == "tiny" for a in MODELS[1:])
    assert models["tiny"].model_extra["parent"] is None


def test_errors_map_to_the_sdk_exceptions(setup):
    server, eng = setup
    client = server.client(max_retries=0)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="a0", prompt="x", max_tokens=2, temperature=-1)
    with pytest.raises(openai.BadRequestError, match="unknown field 'tempreature'"):
        client.completions.create(model="a0", prompt="x", max_tokens=2, extra_body={"tempreature": 0})
    with pytest.raises(openai.BadRequestError, match="maximum sequence length 512") as err:
        client.completions.create(model="a0", prompt="word " * 400, max_tokens=200)
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match=r"token ids must be .* in \[0, 512\)"):
        client.completions.create(model="a0", prompt=[1, 2, 10**6], max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    r = server.post("/v1/completions", b"{not json")  # never FastAPI's 422
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = server.post("/v1/completions", {"model": "a0", "prompt": "x", "max_tokens": 0})
    assert r.status_code == 400 and "echo" in r.json()["error"]["message"]
    r = server.post("/v1/load_lora_adapter", {"lora_name": "z", "lora_path": "/nowhere"})
    assert r.status_code == 404 and "--allow-adapter-updates" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/health").status_code == 200  # open without the key
    assert httpx.get(server.url + "/v1/models").status_code == 401


def test_concurrent_streaming_clients_each_get_what_they_get_alone(setup):
    """32 streaming clients over the base model and 3 adapters, sampled (each its own seed): every
    client's text equals the library's for that request alone, and the engine batched them."""
    server, eng = setup
    steps0, rows0 = server.metric("warmfast_engine_steps_total"), server.metric("warmfast_batch_rows_total")
    jobs = [(MODELS[i % 4], f"story number {i} begins", 100 + i, 8 + i % 5) for i in range(32)]
    got: dict[int, str] = {}
    errors = []

    def run(i, model, prompt, seed, n):
        try:
            client = server.client(max_retries=0)
            if i % 2:
                s = client.completions.create(model=model, prompt=prompt, max_tokens=n, temperature=0.9,
                                              seed=seed, stream=True)
                got[i] = "".join(c.choices[0].text for c in s if c.choices)
            else:
                s = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                   max_tokens=n, temperature=0.9, seed=seed, stream=True)
                got[i] = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
        except Exception as err:  # reported below with the client's number
            errors.append((i, err))

    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for i, (model, prompt, seed, n) in enumerate(jobs):
        kw = dict(prompt=prompt) if i % 2 else dict(messages=[{"role": "user", "content": prompt}])
        alone = eng.generate([wf.GenerateRequest(**kw, adapter=_adapter(model), max_new_tokens=n,
                                                 temperature=0.9, seed=seed)])[0]
        assert got[i] == alone.text, (i, model)
    steps = server.metric("warmfast_engine_steps_total") - steps0
    rows = server.metric("warmfast_batch_rows_total") - rows0
    assert rows > steps  # some step held several clients' rows


def test_n_choices_and_stop_strings(setup):
    server, eng = setup
    client = server.client(max_retries=0)
    lib = eng.generate([wf.GenerateRequest(prompt="the dog", adapter="a0", max_new_tokens=12)])[0]
    assert len(lib.text) > 4
    stop = lib.text[2:4]
    r = client.completions.create(model="a0", prompt="the dog", max_tokens=12, temperature=0, stop=[stop])
    assert r.choices[0].text == lib.text[:lib.text.index(stop)] and r.choices[0].finish_reason == "stop"
    r = client.completions.create(model="a0", prompt=["the dog", "a cat"], max_tokens=5, temperature=1.0,
                                  seed=3, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    first = eng.generate([wf.GenerateRequest(prompt="a cat", adapter="a0", max_new_tokens=5, temperature=1.0,
                                             seed=3)])[0]
    assert r.choices[2].text == first.text  # the first choice of a prompt draws what the library draws


def test_tokenizer_endpoints(setup):
    server, eng = setup
    info = server.get("/tokenizer_info").json()
    assert info["eos_token"] == eng.tok.hf.eos_token and info["bos_token"] == eng.tok.hf.bos_token
    r = server.post("/tokenize", {"prompt": "hello there", "add_special_tokens": False}).json()
    assert r["tokens"] == list(eng.tok.encode_plain("hello there"))
    r = server.post("/tokenize", {"prompt": "hello there"}).json()
    assert r["tokens"] == list(eng.tok.encode_context("hello there"))
    assert server.post("/detokenize", {"tokens": r["tokens"][1:]}).json() == {"prompt": "hello there"}


def test_client_disconnect_aborts_the_request(setup):
    server, eng = setup
    prompt = "on and on and on"
    n = 480
    lib = eng.generate([wf.GenerateRequest(prompt=prompt, adapter="a0", max_new_tokens=n)])[0]
    assert lib.finish_reason == "length"  # it would run all n tokens if nobody stopped it
    finished0 = server.metric("warmfast_engine_requests_finished_total")
    body = {"model": "a0", "prompt": prompt, "max_tokens": n, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["choices"][0]["finish_reason"] is None
    for _ in range(100):
        if server.metric("warmfast_requests_in_flight") == 0:
            break
        threading.Event().wait(0.1)
    assert server.metric("warmfast_requests_in_flight") == 0
    assert server.metric("warmfast_engine_requests_finished_total") == finished0  # aborted, not finished
    assert server.metric("warmfast_running_sequences") == 0
    # a plain (not streamed) request whose client gives up waiting; 16 samples of 480 tokens keep
    # the engine busy well past the client's timeout even on a fast machine (one finished early
    # under CI load with a single sample)
    with pytest.raises(httpx.ReadTimeout):
        server.post("/v1/completions", body | {"stream": False, "n": 16}, timeout=0.3)
    _wait_for(lambda: server.metric("warmfast_requests_in_flight") == 0)
    assert server.metric("warmfast_engine_requests_finished_total") == finished0


def _wait_for(cond, timeout_s: float = 20.0) -> None:
    t0 = time.monotonic()
    while not cond() and time.monotonic() - t0 < timeout_s:
        time.sleep(0.1)
    assert cond()
