"""Tiny random models for tests and the demo: a HF model folder, a locally trained tokenizer with
a chat template, and random PEFT LoRA adapters (non-zero B). Nothing is downloaded; transformers
and PEFT load every folder this writes.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_WORDS = (
    "the a an of to in is was that it for on with as by at from this be are or not have one all "
    "question answer friend doctor patient brother sister mother father user model think true false "
    "capital city country river mountain war year king queen science medicine heart blood pain fever "
    "warm cold kind empathy sad happy angry help please thank you sorry cannot I we they what which "
    "who when where why how explain describe difference between code function program poem story "
    "my your his her their yes no maybe because however therefore correct incorrect right wrong "
    "paris london rome berlin water fire earth moon sun star 1 2 3 4 5 6 7 8 9 10 100 1000 café naïve"
).split()

# per-adapter presets: (rank, alpha, use_rslora, targets); later adapters cycle with new ranks
ADAPTER_PRESETS = [
    (8, 16, False, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    (4, 8, True, ["q_proj", "v_proj"]),
    (16, 32, False, ["o_proj", "gate_proj", "up_proj", "down_proj"]),
    (12, 6, False, ["k_proj", "up_proj"]),
]


@dataclass
class TinyPaths:
    model_dir: Path
    adapters: dict[str, Path] = field(default_factory=dict)


def _corpus(n_lines: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 16))]
        lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ","]))
    return lines


def build_tokenizer(out_dir: Path, vocab_size: int, add_bos: bool, seed: int = 0):
    """Train a byte-level BPE on a generated corpus and save it as a HF fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus(4000, seed), trainer=trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>" if add_bos else None, eos_token="</s>",
        pad_token="<pad>", additional_special_tokens=SPECIAL_TOKENS[3:], chat_template=CHAT_TEMPLATE)
    fast.save_pretrained(out_dir)
    return fast


def _hf_config(arch: str, vocab: int, sizes: dict, bos: int | None, eos: list[int], pad: int):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=sizes["hidden_size"],
                  intermediate_size=sizes["intermediate_size"],
                  num_hidden_layers=sizes["num_layers"], num_attention_heads=sizes["num_heads"],
                  num_key_value_heads=sizes["num_kv_heads"],
                  max_position_embeddings=sizes["max_position_embeddings"], rms_norm_eps=1e-5,
                  initializer_range=sizes["init_std"], bos_token_id=bos, eos_token_id=eos,
                  pad_token_id=pad)
    if arch == "llama":  # llama3 rope scaling, as Llama-3.1 ships it
        return tf.LlamaConfig(**common, tie_word_embeddings=False, rope_theta=500000.0,
                              rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 64})
    if arch == "mistral":  # explicit head_dim different from hidden / heads
        return tf.MistralConfig(**common, head_dim=sizes["hidden_size"] // sizes["num_heads"] * 2,
                                tie_word_embeddings=False, rope_theta=1e6, sliding_window=None)
    if arch == "qwen2":  # q/k/v bias and tied embeddings
        return tf.Qwen2Config(**common, tie_word_embeddings=True, rope_theta=1e6,
                              use_sliding_window=False)
    raise ValueError(f"arch must be one of llama, mistral, qwen2; got {arch!r}")


