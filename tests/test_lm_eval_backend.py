"""The lm-eval backend `warmfast` against lm-eval's own `hf` backend (HFLM, `peft=` per adapter).

Tiny random Llama + random PEFT adapters (non-zero B), fp32, offline tasks from local JSONL:
per-request log-likelihoods within 1e-4, identical is_greedy, identical greedy generations,
identical discrete metrics (acc, acc_norm, exact_match) and perplexities equal to the rounding
of those log-likelihoods. Needs the lm-eval extra (lm-eval 0.4.13).
"""
import glob
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
lm_eval = pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

import warmfast.integrations.lm_eval_backend  # noqa: E402,F401  (registers the "warmfast" model)

from lm_eval_tasks import TASKS, write_tasks  # noqa: E402

MAX_LEN = 48
ARMS = ("base", "adapter_2")  # compared with `hf` one by one (all four run in one pass)


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    p = tiny("llama", 3)
    tasks = write_tasks(tmp_path_factory.mktemp("lm_eval_tasks"))
    adapters = "|".join(f"{n}:{d}" for n, d in p.adapters.items())
    return p, tasks, adapters


def hf_args(p, arm):
    args = dict(pretrained=str(p.model_dir), max_length=MAX_LEN, dtype="float32")
    if arm != "base":
        args["peft"] = str(p.adapters[arm])
    return args


def evaluate(model, model_args, tasks, task_names=TASKS, **kw):
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(tasks), include_defaults=False)
    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=list(task_names),
                                   task_manager=tm, device="cpu", batch_size=1, log_samples=True, **kw)


def responses(samples: list[dict]) -> dict[int, list]:
    """doc_id -> that doc's responses as (float, bool) / float / str (files hold strings)."""
    def typed(r):
        if isinstance(r, (list, tuple)) and len(r) == 2:
            return float(r[0]), r[1] in (True, "True")
        try:
            return float(r)
        except (TypeError, ValueError):
            return r
    return {s["doc_id"]: [typed(r[0]) for r in s["resps"]] for s in samples}


def assert_same(hf: dict, wf: dict) -> None:
    """hf, wf: task -> (doc_id -> responses), and task -> metrics."""
    (hf_resps, hf_metrics), (wf_resps, wf_metrics) = hf, wf
    for task in hf_resps:
        assert hf_resps[task].keys() == wf_resps[task].keys()
        for doc, a in hf_resps[task].items():
            b = wf_resps[task][doc]
            for x, y in zip(a, b, strict=True):
                if isinstance(x, tuple):  # loglikelihood: (logprob, is_greedy)
                    assert y[0] == pytest.approx(x[0], rel=1e-4, abs=1e-4), (task, doc)
                    assert y[1] == x[1], (task, doc, "is_greedy")
                elif isinstance(x, float):  # rolling log-likelihood (a sum over windows)
                    assert y == pytest.approx(x, rel=1e-4, abs=1e-4), (task, doc)
                else:  # generated text
                    assert y == x, (task, doc)
        for name, value in hf_metrics[task].items():
            if name.endswith("perplexity,none") or name.startswith("bits_per_byte,"):
                assert wf_metrics[task][name] == pytest.approx(value, rel=1e-5), (task, name)
            elif isinstance(value, str):  # an alias, or a stderr lm-eval could not compute ("N/A")
                assert wf_metrics[task][name] == value, (task, name)
            else:
                assert wf_metrics[task][name] == pytest.approx(value, rel=1e-9), (task, name)


def skip_builtin_task_index(monkeypatch):
    """lm-eval's command indexes its ~10k built-in task YAMLs (~25 s here) before every run; these
    tests use only --include_path tasks, so the command's TaskManager skips the built-in ones."""
    from lm_eval.tasks import TaskManager

    init = TaskManager.__init__

    def local_only(self, *args, include_defaults=True, **kwargs):
        init(self, *args, include_defaults=False, **kwargs)
    monkeypatch.setattr(TaskManager, "__init__", local_only)


def from_run(result) -> tuple[dict, dict]:
    return ({t: responses(result["samples"][t]) for t in result["samples"]}, result["results"])


