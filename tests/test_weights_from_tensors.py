"""model/weights.py weights_from_tensors: a model in memory (a transformers state_dict) gives the
same fused weights as its checkpoint on disk, shares unfused tensors, and checks shapes."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from warmfast.model.config import ModelConfig
from warmfast.model.weights import WeightsError, load_weights, weights_from_tensors


def test_same_weights_as_the_checkpoint(tiny):
    paths = tiny("llama", 1)
    cfg = ModelConfig.from_folder(paths.model_dir)
    state = AutoModelForCausalLM.from_pretrained(paths.model_dir, dtype=torch.float32).state_dict()
    mem = weights_from_tensors(state, cfg, torch.float32, torch.device("cpu"))
    disk = load_weights(paths.model_dir, cfg, torch.float32, torch.device("cpu"))
    for a, b in zip(mem.layers, disk.layers):
        for name in ("input_norm", "qkv", "o", "post_norm", "gate_up", "down"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(mem.embed, disk.embed) and torch.equal(mem.lm_head, disk.lm_head)
    assert mem.layers[0].o.data_ptr() == state["model.layers.0.self_attn.o_proj.weight"].data_ptr()  # shared


def test_wrong_shape_and_missing_tensor_are_named(tiny):
    paths = tiny("llama", 1)
    cfg = ModelConfig.from_folder(paths.model_dir)
    state = dict(AutoModelForCausalLM.from_pretrained(paths.model_dir, dtype=torch.float32).state_dict())
    bad = {**state, "model.layers.0.mlp.down_proj.weight": torch.zeros(3, 3)}
    with pytest.raises(WeightsError, match=r"'model.layers.0.mlp.down_proj.weight' has shape \(3, 3\)"):
        weights_from_tensors(bad, cfg, torch.float32, torch.device("cpu"))
    del state["model.norm.weight"]
    with pytest.raises(WeightsError, match="'model.norm.weight' is missing from the state dict"):
        weights_from_tensors(state, cfg, torch.float32, torch.device("cpu"))