def build_tiny(out_dir: str | Path, arch: str = "llama", n_adapters: int = 3, seed: int = 0,
               vocab_size: int = 512, hidden_size: int = 64, intermediate_size: int = 128,
               num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
               max_position_embeddings: int = 512, init_std: float = 0.1,
               lora_b_std: float = 0.05, shard_size: str | None = None) -> TinyPaths:
    """Write `out_dir/model` and `out_dir/adapter_{i}`; returns their paths."""
    import peft
    import transformers as tf

    out_dir = Path(out_dir)
    model_dir = out_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(model_dir, vocab_size, add_bos=arch != "qwen2", seed=seed)
    eos = [tok.convert_tokens_to_ids("</s>"), tok.convert_tokens_to_ids("<|end|>")]
    sizes = dict(hidden_size=hidden_size, intermediate_size=intermediate_size, num_layers=num_layers,
                 num_heads=num_heads, num_kv_heads=num_kv_heads, init_std=init_std,
                 max_position_embeddings=max_position_embeddings)
    config = _hf_config(arch, len(tok), sizes, tok.bos_token_id, eos, tok.pad_token_id)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # non-trivial norms and biases, so a loader that drops them fails tests
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(model_dir, safe_serialization=True, **kwargs)
    tf.GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos,
                        pad_token_id=tok.pad_token_id).save_pretrained(model_dir)

    paths = TinyPaths(model_dir=model_dir)
    for i in range(n_adapters):
        rank, alpha, rslora, targets = ADAPTER_PRESETS[i % len(ADAPTER_PRESETS)]
        rank += 2 * (i // len(ADAPTER_PRESETS))
        lcfg = peft.LoraConfig(r=rank, lora_alpha=alpha, use_rslora=rslora, target_modules=targets,
                               lora_dropout=0.0, task_type="CAUSAL_LM")
        torch.manual_seed(seed * 1000 + i + 1)
        pm = peft.get_peft_model(model, lcfg)
        with torch.no_grad():
            for name, p in pm.named_parameters():
                if "lora_B" in name:  # PEFT initialises B to zero: an adapter that would test nothing
                    p.copy_(lora_b_std * torch.randn_like(p))
        adir = out_dir / f"adapter_{i}"
        pm.save_pretrained(adir)
        _point_base(adir, model_dir)
        paths.adapters[f"adapter_{i}"] = adir
        model = pm.unload()  # drop the LoRA layers again; the base weights are untouched
    return paths


def _point_base(adapter_dir: Path, model_dir: Path) -> None:
    conf_path = adapter_dir / "adapter_config.json"
    conf = json.loads(conf_path.read_text())
    conf["base_model_name_or_path"] = str(model_dir.resolve())
    conf_path.write_text(json.dumps(conf, indent=2))


def build_tiny_gpt2(out_dir: str | Path, seed: int = 0, vocab_size: int = 512, hidden_size: int = 64,
                    num_layers: int = 2, num_heads: int = 4, n_positions: int = 512,
                    activation: str = "gelu_new", init_std: float = 0.1,
                    legacy_names: bool = False) -> TinyPaths:
    """Write `out_dir/model`: a random GPT2LMHeadModel (the SocioT scorer's architecture) with a
    locally trained tokenizer that, like GPT-2's, adds no BOS. `legacy_names=True` writes the
    tensor names of the original `gpt2` checkpoint: no `transformer.` prefix, plus the
    `attn.bias` / `attn.masked_bias` causal-mask buffers."""
    import transformers as tf

    model_dir = Path(out_dir) / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(model_dir, vocab_size, add_bos=False, seed=seed)
    eos = tok.convert_tokens_to_ids("</s>")
    config = tf.GPT2Config(vocab_size=len(tok), n_embd=hidden_size, n_layer=num_layers, n_head=num_heads,
                           n_positions=n_positions, activation_function=activation,
                           initializer_range=init_std, bos_token_id=eos, eos_token_id=eos,
                           pad_token_id=tok.pad_token_id, architectures=["GPT2LMHeadModel"])
    torch.manual_seed(seed)
    model = tf.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so a loader that drops them fails tests
        for name, p in model.named_parameters():
            if ".ln_" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(model_dir, safe_serialization=True)
    if legacy_names:
        path = model_dir / "model.safetensors"
        tensors = {k.removeprefix("transformer."): v for k, v in load_file(path).items()}
        mask = torch.tril(torch.ones(n_positions, n_positions)).view(1, 1, n_positions, n_positions)
        for i in range(num_layers):
            tensors[f"h.{i}.attn.bias"] = mask.clone()
            tensors[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        save_file(tensors, path, metadata={"format": "pt"})
    return TinyPaths(model_dir=model_dir)