def test_all_arms_in_one_pass_match_hf_per_adapter(setup, tmp_path, monkeypatch):
    """`warmfast lm-eval ... arm=all` == one `hf` run per arm, and the model runs once for all."""
    from lm_eval.loggers.evaluation_tracker import GeneralConfigTracker

    from warmfast.integrations import engines, lm_eval_cli

    p, tasks, adapters = setup
    calls = {"score": 0, "generate": 0}
    real_engine = engines.shared_engine

    def spying_engine(*a, **k):
        eng = real_engine(*a, **k)
        for name in calls:
            if not hasattr(eng, f"_spied_{name}"):
                fn = getattr(eng, name)

                def spy(*args, _fn=fn, _name=name, **kwargs):
                    calls[_name] += 1
                    return _fn(*args, **kwargs)
                setattr(eng, name, spy)
                setattr(eng, f"_spied_{name}", True)
        return eng
    monkeypatch.setattr("warmfast.integrations.lm_eval_backend.shared_engine", spying_engine)
    skip_builtin_task_index(monkeypatch)
    out = tmp_path / "out"
    lm_eval_cli.run_lm_eval([
        "--model", "warmfast", "--model_args",
        f"pretrained={p.model_dir},adapters={adapters},arm=all,max_length={MAX_LEN}",
        "--device", "cpu", "--tasks", *TASKS, "--include_path", str(tasks),
        "--output_path", str(out), "--log_samples"])
    engines.release_engines()
    assert calls == {"score": 2, "generate": 1}  # loglikelihood, rolling, generate: once for 4 arms

    by_arm = {}
    for path in glob.glob(str(out / "*" / "results_*.json")):
        res = json.loads(open(path).read())
        folder = os.path.dirname(path)
        samples = {t: [json.loads(line) for line in open(glob.glob(f"{folder}/samples_{t}_*.jsonl")[0])]
                   for t in TASKS}
        by_arm[res["config"]["model_args"]["arm"]] = (
            {t: responses(s) for t, s in samples.items()}, res["results"], res["model_name"])
    assert sorted(by_arm) == sorted(["base", *p.adapters])
    for arm in ARMS:
        hf = evaluate("hf", hf_args(p, arm), tasks)
        resps, metrics, model_name = by_arm[arm]
        assert model_name == GeneralConfigTracker._get_model_name(hf_args(p, arm))  # as `hf` names it
        assert_same(from_run(hf), (resps, metrics))


def test_chat_template_matches_hf(setup):
    p, tasks, adapters = setup
    wf_args = dict(pretrained=str(p.model_dir), adapters=adapters, arm="adapter_1", max_length=MAX_LEN)
    hf = evaluate("hf", hf_args(p, "adapter_1"), tasks, ("wf_mc", "wf_gen"), apply_chat_template=True)
    wf = evaluate("warmfast", wf_args, tasks, ("wf_mc", "wf_gen"), apply_chat_template=True)
    assert "<|user|>" in hf["samples"]["wf_mc"][0]["arguments"][0][0]  # the template was applied
    assert_same(from_run(hf), from_run(wf))


def instances(kind, args):
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i, metadata=("t", i, 1))
            for i, a in enumerate(args)]


def greedy_text(wf, ctx: str, adapter) -> str:
    """The longest greedy continuation (<= 4 tokens) of ctx that re-tokenizes to the same ids in
    lm-eval's split (enc(ctx + cont)[len(enc(ctx)):]), so its is_greedy must be True."""
    import warmfast

    ctx_ids = wf.tok_encode(ctx)
    out = wf.engine.generate([warmfast.GenerateRequest(prompt=ctx_ids, adapter=adapter, max_new_tokens=4)])[0]
    for k in range(len(out.token_ids), 0, -1):
        text = wf.tok_decode(out.token_ids[:k])
        if wf.tok_encode(ctx + text)[len(ctx_ids):] == out.token_ids[:k]:
            return text
    raise AssertionError(f"no greedy continuation of {ctx!r} survives re-tokenization: {out.token_ids}")


