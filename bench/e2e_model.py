"""The random model the end-to-end benches measure: built once, in memory, shared by both systems.

A Llama of a preset shape with random weights on the device, `n` random rank-`r` LoRA adapters on
every projection (B non-zero), wrapped as PEFT's multi-adapter model for HF; warmfast's engine
gets the same base tensors straight from memory (model/weights.py `weights_from_tensors`), and
the adapters through their PEFT folders (a few MB each). Only config.json, the tokenizer and the
adapters touch the disk: no 16 GB checkpoint is written or read, and one process serves both
benches (bench/e2e_check.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

PRESETS = {  # model shapes; vocab comes from the locally trained tokenizer unless given
    # the dry run of bench/gpu_check.sh: seconds on a CPU
    "tiny": dict(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                 vocab_size=512),
    "cpu31m": dict(hidden_size=512, intermediate_size=1536, num_layers=10, num_heads=8,
                   num_kv_heads=4, vocab_size=4096),
    # embedding-heavy small model with a Llama-2/Mistral-size vocabulary (32k): 48.5M parameters
    "cpu48m-v32k": dict(hidden_size=512, intermediate_size=1536, num_layers=5, num_heads=8,
                        num_kv_heads=4, vocab_size=32000),
    "llama8b": dict(hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
                    num_kv_heads=8, vocab_size=128256),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Built:
    model_dir: Path  # config.json and tokenizer only
    adapters: dict[str, Path]  # name -> PEFT adapter folder
    hf: object  # peft.PeftModel with every adapter loaded under its name, eval mode
    engine: object  # warmfast.Engine over the same base tensors
    vocab: int
    params: int  # base parameters (no LoRA)
    seconds: float  # time to build both


def random_adapters(base, work: Path, n_adapters: int, rank: int):
    """(PeftModel over `base` with n random rank-`rank` LoRA adapters on every projection, B
    non-zero; {name: folder} where each was saved under `work`)."""
    import peft

    names = [f"adapter_{i}" for i in range(n_adapters)]

    def lora_config():
        return peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, lora_dropout=0.0)

    hf = peft.get_peft_model(base, lora_config(), adapter_name=names[0])
    for n in names[1:]:
        hf.add_adapter(n, lora_config())
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero, which would test nothing
                p.normal_(0, 0.02)
    adapters = {}
    for n in names:
        hf.save_pretrained(work, selected_adapters=[n])  # -> work/<name>/adapter_model.safetensors
        adapters[n] = Path(work) / n
    hf.eval()
    return hf, adapters


def build(work: Path, preset: str, n_adapters: int, rank: int, device: str, dtype: str,
          backend: str = "auto", max_batch_tokens: int = 8192) -> Built:
    import transformers as tf

    import warmfast as wf
    from warmfast.engine.tokens import TokenizerCache
    from warmfast.kernels.rope import rope_inv_freq
    from warmfast.model.adapter_slots import AdapterCapacity, AdapterSlots
    from warmfast.model.adapters import load_adapter
    from warmfast.model.config import ModelConfig
    from warmfast.model.llama import Model
    from warmfast.model.tiny import build_tokenizer
    from warmfast.model.weights import weights_from_tensors

    t0 = time.perf_counter()
    shape, torch_dtype, dev = PRESETS[preset], DTYPES[dtype], torch.device(device)
    model_dir = Path(work) / "model"
    tok = build_tokenizer(model_dir, min(shape["vocab_size"], 4096), add_bos=True)
    cfg = tf.LlamaConfig(vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"],
                         intermediate_size=shape["intermediate_size"],
                         num_hidden_layers=shape["num_layers"], num_attention_heads=shape["num_heads"],
                         num_key_value_heads=shape["num_kv_heads"], max_position_embeddings=8192,
                         rope_theta=500000.0, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, initializer_range=0.02,
                         architectures=["LlamaForCausalLM"])
    cfg.save_pretrained(model_dir)
    torch.manual_seed(0)
    with torch.device(dev):
        base = tf.AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype)
    base_tensors = dict(base.state_dict())  # before PEFT wraps the projections (same storage)
    hf, adapters = random_adapters(base, work, n_adapters, rank)

    mcfg = ModelConfig.from_folder(model_dir)
    weights = weights_from_tensors(base_tensors, mcfg, torch_dtype, dev)
    del base_tensors
    loaded = [load_adapter(n, p, mcfg) for n, p in adapters.items()]
    slots = AdapterSlots(mcfg, AdapterCapacity.for_adapters(loaded), torch_dtype, dev)
    for adapter in loaded:  # slot i = names[i]
        slots.add(adapter)
    inv_freq = rope_inv_freq(mcfg.head_dim, mcfg.rope_theta, mcfg.rope_scaling).to(dev)
    model = Model(mcfg, weights, slots.stacks, inv_freq)
    engine = wf.Engine(model, TokenizerCache(model_dir), slots, dev, torch_dtype, backend,
                       max_batch_tokens, mcfg.max_position_embeddings)
    params = sum(p.numel() for n, p in hf.named_parameters() if "lora_" not in n)
    return Built(model_dir, adapters, hf, engine, mcfg.vocab_size, params, time.perf_counter() - t0)


def build_real(work: Path, model_dir: str, n_adapters: int, rank: int, device: str, dtype: str,
               backend: str = "auto", max_batch_tokens: int = 8192) -> Built:
    """A real HF Llama folder (e.g. SmolLM2-135M-Instruct, float32) with `n` random rank-`r`
    PEFT adapters on every projection (B non-zero), saved under `work`; HF+PEFT loads the folder,
    warmfast's engine loads the same folder and adapters through Engine.from_pretrained (two copies
    of the weights in memory: fine at 135M)."""
    import transformers as tf

    import warmfast as wf

    t0 = time.perf_counter()
    torch.manual_seed(0)
    base = tf.AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPES[dtype]).to(device)
    hf, adapters = random_adapters(base, work, n_adapters, rank)
    engine = wf.Engine.from_pretrained(model_dir, adapters=adapters, device=device, dtype=dtype,
                                       backend=backend, max_batch_tokens=max_batch_tokens)
    params = sum(p.numel() for n, p in hf.named_parameters() if "lora_" not in n)
    return Built(Path(model_dir), adapters, hf, engine, engine.model.cfg.vocab_size, params,
                 time.perf_counter() - t0)
