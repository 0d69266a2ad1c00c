"""Live adapters: load_adapter / unload_adapter into a capacity fixed at start.

An adapter loaded live (zero-padded to the capacity's rank, into a reused slot) scores and
generates exactly what an engine given it at start does, and what HF transformers + PEFT do;
unloading frees its slot; past the capacity, or while requests hold it, one clear error.
Tiny models, fp32, CPU; the tiny adapters have non-zero B and ranks 8, 4, 16, 12 on different
projections (model/tiny.py ADAPTER_PRESETS).
"""
import json

import pytest
import torch

import warmfast as wf
from hf_reference import HFReference
from warmfast.errors import MissingPathError, UnknownAdapterError
from warmfast.model.adapter_slots import AdapterCapacityError, AdapterInUseError
from warmfast.model.adapters import AdapterError

TEXTS = [("The capital of France is", " Paris, the city of light."),
         ("I feel sad today. Which river runs through London?", " The Thames."),
         ("Explain the difference between a poem and a story", " A poem has lines.")]
PROMPTS = ["The capital of France is", "My brother, 21, comes to the physician with"]


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


@pytest.fixture(scope="module")
def paths(tiny):
    return tiny("llama", 4)


@pytest.fixture(scope="module")
def hf(paths):
    return HFReference(paths)


@pytest.fixture(scope="module")
def reference(paths):
    """Every adapter given at start, at the capacity the live engines use (rank 16)."""
    return wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, max_lora_rank=16)


def score_reqs(arms):
    return [wf.ScoreRequest(c, x, a) for c, x in TEXTS for a in [None, *arms]]


def gen_reqs(arms):
    return [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=8) for p in PROMPTS for a in [None, *arms]]


def logprobs(eng, arms):
    return [r.logprob for r in eng.score(score_reqs(arms))]


def test_live_loaded_adapters_equal_loaded_at_start_and_hf_peft(paths, hf, reference):
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters={"adapter_0": paths.adapters["adapter_0"]},
                                    max_adapters=3, max_lora_rank=16)
    assert eng.adapter_names == ["adapter_0"]
    # rank 4 and 12, both zero-padded to 16; adapter_1 targets only q and v, adapter_3 k and up
    assert eng.load_adapter("adapter_1", paths.adapters["adapter_1"]) == 1
    assert eng.load_adapter("adapter_3", paths.adapters["adapter_3"]) == 2
    arms = ["adapter_3", "adapter_0", "adapter_1"]
    live = eng.score(score_reqs(arms))
    # same capacity, adapters given at start (other slots): exactly the same numbers
    assert [r.logprob for r in live] == logprobs(reference, arms)
    # the capacity each engine picks by default (rank 12 here): padding changes nothing beyond fp32 rounding
    exact = wf.Engine.from_pretrained(paths.model_dir, adapters={a: paths.adapters[a] for a in arms})
    assert exact.adapter_slots.capacity.max_rank == 12
    for a, b in zip(live, exact.score(score_reqs(arms))):
        assert rel(a.logprob, b.logprob) < 1e-5 and a.is_greedy == b.is_greedy
    for req, res in zip(score_reqs(arms), live):
        ref = hf.token_logprobs(req.context, req.continuation, req.adapter)
        assert rel(res.logprob, sum(ref)) < 1e-4, req
    assert len({round(r.logprob, 4) for r in live}) == len(live)  # every adapter moves the scores
    # greedy generation of a mixed batch: the same tokens as the engine given them at start and as HF
    gens = eng.generate(gen_reqs(arms))
    assert [g.token_ids for g in gens] == [g.token_ids for g in reference.generate(gen_reqs(arms))]
    for req, g in zip(gen_reqs(arms), gens):
        ref = hf.greedy(list(eng.tok.encode_context(req.prompt)), req.adapter, req.max_new_tokens)
        cut = next((i for i, t in enumerate(ref) if t in eng.tok.eos_ids), len(ref))
        assert g.token_ids == ref[:cut]