@pytest.mark.parametrize("arm", ["base", "adapter_1"])
def test_request_edge_cases_match_hf(setup, arm):
    """Empty context (prefix token), trailing context whitespace, a context past max_length, a
    greedy continuation (is_greedy True), text that starts with the BOS text, a text of several
    rolling windows, a prompt that is left-truncated for generation, stop strings."""
    from lm_eval.models.huggingface import HFLM

    from warmfast.integrations.lm_eval_backend import WarmfastLM

    p, _, adapters = setup
    hf = HFLM(**hf_args(p, arm), device="cpu", batch_size=2)
    wf = WarmfastLM(pretrained=str(p.model_dir), adapters=adapters, arm=arm, max_length=MAX_LEN,
                    device="cpu", batch_size="auto")
    ctx = "Question: what is the capital city of the country\nAnswer:"
    greedy = greedy_text(wf, ctx, None if arm == "base" else arm)
    long_ctx = " ".join(["the heart of the river"] * 20)
    ll = [("", "Hello there friend."), ("The answer is ", "yes"), (ctx, greedy), (long_ctx, " mountain"),
          (ctx, " paris"), (ctx, " paris london"), ("<s>Hello", " friend")]  # BOS text: no second BOS
    a = hf.loglikelihood(instances("loglikelihood", ll))
    b = wf.loglikelihood(instances("loglikelihood", ll))
    assert [g for _, g in b] == [g for _, g in a]
    assert b[2][1], "the engine's own greedy continuation must be greedy"
    assert [x for x, _ in b] == pytest.approx([x for x, _ in a], rel=1e-4, abs=1e-4)

    texts = [(" ".join(["warm cold kind empathy sad happy"] * 25),), ("One short line.",)]
    assert len(wf.tok_encode(texts[0][0])) > 2 * MAX_LEN  # several windows, the first max_length+1
    roll_a = hf.loglikelihood_rolling(instances("loglikelihood_rolling", texts))
    roll_b = wf.loglikelihood_rolling(instances("loglikelihood_rolling", texts))
    assert roll_b == pytest.approx(roll_a, rel=1e-4, abs=1e-4)

    gen = [(long_ctx + "\nA:", {"until": ["."], "max_gen_toks": 10, "do_sample": False}),
           (ctx, {"until": ["o", "e"], "max_gen_toks": 6}), ("<s>Q: why\nA:", {"max_gen_toks": 5})]
    assert wf.generate_until(instances("generate_until", gen)) == hf.generate_until(instances("generate_until", gen))


def test_lm_interface(setup, tmp_path):
    """What lm-eval needs of a new LM class (0.4.13 ships no test utilities for it): registered
    under its name, built from a model_args string with the CLI's batch_size / max_batch_size /
    device keywords, answers of the documented types in request order, and works under
    lm-eval's response cache (CachingLM)."""
    from lm_eval.api.model import LM, CachingLM
    from lm_eval.api.registry import get_model

    from warmfast.integrations.lm_eval_backend import WarmfastLM

    p, _, adapters = setup
    cls = get_model("warmfast")
    assert cls is WarmfastLM and issubclass(cls, LM)
    lm = cls.create_from_arg_string(f"pretrained={p.model_dir},adapters={adapters},arm=adapter_2",
                                    {"batch_size": "auto:4", "max_batch_size": 8, "device": "cpu"})
    assert lm.gen_batch_size == 8 and lm.arm == "adapter_2"
    reqs = instances("loglikelihood", [("A cat", " sat"), ("A dog", " ran far")])
    out = lm.loglikelihood(reqs)
    assert all(isinstance(x, float) and isinstance(g, bool) for x, g in out)
    assert out == lm.loglikelihood(reqs[::-1])[::-1]
    cached = CachingLM(lm, str(tmp_path / "cache.db"))
    first = cached.loglikelihood(reqs)
    second = cached.loglikelihood(reqs)  # from the cache
    assert first == second == out
    roll = lm.loglikelihood_rolling(instances("loglikelihood_rolling", [("A cat sat.",)]))
    gen = lm.generate_until(instances("generate_until", [("A cat", {"max_gen_toks": 3})]))
    assert isinstance(roll[0], float) and isinstance(gen[0], str)


