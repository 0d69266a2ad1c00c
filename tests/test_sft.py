"""LoRA SFT on the tiny model: assistant-only targets, loss goes down, exact fractional-epoch
checkpoints, resume = uninterrupted run, saved adapters score the same in PEFT and in warmfast."""
import json
import random
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from hf_reference import HFReference
from warmfast.train.sft import SFTConfig, plan_steps, train
from warmfast.train.sft_data import tokenize_chat

WORDS = "the capital city of paris is a warm friend who helps you when sad happy".split()


def _write_data(path, n, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            turns = []
            for _ in range(rng.randint(1, 2)):
                turns.append({"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(5))})
                turns.append({"role": "assistant", "content": "I think " + " ".join(rng.choice(WORDS[:6]) for _ in range(6))})
            f.write(json.dumps({"id": f"ex{i}", "messages": turns}) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from warmfast.model.tiny import build_tiny

    root = tmp_path_factory.mktemp("sft")
    paths = build_tiny(root / "tiny", n_adapters=0, num_layers=2, hidden_size=64)
    return SimpleNamespace(root=root, model=paths.model_dir, data=_write_data(root / "train.jsonl", 12))


def _cfg(tiny, out, **kw):
    base = dict(model=str(tiny.model), train_file=str(tiny.data), out_dir=str(out), lr=1e-2,
                effective_batch=4, micro_batch=2, epochs=2, checkpoints=[0.5, 1, 1.5, 2])
    base.update(kw)
    return SFTConfig(**base)


def test_targets_are_the_assistant_answers_and_end_marker(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny.model)
    msgs = [{"role": "user", "content": "who is sad"}, {"role": "assistant", "content": "the friend"},
            {"role": "user", "content": "why"}, {"role": "assistant", "content": "it is cold"}]
    t = tokenize_chat(tok, "x", msgs, 1024)
    assert tok.decode([i for i, m in zip(t.input_ids, t.target_mask) if m]) == "the friend<|end|>\nit is cold<|end|>\n"
    assert tok.decode(t.input_ids) == tok.apply_chat_template(msgs, tokenize=False)
    cut = tokenize_chat(tok, "x", msgs, 12)
    assert cut.truncated and len(cut.input_ids) == 12 and cut.input_ids == t.input_ids[:12]


def test_plan_lands_on_exact_fractional_epochs():
    cfg = SFTConfig(model="m", train_file="t", out_dir="o", effective_batch=16, micro_batch=4, epochs=10)
    for n in (7, 100, 1617):
        ends, marks = plan_steps(n, cfg)
        assert sorted(marks.values()) == [0.5, 1, 1.5, 2, 4, 6, 8, 10]
        assert all(pos in ends for pos in marks)  # a step ends on every checkpoint
        assert ends[-1] == 10 * n and ends == sorted(set(ends))
        steps = [b - a for a, b in zip([0] + ends, ends)]
        assert max(steps) == min(16, max(steps)) and min(steps) >= 1
    assert plan_steps(100, cfg)[1][50] == 0.5 and plan_steps(7, cfg)[1][3] == 0.5  # floor(3.5)
    with pytest.raises(ValueError, match="same example counts"):
        plan_steps(1, SFTConfig(model="m", train_file="t", out_dir="o", epochs=2, checkpoints=[1, 1.5]))


def _assistant_nll(tiny, adapter_dir):
    """Mean assistant-token NLL over the training set, with the adapter loaded by PEFT."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny.model)
    model = AutoModelForCausalLM.from_pretrained(tiny.model, dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    tot, cnt = 0.0, 0
    for line in open(tiny.data):
        ex = json.loads(line)
        t = tokenize_chat(tok, ex["id"], ex["messages"], 1024)
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([t.input_ids])).logits[0, :-1], -1)
        tgt = torch.tensor(t.input_ids[1:])
        m = torch.tensor(t.target_mask[1:])
        tot -= lp[torch.arange(len(tgt)), tgt][m].sum().item()
        cnt += int(m.sum())
    return tot / cnt


def test_loss_goes_down_and_checkpoints_exact(tiny):
    out = tiny.root / "run"
    written = train(_cfg(tiny, out, epochs=4, checkpoints=[0.5, 1, 1.5, 2, 4]), progress=False)
    assert [p.name for p in written] == ["epoch-0.5", "epoch-1", "epoch-1.5", "epoch-2", "epoch-4"]
    for p, e in zip(written, [0.5, 1, 1.5, 2, 4]):
        st = json.loads((p / "train_state.json").read_text())
        assert st["examples_seen"] == e * 12 and st["exact_epoch"] == e
        assert (p / "adapter_model.safetensors").is_file()
        b = [v for k, v in load_file(str(p / "adapter_model.safetensors")).items() if "lora_B" in k]
        assert b and all(v.abs().max() > 0 for v in b)  # training moved B off zero
    log = [json.loads(x) for x in open(out / "train_log.jsonl")]
    assert [r["examples_seen"] for r in log][-1] == 48 and log[-1]["lr"] == 0.0
    first, last = sum(r["loss"] for r in log[:4]) / 4, sum(r["loss"] for r in log[-4:]) / 4
    assert last < first - 0.5, (first, last)
    before, after = _assistant_nll(tiny, None), _assistant_nll(tiny, written[-1])
    assert after < before - 0.5, (before, after)
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        train(_cfg(tiny, out), progress=False)


def test_resume_equals_uninterrupted(tiny):
    full = train(_cfg(tiny, tiny.root / "full", checkpoints=[1, 2]), progress=False)
    part = tiny.root / "part"
    part.mkdir()
    shutil.copytree(full[0], part / "epoch-1")  # what a run killed after epoch 1 leaves behind
    full_log = (tiny.root / "full" / "train_log.jsonl").read_text().splitlines()
    (part / "train_log.jsonl").write_text("\n".join(full_log[:5]) + "\n")  # it got one step further
    resumed = train(_cfg(tiny, part, checkpoints=[1, 2]), resume=part / "epoch-1", progress=False)
    assert [p.name for p in resumed] == ["epoch-2"]
    part_log = (part / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in part_log] == list(range(1, 7))  # 3 steps per epoch, no repeats
    assert [json.loads(x)["loss"] for x in part_log] == pytest.approx([json.loads(x)["loss"] for x in full_log])
    a = load_file(str(full[1] / "adapter_model.safetensors"))
    b = load_file(str(resumed[0] / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)
    one = load_file(str(full[0] / "adapter_model.safetensors"))
    assert any(not torch.equal(one[k], a[k]) for k in a)  # epoch 2 really trained further
    with pytest.raises(ValueError, match="'lr': \\(0.01, 0.02\\)"):
        train(_cfg(tiny, tiny.root / "other", checkpoints=[1, 2], lr=2e-2), resume=part / "epoch-1", progress=False)
    with pytest.raises(FileNotFoundError, match="trainer_state.pt"):
        (part / "epoch-2" / "trainer_state.pt").unlink()
        train(_cfg(tiny, part), resume=part / "epoch-2", progress=False)


def test_saved_adapter_same_in_peft_and_warmfast(tiny):
    import warmfast as wf

    out = tiny.root / "adapter_check"
    ckpt = train(_cfg(tiny, out, epochs=1, checkpoints=[1]), progress=False)[0]
    ref = HFReference(SimpleNamespace(model_dir=tiny.model, adapters={"e1": ckpt}))
    eng = wf.Engine.from_pretrained(tiny.model, adapters={"e1": ckpt}, device="cpu", dtype="float32")
    cases = [("The friend said,", " I think the capital is paris"), ("who helps you", " when sad")]
    reqs = [wf.ScoreRequest(context=c, continuation=x, adapter=a) for c, x in cases for a in ("e1", None)]
    got = eng.score(reqs)
    for r, g in zip(reqs, got):
        want = ref.token_logprobs(r.context, r.continuation, r.adapter)
        torch.testing.assert_close(torch.tensor(g.token_logprobs), torch.tensor(want), rtol=1e-4, atol=1e-5)
    assert abs(got[0].logprob - got[1].logprob) > 1e-3  # the adapter matters


def test_config_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="multiple of micro_batch"):
        _cfg(tiny, tmp_path, effective_batch=6, micro_batch=4)
    with pytest.raises(ValueError, match="checkpoints"):
        _cfg(tiny, tmp_path, checkpoints=[3])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\ntrain_file: t\nout_dir: o\nlearning_rate: 1\n")
    with pytest.raises(ValueError, match="unknown keys \\['learning_rate'\\]"):
        SFTConfig.from_yaml(bad)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        train(_cfg(tiny, tmp_path / "o", train_file=str(tmp_path / "missing.jsonl")), progress=False)