def test_load_unload_reload_cycles_reuse_slots(paths, reference):
    eng = wf.Engine.from_pretrained(paths.model_dir, max_adapters=2, max_lora_rank=16)
    assert eng.adapter_names == [] and logprobs(eng, []) == logprobs(reference, [])
    cycle = [("load", "adapter_2", 0), ("load", "adapter_1", 1), ("unload", "adapter_2", 0),
             ("load", "adapter_0", 0), ("unload", "adapter_1", 1), ("load", "adapter_3", 1),
             ("unload", "adapter_0", 0), ("load", "adapter_2", 0), ("unload", "adapter_3", 1),
             ("load", "adapter_3", 1)]
    held = {}  # slot -> adapter name, as the cycle should leave it
    for op, name, slot in cycle:
        if op == "load":
            assert eng.load_adapter(name, paths.adapters[name]) == slot  # the lowest free slot
            held[slot] = name
        else:
            eng.unload_adapter(name)
            del held[slot]
            for stack in (s for layer in eng.model.lora for s in layer.values()):
                assert not stack.A[slot].any() and not stack.B[slot].any()  # a freed slot adds nothing
            with pytest.raises(UnknownAdapterError, match=name):
                eng.score([wf.ScoreRequest("a", " b", name)])
        arms = eng.adapter_names
        assert arms == [held[s] for s in sorted(held)]
        assert logprobs(eng, arms) == logprobs(reference, arms), (op, name)
    assert eng.adapter_names == ["adapter_2", "adapter_3"]
    # sampled mixed generation over the reused slots: the same tokens as the engine given them at start
    sampled = [wf.GenerateRequest(prompt=p, adapter=a, max_new_tokens=6, temperature=0.9, top_k=40, seed=i)
               for i, (p, a) in enumerate((p, a) for p in PROMPTS for a in [None, "adapter_3", "adapter_2"])]
    assert [g.token_ids for g in eng.generate(sampled)] == [g.token_ids for g in reference.generate(sampled)]


@pytest.mark.parametrize("seed", [0, 1])
def test_random_load_unload_sequences(paths, reference, seed):
    # seeded random walks over 3 slots and 4 adapters: loads into free slots, unloads, loads past the
    # capacity (refused, nothing changes); after every step each loaded adapter scores exactly as
    # in the engine given every adapter at start
    import random

    rng = random.Random(seed)
    eng = wf.Engine.from_pretrained(paths.model_dir, max_adapters=3, max_lora_rank=16)
    names, seen = list(paths.adapters), set()
    for _ in range(25):
        loaded = eng.adapter_names
        free = [n for n in names if n not in loaded]
        if loaded and rng.random() < 0.4:
            eng.unload_adapter(rng.choice(loaded))
            seen.add("unload")
        elif len(loaded) == 3:
            with pytest.raises(AdapterCapacityError, match="all 3 adapter slots are taken"):
                eng.load_adapter(free[0], paths.adapters[free[0]])
            assert eng.adapter_names == loaded
            seen.add("refused")
        else:
            name, lowest_free = rng.choice(free), eng.adapter_slots.names.index(None)
            assert eng.load_adapter(name, paths.adapters[name]) == lowest_free
            seen.add("load")
        arms = eng.adapter_names
        assert eng.adapter_slots.holders == [0, 0, 0]
        assert logprobs(eng, arms) == logprobs(reference, arms), arms
    assert seen == {"load", "unload", "refused"}


def test_live_loads_in_bfloat16_equal_loaded_at_start(paths):
    kw = dict(dtype="bfloat16", max_lora_rank=16)
    eng = wf.Engine.from_pretrained(paths.model_dir, max_adapters=2, **kw)
    eng.load_adapter("adapter_1", paths.adapters["adapter_1"])
    eng.load_adapter("adapter_2", paths.adapters["adapter_2"])
    at_start = wf.Engine.from_pretrained(paths.model_dir, adapters={a: paths.adapters[a] for a in ("adapter_1", "adapter_2")}, **kw)
    assert eng.model.lora[0]["qkv"].A.dtype == torch.bfloat16
    arms = ["adapter_1", "adapter_2"]
    assert logprobs(eng, arms) == logprobs(at_start, arms)


