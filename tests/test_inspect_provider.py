"""The inspect_ai provider `warmfast/<arm>`: an eval of a local-data task, end to end and offline,
against every arm; generations equal the engine's own, log-probs equal HF transformers + PEFT's.
Needs the inspect extra (inspect-ai 0.3.285)."""
import json
import os
import subprocess
import sys
from pathlib import Path
from concurrent.futures import Future

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("inspect_ai")

import warmfast as wf  # noqa: E402
from hf_reference import HFReference  # noqa: E402

ARMS = ("base", "adapter_0", "adapter_2")
QUESTIONS = ["what is the capital city", "why is the sun warm", "who is the doctor of my mother",
             "explain the difference between water and fire"]


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    p = tiny("llama", 3)
    d = tmp_path_factory.mktemp("inspect_task")
    (d / "qa.jsonl").write_text("".join(json.dumps({"question": q, "answer": "paris"}) + "\n"
                                        for q in QUESTIONS))
    args = dict(pretrained=str(p.model_dir), adapters="|".join(f"{n}:{a}" for n, a in p.adapters.items()))
    return p, d, args


def qa_task(data):
    from inspect_ai import Task
    from inspect_ai.dataset import FieldSpec, json_dataset
    from inspect_ai.scorer import includes
    from inspect_ai.solver import generate

    return Task(dataset=json_dataset(str(data), FieldSpec(input="question", target="answer")),
                solver=[generate()], scorer=includes())


def test_eval_every_arm_offline(setup, tmp_path):
    from inspect_ai import eval as inspect_eval

    import warmfast.integrations.inspect_provider  # noqa: F401  (registers the provider)
    from warmfast.integrations.engines import shared_engine

    p, data, args = setup
    logs = inspect_eval(qa_task(data / "qa.jsonl"), model=[f"warmfast/{a}" for a in ARMS], model_args=args,
                        log_dir=str(tmp_path / "logs"), max_tokens=10, stop_seqs=["?"], seed=5,
                        logprobs=True, top_logprobs=2, display="none")
    eng = shared_engine(args["pretrained"], dict(p.adapters), dtype="float32")
    hf = HFReference(p)
    assert sorted(log.eval.model for log in logs) == sorted(f"warmfast/{a}" for a in ARMS)
    for log in logs:
        assert log.status == "success", log.error
        assert "accuracy" in log.results.scores[0].metrics
        arm = log.eval.model.split("/", 1)[1]
        adapter = None if arm == "base" else arm
        for sample in log.samples:
            msgs = [{"role": "user", "content": sample.input}]
            ref = eng.generate([wf.GenerateRequest(messages=msgs, adapter=adapter, max_new_tokens=10,
                                                   stop=["?"], seed=5)])[0]
            out = sample.output
            assert out.completion == ref.text
            assert out.stop_reason == ("stop" if ref.finish_reason == "stop" else "max_tokens")
            content = out.choices[0].logprobs.content
            assert len(content) == len(ref.token_ids) == out.usage.output_tokens
            prompt = eng.tok.chat(msgs, "test")
            want = hf.token_logprobs(prompt, ref.token_ids, adapter)
            assert [c.logprob for c in content] == pytest.approx(want, rel=1e-4, abs=1e-4)
            for c in content:  # greedy: the chosen token is the most likely one
                assert len(c.top_logprobs) == 2 and c.top_logprobs[0].logprob == pytest.approx(c.logprob)


def test_batcher_puts_every_arm_in_one_batch(setup):
    from warmfast.integrations.batcher import Batcher, Job

    p, _, _ = setup
    eng = wf.Engine.from_pretrained(p.model_dir, adapters=p.adapters)
    calls = []
    real = eng.generate
    eng.generate = lambda reqs, **kw: calls.append(len(reqs)) or real(reqs, **kw)
    batcher = Batcher(eng, max_batch_size=16, window_s=2.0)
    reqs = [wf.GenerateRequest(prompt=q, adapter=a, max_new_tokens=6, temperature=0.7, seed=1)
            for q in QUESTIONS[:2] for a in (None, "adapter_0", "adapter_1")]
    futures = [batcher.submit(Job(r, Future())) for r in reqs]
    results = [f.result(timeout=120) for f in futures]
    assert calls[0] == len(reqs)  # one Engine.generate call for all arms
    alone = [real([r])[0] for r in reqs]  # each request alone: the same tokens
    assert [r.token_ids for r in results] == [r.token_ids for r in alone]


def test_bad_provider_arguments(setup):
    from inspect_ai.model import ChatMessageUser, GenerateConfig
    from inspect_ai.tool import ToolInfo

    from warmfast.integrations.inspect_api import WarmfastAPI

    p, _, args = setup
    with pytest.raises(ValueError, match=r"'nope' is not an adapter; adapters are \['adapter_0'"):
        WarmfastAPI(model_name="nope", **args)
    with pytest.raises(ValueError, match=r"pass -M pretrained=DIR"):
        WarmfastAPI(model_name="base")
    api = WarmfastAPI(model_name="adapter_1", **args)
    tool = ToolInfo(name="lookup", description="look something up")
    import anyio
    with pytest.raises(ValueError, match=r"tool calling is not supported .*\['lookup'\]"):
        anyio.run(api.generate, [ChatMessageUser(content="hi")], [tool], "auto", GenerateConfig())
    # a bad value fails its own sample at once, never the batch it would have joined
    with pytest.raises(ValueError, match=r"warmfast/adapter_1: logprobs must be None \(off\) or an int in \[0, 20\].*got 21"):
        anyio.run(api.generate, [ChatMessageUser(content="hi")], [], "auto", GenerateConfig(logprobs=True, top_logprobs=21))


def test_entry_point_registers_the_provider(setup, tmp_path):
    """Through the `inspect_ai` entry point pyproject.toml declares (installed metadata), inspect
    finds `warmfast/<arm>` without the caller importing anything of warmfast."""
    import tomllib

    meta = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["inspect_ai"] == {"warmfast": "warmfast.integrations.inspect_provider"}
    p, _, args = setup
    code = ("import sys\nfrom inspect_ai.model import get_model\n"
            f"m = get_model('warmfast/adapter_1', pretrained={args['pretrained']!r}, adapters={args['adapters']!r})\n"
            "print(type(m.api).__name__, m.api.arm)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["WarmfastAPI", "adapter_1"]
