"""LoRA SFT with checkpoints at fractional epochs (PROTOCOL section 2), on transformers + PEFT.

The data stream: epoch k is a permutation of the examples seeded by (seed, k). An optimizer step
takes up to `effective_batch` examples from the stream (gradient accumulation over micro-batches
of `micro_batch`), but never crosses a checkpoint boundary: a checkpoint at epoch e is saved after
exactly floor(e * N) examples, so every checkpoint sits at its exact fractional epoch (the step
before a boundary may be short). The loss of a step is the mean over the assistant tokens of all
its examples, i.e. the same as one big batch. AdamW, linear decay to 0 over all steps, no warm-up.

Checkpoints: `out_dir/epoch-<e>/` is a PEFT adapter folder (adapter_config.json +
adapter_model.safetensors, base_model_name_or_path = the model folder) that PEFT and warmfast
load, plus `trainer_state.pt` (optimizer, scheduler, RNG, position in the stream) for resuming.
A resumed run continues the same stream with the same RNG, so it ends where an uninterrupted run
ends. `out_dir/train_log.jsonl` gets one line per optimizer step.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from warmfast.errors import InputError
from warmfast.train.dataset import read_train_jsonl
from warmfast.train.sft_data import Tokenized, collate, tokenize_chat
from warmfast.yaml_config import read_yaml

log = logging.getLogger(__name__)
# settings a resumed run must share with the run that wrote the checkpoint (they fix the stream,
# the schedule and the adapter's shape); device, dtype, micro_batch and out_dir may change
RESUME_KEYS = ("model", "r", "alpha", "dropout", "target_modules", "lr", "weight_decay", "max_len",
               "effective_batch", "epochs", "checkpoints", "seed", "max_examples")
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class SFTConfig:
    """Protocol defaults (rank 8, alpha 16, dropout 0.1, lr 1e-5, max len 1024, batch 16, 10 epochs)."""
    model: str
    train_file: str
    out_dir: str
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    lr: float = 1e-5
    weight_decay: float = 0.0
    max_len: int = 1024
    effective_batch: int = 16
    micro_batch: int = 4
    epochs: float = 10
    checkpoints: list[float] = field(default_factory=lambda: [0.5, 1, 1.5, 2, 4, 6, 8, 10])
    seed: int = 0
    device: str = "auto"   # auto: cuda when available, else cpu
    dtype: str = "auto"    # auto: bfloat16 on cuda, float32 on cpu
    gradient_checkpointing: bool = False
    max_examples: int | None = None  # use only the first N training examples (demo, tests)

    def __post_init__(self):
        if self.r < 1 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise InputError(f"LoRA settings r={self.r}, alpha={self.alpha}, dropout={self.dropout}: "
                             "need r >= 1, alpha > 0, 0 <= dropout < 1")
        if self.lr <= 0 or self.max_len < 2 or self.epochs <= 0:
            raise InputError(f"lr={self.lr}, max_len={self.max_len}, epochs={self.epochs} must be positive "
                             "(max_len >= 2)")
        if self.micro_batch < 1 or self.effective_batch < 1 or self.effective_batch % self.micro_batch:
            raise InputError(f"effective_batch={self.effective_batch} must be a positive multiple of "
                             f"micro_batch={self.micro_batch}")
        self.checkpoints = sorted(float(e) for e in self.checkpoints)
        bad = [e for e in self.checkpoints if not 0 < e <= self.epochs]
        if bad or not self.checkpoints:
            raise InputError(f"checkpoints {self.checkpoints} must be non-empty and in (0, epochs={self.epochs}]")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise InputError(f"dtype must be auto, float32 or bfloat16; got {self.dtype!r}")

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "SFTConfig":
        path = Path(path)
        raw = read_yaml(path, "training config") or {}
        raw.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"{path}: unknown keys {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        missing = [k for k in ("model", "train_file", "out_dir") if k not in raw]
        if missing:
            raise InputError(f"{path}: missing required keys {missing}")
        return cls(**raw)


def checkpoint_name(epoch: float) -> str:
    return f"epoch-{epoch:g}"


def plan_steps(n: int, cfg: SFTConfig) -> tuple[list[int], dict[int, float]]:
    """Stream position (examples seen) after every optimizer step, and boundary -> checkpoint epoch."""
    total = math.floor(cfg.epochs * n)
    marks = {math.floor(e * n): e for e in cfg.checkpoints}
    if len(marks) != len(cfg.checkpoints):
        raise InputError(f"with {n} examples, checkpoints {cfg.checkpoints} fall on the same example "
                         f"counts {[math.floor(e * n) for e in cfg.checkpoints]}; use fewer checkpoints "
                         "or more examples")
    if 0 in marks:
        raise InputError(f"checkpoint at epoch {marks[0]} falls before the first example with {n} examples")
    ends, pos = [], 0
    cuts = sorted(set(marks) | {total})
    for cut in cuts:
        while pos < cut:
            pos = min(pos + cfg.effective_batch, cut)
            ends.append(pos)
    return ends, marks


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"{seed}:epoch:{epoch}").shuffle(order)
    return tuple(order)


def example_at(pos: int, n: int, seed: int) -> int:
    """Index of the example at stream position `pos` (epoch pos // n, seeded permutation)."""
    epoch, k = divmod(pos, n)
    return _epoch_order(n, seed, epoch)[k]


def _device_dtype(cfg: SFTConfig) -> tuple[torch.device, torch.dtype]:
    dev = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if cfg.device == "auto" else cfg.device))
    if cfg.dtype == "auto":
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    return dev, {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]