def test_capacity_errors_name_the_adapter_and_the_capacity(paths, reference):
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters={"adapter_1": paths.adapters["adapter_1"]},
                                    max_adapters=2, max_lora_rank=8, lora_target_modules=["q_proj", "down_proj"])
    cap = eng.adapter_slots.capacity  # q_proj brings its fused group: k_proj and v_proj
    assert cap.modules == ("q_proj", "k_proj", "v_proj", "down_proj") and cap.groups == ("qkv", "down")
    assert set(eng.model.lora[0]) == {"qkv", "down"}
    # adapter_1 (q and v) within the smaller stacks: what the engine with every projection gives
    assert logprobs(eng, ["adapter_1"]) == pytest.approx(logprobs(reference, ["adapter_1"]), rel=1e-5)
    with pytest.raises(AdapterCapacityError, match=r"'adapter_2' .*rank 16.*'o_proj'.*max_lora_rank=8.*"
                                                   r"rank 16 exceeds max_lora_rank=8"):
        eng.load_adapter("adapter_2", paths.adapters["adapter_2"])
    with pytest.raises(AdapterCapacityError, match=r"'adapter_0' .*targets \['q_proj'.*do not cover"):
        eng.load_adapter("adapter_0", paths.adapters["adapter_0"])  # rank 8 fits; o/gate/up do not
    with pytest.raises(AdapterError, match="already loaded .slot 0"):
        eng.load_adapter("adapter_1", paths.adapters["adapter_1"])
    with pytest.raises(AdapterError, match="reserved"):
        eng.load_adapter("base", paths.adapters["adapter_1"])
    with pytest.raises(MissingPathError, match="nowhere"):
        eng.load_adapter("x", paths.model_dir / "nowhere")
    with pytest.raises(AdapterError, match=r"no adapter named 'x' is loaded; loaded adapters are \['adapter_1'\]"):
        eng.unload_adapter("x")
    assert eng.adapter_names == ["adapter_1"]  # failed loads took no slot
    eng.load_adapter("again", paths.adapters["adapter_1"])
    with pytest.raises(AdapterCapacityError, match=r"all 2 adapter slots are taken \(by \['adapter_1', 'again'\]\)"):
        eng.load_adapter("more", paths.adapters["adapter_1"])
    # at start: too many adapters for max_adapters, an engine without slots, a bad capacity
    with pytest.raises(AdapterCapacityError, match="'adapter_1'.*all 1 adapter slots are taken"):
        wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, max_adapters=1)
    bare = wf.Engine.from_pretrained(paths.model_dir)
    assert bare.adapter_slots.capacity.max_adapters == 0 and all(not layer for layer in bare.model.lora)
    with pytest.raises(AdapterCapacityError, match="started without adapter slots.*max_adapters="):
        bare.load_adapter("adapter_0", paths.adapters["adapter_0"])
    with pytest.raises(AdapterError, match="lora_target_modules must be .*'lm_head'"):
        wf.Engine.from_pretrained(paths.model_dir, max_adapters=1, lora_target_modules=["lm_head"])


def test_unload_is_refused_while_requests_hold_the_adapter(paths):
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters={"adapter_0": paths.adapters["adapter_0"]})
    slots = eng.adapter_slots
    slot = eng.slot("adapter_0", "test")
    slots.acquire(slot)  # what the step core does when it admits a request
    slots.acquire(slot)
    slots.acquire(eng.slot(None, "test"))  # the base model is not counted
    with pytest.raises(AdapterInUseError, match=r"'adapter_0' \(slot 0\) is used by 2 unfinished"):
        eng.unload_adapter("adapter_0")
    slots.release(slot)
    with pytest.raises(AdapterInUseError, match="used by 1 unfinished"):
        eng.unload_adapter("adapter_0")
    slots.release(slot)
    eng.unload_adapter("adapter_0")
    with pytest.raises(AdapterError, match="has no unfinished requests"):
        slots.release(slot)


def test_tampered_adapter_is_refused_without_touching_the_slots(paths, tmp_path):
    # a live load validates like a load at start; on error nothing is written
    bad = tmp_path / "bad"
    bad.mkdir()
    conf = json.loads((paths.adapters["adapter_0"] / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**conf, "r": 6}))
    (bad / "adapter_model.safetensors").write_bytes((paths.adapters["adapter_0"] / "adapter_model.safetensors").read_bytes())
    eng = wf.Engine.from_pretrained(paths.model_dir, max_adapters=1, max_lora_rank=8)
    before = [s.A.clone() for layer in eng.model.lora for s in layer.values()]
    with pytest.raises(AdapterError, match="r=6"):
        eng.load_adapter("bad", bad)
    assert eng.adapter_names == []
    assert all(torch.equal(a, s.A) for a, s in zip(before, (s for layer in eng.model.lora for s in layer.values())))


def test_live_loads_on_the_triton_backend(paths, reference):
    # the Triton kernels read the stacks in place (interpreted on CPU): a reused, padded slot works there too
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters={"adapter_0": paths.adapters["adapter_0"]},
                                    max_adapters=2, max_lora_rank=16, backend="triton")
    eng.unload_adapter("adapter_0")
    eng.load_adapter("adapter_3", paths.adapters["adapter_3"])
    reqs = [wf.ScoreRequest(c, x, a) for c, x in TEXTS[:2] for a in (None, "adapter_3")]
    for a, b in zip(eng.score(reqs), reference.score(reqs)):
        assert rel(a.logprob, b.logprob) < 1e-4 and a.is_greedy == b.is_greedy