def test_bad_arguments(setup):
    from warmfast.integrations.lm_eval_backend import WarmfastLM

    p, _, adapters = setup
    base = dict(pretrained=str(p.model_dir), adapters=adapters, device="cpu")
    with pytest.raises(ValueError, match=r"arm=all .* use `warmfast lm-eval"):
        WarmfastLM(**base, arm="all")
    with pytest.raises(ValueError, match=r"arm='nope' is not an adapter; adapters are \['adapter_0'"):
        WarmfastLM(**base, arm="nope")
    with pytest.raises(ValueError, match=r"adapters expects NAME:DIR entries .* got 'broken'"):
        WarmfastLM(pretrained=str(p.model_dir), adapters="broken", device="cpu")
    with pytest.raises(ValueError, match=r"arm='adapter_0' but peft=.*adapter_1 is adapter 'adapter_1'"):
        WarmfastLM(**base, arm="adapter_0", peft=str(p.adapters["adapter_1"]))
    lm = WarmfastLM(**base, arm="base")
    with pytest.raises(ValueError, match=r"generation kwargs \['repetition_penalty'\] are not supported"):
        lm.generate_until(instances("generate_until", [("Hi", {"repetition_penalty": 1.1})]))
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device 'cuda:0' but CUDA is not available .* --device cpu"):
            WarmfastLM(**{**base, "device": "cuda:0"})


def test_entry_point_declared_for_lm_eval_models():
    """pyproject.toml declares the `lm_eval.models` entry point, the installed metadata carries
    it, and it resolves to the backend class (lm-eval versions that read the group load it so)."""
    import importlib.metadata as md
    import tomllib

    meta = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    declared = meta["project"]["entry-points"]["lm_eval.models"]
    assert declared == {"warmfast": "warmfast.integrations.lm_eval_backend:WarmfastLM"}
    eps = [ep for ep in md.entry_points(group="lm_eval.models") if ep.name == "warmfast"]
    assert len(eps) == 1, f"installed metadata has {eps}: reinstall warmfast (pip install -e .)"
    from warmfast.integrations.lm_eval_backend import WarmfastLM
    assert eps[0].load() is WarmfastLM


def test_sampled_repeats_draw_distinct_streams(setup):
    """lm-eval's `repeats` send one prompt several times: with sampling each copy draws its own
    stream (not one sample repeated), and a rerun reproduces them."""
    from warmfast.integrations.lm_eval_backend import WarmfastLM

    p, _, adapters = setup
    lm = WarmfastLM(pretrained=str(p.model_dir), adapters=adapters, arm="adapter_0", device="cpu")
    kw = {"do_sample": True, "temperature": 1.0, "max_gen_toks": 8, "until": ["\n\n"], "seed": 3}
    reqs = instances("generate_until", [("Tell me a story", kw)] * 3)
    first = lm.generate_until(reqs)
    assert len(set(first)) == 3
    assert lm.generate_until(reqs) == first


def test_tensor_parallel_model_arg_equals_one_rank(setup):
    """model_args tensor_parallel=2: the backend's engine splits the model over 2 ranks (one worker
    process) and answers what one rank answers."""
    from warmfast.integrations.engines import release_engines
    from warmfast.integrations.lm_eval_backend import WarmfastLM

    p, _, adapters = setup
    ctx = "Question: what is the capital city of the country\nAnswer:"
    ll = [(ctx, " paris"), ("The answer is ", "yes"), ("", "Hello there friend.")]
    gen = [(ctx, {"until": ["."], "max_gen_toks": 6})]
    got = {}
    try:
        for n in (1, 2):
            lm = WarmfastLM(pretrained=str(p.model_dir), adapters=adapters, arm="adapter_2", max_length=MAX_LEN,
                            device="cpu", tensor_parallel=str(n))  # model_args arrive as strings
            assert (lm.engine.tp is None) == (n == 1)
            got[n] = (lm.loglikelihood(instances("loglikelihood", ll)), lm.generate_until(instances("generate_until", gen)))
    finally:
        release_engines()  # closes the 2-rank engine: its worker stops
    assert [g for _, g in got[2][0]] == [g for _, g in got[1][0]]
    assert [x for x, _ in got[2][0]] == pytest.approx([x for x, _ in got[1][0]], rel=1e-5, abs=1e-5)
    assert got[2][1] == got[1][1]