def _rng_state(dev: torch.device) -> dict:
    st = {"cpu": torch.get_rng_state()}
    if dev.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(dev)
    return st


def _set_rng_state(st: dict, dev: torch.device) -> None:
    torch.set_rng_state(st["cpu"])
    if dev.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], dev)


def _load_model(cfg: SFTConfig, dev: torch.device, dtype: torch.dtype):
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (Path(cfg.model) / "config.json").is_file():
        raise FileNotFoundError(f"model folder {cfg.model} has no config.json")
    tok = AutoTokenizer.from_pretrained(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype).to(dev)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    torch.manual_seed(cfg.seed)  # LoRA A init
    lcfg = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                           target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    return tok, peft.get_peft_model(model, lcfg)


def _step_loss(model, batch: list[Tokenized], n_targets: int, pad_id: int, dev) -> torch.Tensor:
    """Sum of assistant-token NLL over `batch`, divided by the step's target count."""
    t = {k: v.to(dev) for k, v in collate(batch, pad_id).items()}
    logits = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits  # [B, L, V]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1),
                                            t["labels"][:, 1:].flatten(), ignore_index=-100,
                                            reduction="sum")
    return nll / n_targets


def train(cfg: SFTConfig, resume: str | Path | None = None, progress: bool = True) -> list[Path]:
    """Run (or resume) LoRA SFT; returns the checkpoint folders written, in epoch order."""
    from peft import set_peft_model_state_dict
    from transformers import get_linear_schedule_with_warmup

    out = Path(cfg.out_dir)
    dev, dtype = _device_dtype(cfg)
    examples = read_train_jsonl(cfg.train_file)[: cfg.max_examples]
    if not examples:
        raise InputError(f"{cfg.train_file} holds no training examples")
    tok, model = _load_model(cfg, dev, dtype)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    data = [tokenize_chat(tok, ex.id, ex.messages, cfg.max_len) for ex in examples]
    empty = [d.id for d in data if d.n_targets == 0]
    if empty:
        raise InputError(f"{len(empty)} examples have no assistant token within max_len={cfg.max_len} "
                         f"(first: {empty[:3]}); raise max_len or drop them")
    n = len(data)
    cut = sum(d.truncated for d in data)
    if cut:
        log.warning("%d of %d examples are longer than max_len=%d tokens and were cut", cut, n, cfg.max_len)
    ends, marks = plan_steps(n, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, 0, len(ends))
    step, pos = 0, 0
    if resume is not None:
        step, pos = _resume(Path(resume), model, opt, sched, dev, n, cfg, set_peft_model_state_dict)
    elif out.is_dir() and any(out.glob("epoch-*/adapter_config.json")):
        raise FileExistsError(f"{out} already holds checkpoints; resume from one (--resume "
                              f"{out}/epoch-...) or choose a new out_dir, so nothing trained is lost")
    else:
        torch.manual_seed(cfg.seed + 1)  # dropout stream
    out.mkdir(parents=True, exist_ok=True)
    _trim_log(out / "train_log.jsonl", step)  # steps after the checkpoint are redone
    model.train()
    written = []
    bar = tqdm(total=len(ends), initial=step, desc=f"sft {out.name}", disable=not progress)
    with open(out / "train_log.jsonl", "a") as logf:
        while step < len(ends):
            batch = [data[example_at(p, n, cfg.seed)] for p in range(pos, ends[step])]
            n_targets = sum(b.n_targets for b in batch)
            opt.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for i in range(0, len(batch), cfg.micro_batch):
                loss = _step_loss(model, batch[i:i + cfg.micro_batch], n_targets, pad_id, dev)
                loss.backward()
                loss_sum += loss.item()
            opt.step()
            sched.step()
            pos, step = ends[step], step + 1
            rec = {"step": step, "examples_seen": pos, "epoch": pos / n, "loss": loss_sum,
                   "lr": sched.get_last_lr()[0], "n_targets": n_targets}
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            bar.set_postfix(loss=f"{loss_sum:.4f}", epoch=f"{pos / n:.2f}")
            bar.update(1)
            if pos in marks:
                written.append(_save(out / checkpoint_name(marks[pos]), model, opt, sched, dev,
                                     step, pos, n, marks[pos], cfg))
    bar.close()
    return written


