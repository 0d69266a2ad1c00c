"""lm-eval's own `local-completions` model against `warmfast serve` (an adapter as `model=`), on an
offline multiple-choice task (local JSONL + task YAML): every log-likelihood and is_greedy flag
equals Engine.score on the same token ids. Two tokenizer modes: the model folder's tokenizer with
add_bos_token=True (the command that gives HF-equal numbers), and the server's /tokenize (remote:
lm-eval cannot add BOS then, so the expected numbers are scored without it)."""
import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
lm_eval = pytest.importorskip("lm_eval", reason="needs lm-eval (pip install lm-eval==0.4.13)")

import warmfast as wf  # noqa: E402
from lm_eval_tasks import write_tasks  # noqa: E402
from serve_process import ServerProcess  # noqa: E402


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    p = tiny("llama", n_adapters=3)
    adapters = {"warm": p.adapters["adapter_0"], "cold": p.adapters["adapter_1"]}
    server = ServerProcess(p.model_dir, adapters)
    eng = wf.Engine.from_pretrained(p.model_dir, adapters=adapters)
    tasks = write_tasks(tmp_path_factory.mktemp("serve_lm_eval_tasks"), n_mc=6, n_text=1, n_gen=1)
    yield server, eng, p, tasks
    server.stop()


def _pair(encode, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's causal _encode_pair: trailing spaces move to the continuation, the whole text is
    encoded and the context's tokens split off."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole, ctx = encode(context + continuation), encode(context)
    return ctx, whole[len(ctx):]


@pytest.mark.parametrize("mode", ["hf_tokenizer_with_bos", "remote_tokenizer"])
def test_local_completions_loglikelihoods_equal_engine_score(setup, mode):
    from lm_eval.tasks import TaskManager

    server, eng, p, tasks = setup
    args = f"model=warm,base_url={server.url}/v1/completions,num_concurrent=1,max_retries=1"
    if mode == "hf_tokenizer_with_bos":
        args += f",tokenizer={p.model_dir},tokenizer_backend=huggingface,add_bos_token=True"
    else:
        args += ",tokenizer_backend=remote"
    out = lm_eval.simple_evaluate(model="local-completions", model_args=args, tasks=["wf_mc"],
                                  task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
                                  batch_size=4, log_samples=True)
    hf = eng.tok.hf
    bos = mode == "hf_tokenizer_with_bos"

    def encode(text):
        return hf(text, add_special_tokens=bos)["input_ids"]

    checked = 0
    for sample in out["samples"]["wf_mc"]:
        pairs = [(a[0], a[1]) for a in sample["arguments"]]  # [[context, continuation], ...]
        ids = [_pair(encode, c, x) for c, x in pairs]
        want = eng.score([wf.ScoreRequest(context=c, continuation=x, adapter="warm") for c, x in ids])
        for resp, w in zip(sample["resps"], want, strict=True):
            logprob, greedy = resp[0]
            assert float(logprob) == pytest.approx(w.logprob, abs=1e-4)
            assert greedy in (w.is_greedy, str(w.is_greedy))
            checked += 1
    assert checked == 6 * 4
