"""SocioT warmth on warmfast's scorer vs an independent plain-transformers implementation of the
reference algorithm (compute_humt_sociot.py: pad_sequence, labels = input_ids, -outputs.loss)."""

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from hf_reference import HFReference
from warmfast.train.query_type import load_protocol
from warmfast.train.sociot import SocioTConfig, sociot_warmth, summarize

TEXTS = [
    "I think the capital is paris, my friend.",
    "Why? Because the heart pumps blood. " * 12,  # longer than 300 characters: cut
    "no",
    "Sorry, I cannot help with that question.",
    "",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from warmfast.model.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("sociot") / "tiny", n_adapters=2)


@pytest.fixture(scope="module")
def engine(tiny):
    import warmfast as wf

    return wf.Engine.from_pretrained(tiny.model_dir, adapters=tiny.adapters, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def hf(tiny):
    return HFReference(tiny)


def _frames_as_upstream(text, words):
    # independent of warmfast.train.sociot: the upstream f-strings, the 300-character cut in calculate_td
    prompt = text[:300]
    prompt = f'"{prompt}"' if prompt else ""
    return [f"My {w} said, {prompt}" if w in ["friend", "partner", "girlfriend", "boyfriend", "husband", "wife"]
            else f"The {w} said, {prompt}" for w in words]


def _upstream_set_score(hf, adapter, text, words, mask_padding_queries: bool) -> float:
    """compute_set_log_sum_exp of the reference code, in eval mode (the tiny model has no dropout).

    mask_padding_queries=True is the reference code verbatim (attention_mask from pad_sequence);
    False gives every position causal attention over all earlier tokens, padding included."""
    encs = [hf.tok(f, return_tensors="pt") for f in _frames_as_upstream(text, words)]
    input_ids = pad_sequence([e["input_ids"].squeeze(0) for e in encs], batch_first=True)
    attention_mask = pad_sequence([e["attention_mask"].squeeze(0) for e in encs], batch_first=True)
    if not mask_padding_queries:
        attention_mask = torch.ones_like(attention_mask)
    with torch.no_grad():
        out = hf._run(adapter, lambda: hf.model(input_ids=input_ids, attention_mask=attention_mask,
                                                labels=input_ids))
    return torch.logsumexp(-out.loss, dim=0).item()


def _upstream_masked(hf, adapter, text, words) -> float:
    vals = []
    for f in _frames_as_upstream(text, words):
        ids = hf.tok(f).input_ids
        lp = hf.token_logprobs(ids[:1], ids[1:], adapter)
        vals.append(sum(lp) / len(lp))
    return float(np.mean(vals))


PROTOCOL = SocioTConfig.from_protocol(load_protocol())


@pytest.mark.parametrize("adapter", [None, "adapter_0", "adapter_1"])
def test_reference_mode_equals_plain_transformers(engine, hf, adapter):
    ws = sociot_warmth(engine, TEXTS, PROTOCOL, adapters=[adapter] * len(TEXTS))
    assert ws.mode == "reference"
    for i, t in enumerate(TEXTS):
        warm = _upstream_set_score(hf, adapter, t, PROTOCOL.warm_words, mask_padding_queries=False)
        cold = _upstream_set_score(hf, adapter, t, PROTOCOL.cold_words, mask_padding_queries=False)
        assert ws.warm[i] == pytest.approx(warm, rel=1e-5, abs=1e-6)
        assert ws.cold[i] == pytest.approx(cold, rel=1e-5, abs=1e-6)
        assert ws.warmth[i] == pytest.approx(warm - cold, abs=1e-5)
    # the tiny tokenizer splits the SocioT words unevenly, so some frame sets pad >1 token
    assert ws.meta["sets_with_pad_over_1"] > 0 and ws.meta["frame_sets"] == 2 * len(TEXTS)


def test_reference_mode_is_the_verbatim_reference_when_padding_is_at_most_one(engine, hf):
    # words the tiny tokenizer keeps (nearly) whole: every frame set pads at most one token, so the
    # reference code's attention mask changes nothing and the match is with the code verbatim
    cfg = SocioTConfig(warm_words=("friend", "mother", "sister", "brother"),
                       cold_words=("doctor", "patient", "king", "queen"))
    ws = sociot_warmth(engine, TEXTS, cfg)
    assert ws.meta["max_pad"] <= 1
    for i, t in enumerate(TEXTS):
        assert ws.warm[i] == pytest.approx(_upstream_set_score(hf, None, t, cfg.warm_words, True), rel=1e-5)
        assert ws.cold[i] == pytest.approx(_upstream_set_score(hf, None, t, cfg.cold_words, True), rel=1e-5)
    # with >1 padding token the verbatim code differs at padding queries: that is the documented gap
    ws_p = sociot_warmth(engine, TEXTS[:1], PROTOCOL)
    verbatim = _upstream_set_score(hf, None, TEXTS[0], PROTOCOL.warm_words, True)  # pads up to 4 tokens
    causal = _upstream_set_score(hf, None, TEXTS[0], PROTOCOL.warm_words, False)
    assert ws_p.warm[0] == pytest.approx(causal, rel=1e-5) and abs(verbatim - causal) > 1e-3


def test_masked_mode_equals_plain_transformers(engine, hf):
    cfg = SocioTConfig.from_protocol(load_protocol(), mode="masked")
    ws = sociot_warmth(engine, TEXTS, cfg, adapters=["adapter_1"] * len(TEXTS))
    for i, t in enumerate(TEXTS):
        assert ws.warm[i] == pytest.approx(_upstream_masked(hf, "adapter_1", t, cfg.warm_words), rel=1e-5)
        assert ws.cold[i] == pytest.approx(_upstream_masked(hf, "adapter_1", t, cfg.cold_words), rel=1e-5)
    ref = sociot_warmth(engine, TEXTS, PROTOCOL, adapters=["adapter_1"] * len(TEXTS))
    assert ws.warmth != pytest.approx(ref.warmth, abs=1e-6)  # the two modes are different numbers


def test_mixed_adapters_in_one_call_equal_separate_calls(engine):
    arms = [None, "adapter_0", "adapter_1"]
    texts = [t for t in TEXTS for _ in arms]
    mixed = sociot_warmth(engine, texts, PROTOCOL, adapters=arms * len(TEXTS))
    for j, a in enumerate(arms):
        alone = sociot_warmth(engine, TEXTS, PROTOCOL, adapters=[a] * len(TEXTS))
        np.testing.assert_allclose(mixed.warmth[j::3], alone.warmth, rtol=1e-5, atol=1e-6)
    assert len(set(np.round(mixed.warmth[:3], 6))) == 3  # adapters change the scores


def test_summary_bootstrap_se():
    rng = np.random.default_rng(1)
    x = list(rng.normal(0.02, 0.05, size=400))
    s = summarize(x, n_boot=2000, seed=0)
    assert s["n"] == 400 and s["mean"] == pytest.approx(np.mean(x))
    assert s["se"] == pytest.approx(np.std(x, ddof=1) / 20)
    assert s["boot_se"] == pytest.approx(s["se"], rel=0.1)
    assert s["ci_low"] < s["mean"] < s["ci_high"]
    assert summarize(x, 100, seed=3) == summarize(x, 100, seed=3)
    with pytest.raises(ValueError, match="no warmth"):
        summarize([], 10, 0)


def test_config_errors():
    with pytest.raises(ValueError, match="mode"):
        SocioTConfig(mode="padded")
    assert PROTOCOL.warm_words == ("friend", "lover", "mentor", "idol") and PROTOCOL.bootstrap == 100