def _trim_log(path: Path, step: int) -> None:
    """Keep the log lines of steps <= `step` (a resumed run logs the later steps again)."""
    if path.is_file():
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in keep))


def _save(path: Path, model, opt, sched, dev, step: int, pos: int, n: int, epoch: float,
          cfg: SFTConfig) -> Path:
    model.save_pretrained(path)
    conf_path = path / "adapter_config.json"  # point at the local base folder (warmfast checks it)
    conf = json.loads(conf_path.read_text())
    conf["base_model_name_or_path"] = str(Path(cfg.model).resolve())
    conf_path.write_text(json.dumps(conf, indent=2))
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": _rng_state(dev),
                "step": step, "examples_seen": pos, "n_examples": n}, path / "trainer_state.pt")
    (path / "train_state.json").write_text(json.dumps(
        {"epoch": epoch, "exact_epoch": pos / n, "step": step, "examples_seen": pos, "n_examples": n,
         "config": asdict(cfg)}, indent=2))
    log.info("saved %s (epoch %g = %d/%d examples, step %d)", path, epoch, pos, n, step)
    return path


def _resume(path: Path, model, opt, sched, dev, n: int, cfg: SFTConfig, set_state) -> tuple[int, int]:
    state_file, weights = path / "trainer_state.pt", path / "adapter_model.safetensors"
    for f in (state_file, weights):
        if not f.is_file():
            raise FileNotFoundError(f"cannot resume from {path}: {f.name} is missing")
    st = torch.load(state_file, map_location="cpu", weights_only=False)
    saved = json.loads((path / "train_state.json").read_text())["config"]
    now = asdict(cfg)
    now["checkpoints"] = [float(e) for e in now["checkpoints"]]
    now["model"], saved["model"] = (str(Path(m).resolve()) for m in (now["model"], saved["model"]))
    differ = {k: (saved.get(k), now[k]) for k in RESUME_KEYS if saved.get(k) != now[k]}
    if differ:
        raise InputError(f"cannot resume from {path}: settings differ from the run that wrote it "
                         f"(key: (checkpoint, now)): {differ}")
    if st["n_examples"] != n:
        raise InputError(f"cannot resume from {path}: it was trained on {st['n_examples']} examples, "
                         f"{cfg.train_file} now gives {n}")
    result = set_state(model, load_file(str(weights)))
    if getattr(result, "unexpected_keys", None):
        raise InputError(f"{weights}: keys the model does not have: {result.unexpected_keys[:3]}")
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    _set_rng_state(st["rng"], dev)
    log.info("resuming from %s at step %d (%d examples seen)", path, st["step"], st["examples_seen"])
    return st["step"], st["examples_seen"]
