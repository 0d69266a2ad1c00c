"""The scorer counts the tokens it feeds (context + continuation - 1) against the maximum length.

lm-eval's first rolling window is max_length + 1 tokens long ([prefix] + max_length text tokens,
every text token scored): the model is fed max_length of them, so the window must be accepted, and
give what HF transformers + PEFT give for the same row.
"""
import pytest

import warmfast as wf
from hf_reference import HFReference

MAX = 24


@pytest.fixture(scope="module")
def setup(tiny):
    p = tiny("llama", 3)
    eng = wf.Engine.from_pretrained(p.model_dir, adapters=p.adapters, max_seq_len=MAX)
    return p, eng


def test_window_of_max_plus_one_tokens_is_accepted(setup):
    p, eng = setup
    hf = HFReference(p)
    row = [(7 * i + 11) % 300 + 10 for i in range(MAX + 1)]  # MAX + 1 tokens, MAX fed
    for adapter in (None, "adapter_0", "adapter_2"):
        res, = eng.score([wf.ScoreRequest(row[:1], row[1:], adapter)])
        ref = hf.token_logprobs(row[:1], row[1:], adapter)
        assert res.num_tokens == MAX
        assert res.token_logprobs == pytest.approx(ref, rel=1e-4, abs=1e-4)


def test_one_token_more_is_rejected(setup):
    _, eng = setup
    with pytest.raises(ValueError, match=rf"= {MAX + 2} tokens exceeds the maximum sequence length "
                                         rf"{MAX} \+ 1 \(the model is fed {MAX + 1} tokens"):
        eng.score([wf.ScoreRequest([5] * 3, [6] * (MAX - 1))])
