"""GPT-2 scoring (model/gpt2.py) == HF transformers GPT2LMHeadModel in fp32, and its clear refusals."""
import json
import random
import shutil

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

import warmfast as wf
from warmfast.engine.batch import build_prefill
from warmfast.model.adapters import AdapterError
from warmfast.model.config import ModelConfig, ModelConfigError
from warmfast.model.tiny import build_tiny_gpt2
from warmfast.model.weights import WeightsError
from warmfast.train.sociot import SocioTConfig, sociot_warmth

TEXTS = [
    ("The capital of France is", " Paris, the city of light."),
    ("I feel sad today. Which river runs through London?", " The Thames."),
    ("Hi", " my friend"),
    ("Explain the difference between a poem and a story. " * 6, " A poem has lines; a story has a plot."),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """gelu_new with transformers' names, the same weights under the original `gpt2` checkpoint's
    names (+ mask buffers), and exact gelu. init_std=0.3 makes gelu_new vs gelu differ by up to
    1e-3 relative in log-probs (0.1: 1.5e-4), while engine vs HF differ by ~2e-6."""
    root = tmp_path_factory.mktemp("gpt2")
    return {"new": build_tiny_gpt2(root / "new", init_std=0.3),
            "legacy": build_tiny_gpt2(root / "legacy", init_std=0.3, legacy_names=True),
            "gelu": build_tiny_gpt2(root / "gelu", init_std=0.3, activation="gelu", seed=1)}


@pytest.fixture(scope="module")
def hf(built):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    return {k: (GPT2LMHeadModel.from_pretrained(p.model_dir, dtype=torch.float32).eval(),
                AutoTokenizer.from_pretrained(p.model_dir)) for k, p in built.items()}


def requests(vocab: int) -> list[wf.ScoreRequest]:
    reqs = [wf.ScoreRequest(c, x) for c, x in TEXTS]
    rng = random.Random(0)
    for n_ctx, n_cont in ((1, 1), (1, 40), (23, 5), (200, 17)):  # token ids, mixed lengths
        reqs.append(wf.ScoreRequest([rng.randrange(vocab) for _ in range(n_ctx)],
                                    [rng.randrange(vocab) for _ in range(n_cont)]))
    rng.shuffle(reqs)
    return reqs


@torch.no_grad()
def hf_token_logprobs(model, tok, req) -> tuple[list[float], bool]:
    ctx = tok(req.context).input_ids if isinstance(req.context, str) else req.context
    cont = tok(req.continuation, add_special_tokens=False).input_ids if isinstance(req.continuation, str) \
        else req.continuation
    logits = model(torch.tensor([ctx + cont])).logits[0, len(ctx) - 1:-1]  # [len(cont), V]
    lp = torch.log_softmax(logits.double(), -1)
    return [lp[j, t].item() for j, t in enumerate(cont)], logits.argmax(-1).tolist() == list(cont)


@pytest.mark.parametrize("key,hf_key", [("new", "new"), ("legacy", "new"), ("gelu", "gelu")])
def test_scores_equal_hf_gpt2(built, hf, key, hf_key):
    # "legacy" is checked against HF on the transformers-named folder of the same seed: the loader
    # must read the unprefixed names and ignore the mask buffers to match
    eng = wf.Engine.from_pretrained(built[key].model_dir, dtype="float32")
    reqs = requests(eng.model.cfg.vocab_size)
    packed = eng.score(reqs)
    small = eng.score(reqs, max_batch_tokens=40)  # other packing, same numbers
    model, tok = hf[hf_key]
    for req, res, res2 in zip(reqs, packed, small):
        ref, greedy = hf_token_logprobs(model, tok, req)
        assert res.num_tokens == len(ref)
        assert res.token_logprobs == pytest.approx(ref, rel=1e-5)  # the study asks 1e-4
        assert res.logprob == pytest.approx(sum(ref), rel=1e-5)
        assert res.is_greedy == greedy
        assert res2.token_logprobs == pytest.approx(res.token_logprobs, rel=1e-5)


@pytest.mark.parametrize("key", ["new", "gelu"])
def test_final_hidden_equals_hf(built, hf, key):
    eng = wf.Engine.from_pretrained(built[key].model_dir)
    rows = [list(range(5, 5 + n)) for n in (1, 37, 300)]
    hidden = eng.model.forward(eng.ops, build_prefill(rows, [-1] * len(rows), eng.device))  # [T, H]
    ref = [hf[key][0](torch.tensor([r]), output_hidden_states=True).hidden_states[-1][0] for r in rows]
    torch.testing.assert_close(hidden, torch.cat(ref), rtol=0, atol=2e-5)  # activation swap: 1e-3


def test_legacy_checkpoint_really_has_legacy_names(built):
    from safetensors import safe_open

    with safe_open(str(built["legacy"].model_dir / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "wte.weight" in names and "h.0.attn.bias" in names and "h.1.attn.masked_bias" in names
    assert not any(n.startswith("transformer.") for n in names)


def test_string_context_has_no_bos(built, hf):
    eng = wf.Engine.from_pretrained(built["new"].model_dir)
    ids = list(eng.tok.encode_context("The capital"))
    assert ids == hf["new"][1]("The capital").input_ids == list(eng.tok.encode_plain("The capital"))
    assert eng.model.cfg.bos_token_id not in ids
    with pytest.raises(ValueError, match="context is empty"):
        eng.score([wf.ScoreRequest("", " Paris")])
    # an explicit start token conditions the first text token
    start = eng.model.cfg.eos_token_ids[0]
    with_start = eng.score([wf.ScoreRequest([start], "The capital")])[0]
    assert with_start.num_tokens == len(ids)


def test_sociot_warmth_equals_reference_on_gpt2(built, hf):
    # the reference algorithm (compute_humt_sociot.py) on plain GPT2LMHeadModel, every position
    # attending causally (see train/sociot.py for the padding-query difference)
    eng = wf.Engine.from_pretrained(built["new"].model_dir)
    model, tok = hf["new"]
    cfg = SocioTConfig()
    texts = ["I think the capital is paris, my friend.", "no", ""]
    ws = sociot_warmth(eng, texts, cfg)
    for i, text in enumerate(texts):
        quoted = f'"{text}"' if text else ""
        for words, got in ((cfg.warm_words, ws.warm[i]), (cfg.cold_words, ws.cold[i])):
            frames = [f"{'My' if w in cfg.my_words else 'The'} {w} said, {quoted}" for w in words]
            ids = pad_sequence([torch.tensor(tok(f).input_ids) for f in frames], batch_first=True)
            with torch.no_grad():
                loss = model(input_ids=ids, labels=ids).loss
            assert got == pytest.approx(-loss.item(), rel=1e-4)


def _copy(built, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(built["new"].model_dir, dst)
    return dst


def _edit(path, **changes):
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def test_unsupported_activation(built, tmp_path):
    m = _copy(built, tmp_path)
    _edit(m / "config.json", activation_function="relu")
    with pytest.raises(ModelConfigError, match=r"activation_function='relu' is not supported for "
                                          r"GPT2LMHeadModel \(supported: gelu_new, gelu\)"):
        wf.Engine.from_pretrained(m)


def test_config_errors(built, tmp_path):
    m = _copy(built, tmp_path)
    _edit(m / "config.json", scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(ModelConfigError, match="scale_attn_by_inverse_layer_idx=True is not supported"):
        wf.Engine.from_pretrained(m)
    d = json.loads((m / "config.json").read_text())
    del d["n_embd"], d["scale_attn_by_inverse_layer_idx"]
    (m / "config.json").write_text(json.dumps(d))
    with pytest.raises(ModelConfigError, match="missing required key 'n_embd' for GPT2LMHeadModel"):
        wf.Engine.from_pretrained(m)
    # ModelConfig (the Llama-family reader) points GPT-2 users to the scoring path
    with pytest.raises(ModelConfigError, match="GPT2LMHeadModel for scoring only"):
        ModelConfig.from_folder(m)


def test_checkpoint_shape_mismatch(built, tmp_path):
    m = _copy(built, tmp_path)
    _edit(m / "config.json", n_positions=300)
    with pytest.raises(WeightsError, match=r"'transformer.wpe.weight'.*\(512, 64\).*\(300, 64\)"):
        wf.Engine.from_pretrained(m)


def test_adapters_generation_and_tensor_parallel_are_refused(built, tiny):
    adapters = tiny("llama", 1).adapters
    with pytest.raises(AdapterError, match=r"LoRA adapters \['adapter_0'\] cannot be loaded .*GPT2LMHeadModel"):
        wf.Engine.from_pretrained(built["new"].model_dir, adapters=adapters)
    with pytest.raises(ValueError, match="model: tensor_parallel=2 is not supported for GPT-2"):
        wf.Engine.from_pretrained(built["new"].model_dir, tensor_parallel=2)
    eng = wf.Engine.from_pretrained(built["new"].model_dir)
    with pytest.raises(ValueError, match="generation is not supported for GPT-2"):
        eng.generate([wf.GenerateRequest(prompt="The capital", max_new_tokens=4)])
    with pytest.raises(KeyError, match="unknown adapter 'adapter_0'"):
        eng.score([wf.ScoreRequest("The capital", " Paris", adapter="adapter_0")])


def test_triton_backend_equals_torch(built):
    # the GPU path (backend="auto" on CUDA) through the Triton interpreter on CPU
    tri = wf.Engine.from_pretrained(built["new"].model_dir, backend="triton")
    ref = wf.Engine.from_pretrained(built["new"].model_dir, backend="torch")
    assert tri.backend == "triton"
    reqs = [wf.ScoreRequest(c, x) for c, x in TEXTS[:3]]
    for a, b in zip(tri.score(reqs), ref.score(reqs)):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, rel=1e-5) and a.is_greedy == b.is_greedy
