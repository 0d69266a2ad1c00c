"""One test per bad input; each message names the thing and the values involved."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import warmfast as wf
from warmfast.model.adapters import AdapterError
from warmfast.model.config import ModelConfigError
from warmfast.model.weights import WeightsError


def copy_model(paths, dst):
    shutil.copytree(paths.model_dir, dst)
    return dst


def edit_json(path, **changes):
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


@pytest.fixture(scope="module")
def eng(tiny):
    p = tiny("llama", 3)
    return wf.Engine.from_pretrained(p.model_dir, adapters=p.adapters, max_seq_len=64)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        wf.Engine.from_pretrained(tmp_path / "nope")


def test_missing_weights(tiny, tmp_path):
    m = copy_model(tiny("llama", 0), tmp_path / "m")
    (m / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        wf.Engine.from_pretrained(m)


def test_unsupported_architecture(tiny, tmp_path):
    m = copy_model(tiny("llama", 0), tmp_path / "m")
    edit_json(m / "config.json", architectures=["FalconForCausalLM"])  # (GPT-2 scores: test_gpt2.py)
    with pytest.raises(ModelConfigError, match=r"FalconForCausalLM.*LlamaForCausalLM"):
        wf.Engine.from_pretrained(m)


def test_malformed_config(tiny, tmp_path):
    m = copy_model(tiny("llama", 0), tmp_path / "m")
    (m / "config.json").write_text("{not json")
    with pytest.raises(ModelConfigError, match="not valid JSON"):
        wf.Engine.from_pretrained(m)
    edit_json_path = m / "config.json"
    edit_json_path.write_text(json.dumps({**json.loads((tiny("llama", 0).model_dir / "config.json").read_text()),
                                          "num_key_value_heads": 3}))
    with pytest.raises(ModelConfigError, match="num_attention_heads=4 is not a multiple of num_key_value_heads=3"):
        wf.Engine.from_pretrained(m)


def test_adapter_shape_mismatch(tiny, tmp_path):
    p = tiny("llama", 1)
    a = tmp_path / "a"
    shutil.copytree(p.adapters["adapter_0"], a)
    t = load_file(a / "adapter_model.safetensors")
    key = next(k for k in t if "q_proj.lora_B" in k)
    t[key] = torch.randn(t[key].shape[0] + 8, t[key].shape[1])
    save_file(t, a / "adapter_model.safetensors")
    with pytest.raises(AdapterError, match=r"'bad'.*q_proj.*lora_B \(72, 8\).*out_features=64"):
        wf.Engine.from_pretrained(p.model_dir, adapters={"bad": a})


def test_adapter_for_another_base(tiny):
    small = tiny("llama", 0)
    other = tiny("llama", 1, hidden_size=32, intermediate_size=64)  # same family, other shapes
    with pytest.raises(AdapterError, match=r"another base model.*lora_A is \(8, \d+\).*maps in_features=\d+ -> out_features=\d+"):
        wf.Engine.from_pretrained(small.model_dir, adapters={"other": other.adapters["adapter_0"]})
    deeper = tiny("llama", 1, num_layers=3)
    with pytest.raises(AdapterError, match=r"layer 2, the model has 2 layers"):
        wf.Engine.from_pretrained(small.model_dir, adapters={"deep": deeper.adapters["adapter_0"]})


@pytest.mark.parametrize("field,value,feature", [
    ("use_dora", True, "DoRA"),
    ("modules_to_save", ["lm_head"], "modules_to_save"),
    ("target_modules", ["q_proj", "lm_head"], "lm_head"),
])
def test_unsupported_adapter_features(tiny, tmp_path, field, value, feature):
    p = tiny("llama", 1)
    a = tmp_path / "a"
    shutil.copytree(p.adapters["adapter_0"], a)
    edit_json(a / "adapter_config.json", **{field: value})
    with pytest.raises(AdapterError, match=rf"'x'.*{feature}.*supported: LoRA on any subset"):
        wf.Engine.from_pretrained(p.model_dir, adapters={"x": a})


def test_missing_adapter_folder(tiny, tmp_path):
    p = tiny("llama", 0)
    with pytest.raises(FileNotFoundError, match=r"adapter 'w'.*does not exist"):
        wf.Engine.from_pretrained(p.model_dir, adapters={"w": tmp_path / "missing"})


def test_unknown_adapter_name(eng):
    with pytest.raises(KeyError, match=r"ScoreRequest #1: unknown adapter 'warm'.*adapter_0"):
        eng.score([wf.ScoreRequest("a", " b"), wf.ScoreRequest("a", " b", "warm")])
    with pytest.raises(KeyError, match=r"GenerateRequest #0: unknown adapter 'cold'"):
        eng.generate([wf.GenerateRequest(prompt="hi", adapter="cold")])


def test_empty_continuation(eng):
    with pytest.raises(ValueError, match=r"ScoreRequest #0: the continuation is empty"):
        eng.score([wf.ScoreRequest("Hello", "")])
    with pytest.raises(ValueError, match=r"ScoreRequest #0: the continuation is empty"):
        eng.score([wf.ScoreRequest([1, 2], [])])


def test_context_longer_than_maximum(eng):
    with pytest.raises(ValueError, match=r"ScoreRequest #0: context \(70 tokens\) \+ continuation "
                                         r"\(2 tokens\) = 72 tokens exceeds the maximum sequence length 64"):
        eng.score([wf.ScoreRequest([9] * 70, [10, 11])])
    with pytest.raises(ValueError, match=r"GenerateRequest #0: prompt \(60 tokens\) \+ max_new_tokens "
                                         r"\(10\) = 70 exceeds the maximum sequence length 64"):
        eng.generate([wf.GenerateRequest(prompt=[9] * 60, max_new_tokens=10)])


def test_token_ids_outside_vocabulary(eng):
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 512\)"):
        eng.score([wf.ScoreRequest([1, 99999], [3])])


def test_non_finite_weights(tiny, tmp_path):
    m = copy_model(tiny("llama", 0), tmp_path / "m")
    t = load_file(m / "model.safetensors")
    t["model.layers.1.mlp.down_proj.weight"][3, 5] = float("nan")
    save_file(t, m / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"model.layers.1.mlp.down_proj.weight.*1 non-finite"):
        wf.Engine.from_pretrained(m)


def test_bad_generate_settings():
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        wf.GenerateRequest(prompt="x", max_new_tokens=0)
    with pytest.raises(ValueError, match="exactly one of prompt= or messages="):
        wf.GenerateRequest()
    with pytest.raises(ValueError, match="top_p must be in"):
        wf.GenerateRequest(prompt="x", top_p=0.0)


def test_bad_backend_and_dtype(tiny):
    p = tiny("llama", 0)
    with pytest.raises(ValueError, match="dtype must be one of"):
        wf.Engine.from_pretrained(p.model_dir, dtype="int8")
    with pytest.raises(ValueError, match="backend must be one of"):
        wf.Engine.from_pretrained(p.model_dir, backend="cuda-magic")
