"""config.json parsing, sharded safetensors, tokenizer/chat template, adapter stacking."""
import json

import pytest
import torch

import warmfast as wf
from warmfast.kernels.rope import rope_inv_freq
from warmfast.model.adapters import load_adapter, stack_adapters
from warmfast.model.config import ModelConfig

LLAMA31 = {  # the config.json layout Llama-3.1-8B-Instruct ships (transformers 4 style)
    "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": False, "vocab_size": 128256, "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "torch_dtype": "bfloat16",
}


def test_llama31_config_and_rope_match_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = ModelConfig.from_dict(LLAMA31)
    assert (cfg.head_dim, cfg.num_kv_heads, cfg.q_size, cfg.kv_size) == (128, 8, 4096, 1024)
    assert cfg.eos_token_ids == [128001, 128008, 128009] and cfg.rope_scaling["factor"] == 8.0
    hf_cfg = LlamaConfig(**{k: v for k, v in LLAMA31.items() if k != "architectures"})
    hf_inv, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_cfg, "cpu")
    ours = rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    torch.testing.assert_close(ours, hf_inv.float(), rtol=0, atol=0)


def test_qwen2_and_mistral_configs():
    qwen = ModelConfig.from_dict({**LLAMA31, "architectures": ["Qwen2ForCausalLM"], "rope_scaling": None,
                                  "tie_word_embeddings": True, "sliding_window": 4096,
                                  "use_sliding_window": False})
    assert qwen.qkv_bias and qwen.tie_word_embeddings and qwen.sliding_window is None
    mistral = ModelConfig.from_dict({**LLAMA31, "architectures": ["MistralForCausalLM"], "head_dim": 64,
                                     "rope_scaling": None, "sliding_window": None})
    assert mistral.head_dim == 64 and mistral.q_size == 2048 and not mistral.qkv_bias


def test_unsupported_rope_scaling_is_refused():
    with pytest.raises(ValueError, match="rope scaling type 'yarn' is not supported"):
        ModelConfig.from_dict({**LLAMA31, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})


def test_sharded_checkpoint_equals_single_file(tiny):
    single = tiny("qwen2", 2)
    sharded = tiny("qwen2", 2, shard_size="20KB")
    index = json.loads((sharded.model_dir / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    reqs = [wf.ScoreRequest("The capital of France is", " Paris.", a) for a in (None, "adapter_0", "adapter_1")]
    a = wf.Engine.from_pretrained(single.model_dir, adapters=single.adapters).score(reqs)
    b = wf.Engine.from_pretrained(sharded.model_dir, adapters=sharded.adapters).score(reqs)
    assert [r.logprob for r in a] == [r.logprob for r in b]


def test_tied_embeddings_share_storage(tiny):
    p = tiny("qwen2", 0)
    eng = wf.Engine.from_pretrained(p.model_dir)
    assert eng.model.weights.lm_head.data_ptr() == eng.model.weights.embed.data_ptr()
    assert eng.model.weights.layers[0].qkv_bias is not None


def test_chat_template_and_eos_from_folder(tiny):
    p = tiny("llama", 0)
    eng = wf.Engine.from_pretrained(p.model_dir)
    ids = eng.tok.chat([{"role": "user", "content": "hi"}], "test")
    text = eng.tok.hf.decode(ids)
    assert text.startswith("<s><|user|>\nhi<|end|>") and text.endswith("<|assistant|>\n")
    assert eng.tok.eos_ids == {eng.tok.hf.convert_tokens_to_ids("</s>"), eng.tok.hf.convert_tokens_to_ids("<|end|>")}
    with pytest.raises(ValueError, match=r"messages\[0\] must be a dict"):
        eng.tok.chat(["hi"], "test")


def test_adapter_stacking_pads_ranks_and_prescales(tiny):
    p = tiny("llama", 3)
    cfg = ModelConfig.from_folder(p.model_dir)
    adapters = [load_adapter(n, d, cfg) for n, d in p.adapters.items()]
    ranks = [a.max_rank for a in adapters]
    assert ranks == [8, 4, 16]
    stacks = stack_adapters(adapters, cfg, torch.float32, torch.device("cpu"))
    qkv = stacks[0]["qkv"]
    r_max = max(ranks)
    assert qkv.A.shape == (3, 3 * r_max, cfg.hidden_size)
    assert qkv.B.shape == (3, cfg.q_size + 2 * cfg.kv_size, r_max)
    assert qkv.slice_offsets == [0, cfg.q_size, cfg.q_size + cfg.kv_size, cfg.q_size + 2 * cfg.kv_size]
    # adapter_1 (rank 4, rslora, alpha 8): B scaled by 8 / sqrt(4) = 4, zero beyond rank 4
    a1, b1 = adapters[1].weights[(0, "q_proj")]
    raw_b = b1 / 4.0
    assert torch.count_nonzero(raw_b) > 0
    torch.testing.assert_close(qkv.B[1, :cfg.q_size, :4], raw_b * 4.0)
    assert torch.count_nonzero(qkv.B[1, :, 4:]) == 0
    # adapter_1 does not target k_proj: its k slice is all zero; adapter_2 targets no qkv at all
    assert torch.count_nonzero(qkv.B[1, cfg.q_size:cfg.q_size + cfg.kv_size]) == 0
    assert torch.count_nonzero(qkv.A[2]) == 0 and torch.count_nonzero(qkv.B[2]) == 0