# ---- tensor parallel: rank 0 loads, then its workers load their slice ---------------------------
def test_tensor_parallel_live_loads_equal_one_process(paths, reference):
    adapters = {k: str(v) for k, v in paths.adapters.items()}
    with wf.Engine.from_pretrained(paths.model_dir, adapters={"adapter_0": adapters["adapter_0"]},
                                   max_adapters=2, max_lora_rank=16, tensor_parallel=2) as eng:
        eng.load_adapter("adapter_2", adapters["adapter_2"])
        eng.unload_adapter("adapter_0")
        eng.load_adapter("adapter_1", adapters["adapter_1"])  # slot 0 again
        arms = ["adapter_1", "adapter_2"]
        assert eng.adapter_names == arms
        # rank 0 holds its slice (the worker's is checked by the numbers below)
        assert eng.model.lora[0]["qkv"].B.shape[1] * 2 == reference.model.lora[0]["qkv"].B.shape[1]
        got_lp, got_tokens = logprobs(eng, arms), [g.token_ids for g in eng.generate(gen_reqs(arms))]
    ref_lp, ref_tokens = logprobs(reference, arms), [g.token_ids for g in reference.generate(gen_reqs(arms))]
    assert all(rel(a, b) < 1e-5 for a, b in zip(got_lp, ref_lp)), (got_lp, ref_lp)
    assert got_tokens == ref_tokens


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captures real CUDA graphs (runs on a GPU)")
def test_live_loads_under_captured_cuda_graphs(paths):
    # the graphs hold the stacks' addresses: slots written in place after capture must be replayed
    kw = dict(device="cuda", dtype="float32", backend="triton", max_lora_rank=16)
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters={"adapter_0": paths.adapters["adapter_0"]},
                                    max_adapters=2, **kw)
    ref = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters, **kw)
    knobs = dict(max_batch_size=16, cuda_graphs=True)

    def reqs(arms):
        return [wf.GenerateRequest(prompt=f"Story number {i} begins", adapter=[None, *arms][i % (len(arms) + 1)],
                                   max_new_tokens=3 + i % 5) for i in range(11)]

    first = eng.generate(reqs(["adapter_0"]), **knobs)
    graphs = eng.decode_graphs
    assert [r.token_ids for r in first] == [r.token_ids for r in ref.generate(reqs(["adapter_0"]), max_batch_size=16)]
    for op in (lambda: eng.load_adapter("adapter_2", paths.adapters["adapter_2"]),
               lambda: eng.unload_adapter("adapter_0"),
               lambda: eng.load_adapter("adapter_1", paths.adapters["adapter_1"])):
        op()
        arms = eng.adapter_names
        got = [r.token_ids for r in eng.generate(reqs(arms), **knobs)]
        assert got == [r.token_ids for r in ref.generate(reqs(arms), max_batch_size=16)], arms
    assert eng.decode_graphs is graphs  # the same captured graphs served every slot table
    scores = eng.score(score_reqs(eng.adapter_names))
    for a, b in zip(scores, ref.score(score_reqs(eng.adapter_names))):
        assert rel(a.logprob, b.logprob) < 1e-4


@pytest.mark.real
def test_live_loads_on_smollm2_equal_loaded_at_start():
    from real_model import real_paths_or_skip

    real = real_paths_or_skip()
    eng = wf.Engine.from_pretrained(real.model_dir, max_adapters=2, max_lora_rank=16)
    eng.load_adapter("qv_r4_rslora", real.adapters["qv_r4_rslora"])
    eng.load_adapter("mlp_r16", real.adapters["mlp_r16"])
    eng.unload_adapter("qv_r4_rslora")
    assert eng.load_adapter("all_r8", real.adapters["all_r8"]) == 0  # rank 8 padded to 16, reused slot
    arms = ["all_r8", "mlp_r16"]
    at_start = wf.Engine.from_pretrained(real.model_dir, adapters={a: real.adapters[a] for a in arms},
                                         max_lora_rank=16)
    live = logprobs(eng, arms)
    assert live == logprobs(at_start, arms) and len({round(x, 4) for x in live}) == len(live)


def test_core_holds_an_adapter_until_its_requests_finish(tiny):
    # the engine core counts unfinished requests per adapter: unloading one in use is refused,
    # and finishing, aborting or closing the core lets go of it
    paths = tiny("llama", 2)
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters)
    a, b = eng.adapter_names
    with eng.core() as core:
        gen = core.add_request(wf.GenerateRequest(prompt="the cat", adapter=a, max_new_tokens=3))
        core.add_request(wf.ScoreRequest(context="the dog", continuation=" ran", adapter=b))
        with pytest.raises(AdapterInUseError):
            eng.unload_adapter(a)
        with pytest.raises(AdapterInUseError):
            eng.unload_adapter(b)
        core.step()  # the score row finishes in the step that admits it
        eng.unload_adapter(b)
        core.abort(gen)
        eng.unload_adapter(a)
    eng.load_adapter(a, paths.adapters[a])
    core = eng.core()
    core.add_request(wf.GenerateRequest(prompt="the cat", adapter=a, max_new_tokens=3))
    core.close()  # a core closed with work left lets go of it too
    eng.unload_adapter(a)
