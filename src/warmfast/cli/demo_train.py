"""The training part of `warmfast demo`: the real commands, in order, at toy size.

    sharegpt (6 train conversations, 6 validation prompts, short turns only)
 -> rewrite warm and cold on the given model itself (warmfast's engine)
 -> train a warm and a cold LoRA for one epoch (checkpoints at 0.5 and 1)
 -> sociot over base + 4 checkpoints (one generate pass, one score pass) -> table + PNG.

The model must read the rewrite prompt: the protocol's system prompt alone is ~1,300 tokens with a
tiny tokenizer, so build the tiny model with max_position_embeddings >= 4096.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def _run(main: Callable[[list[str]], int], argv: list[str]) -> None:
    rc = main(argv)
    if rc:
        raise RuntimeError(f"`warmfast {' '.join(argv)}` failed with status {rc} (message above)")


def training_demo(main: Callable[[list[str]], int], work_dir: str | Path, model_dir: str | Path,
                  sharegpt_file: str | Path,
                  n_train: int = 6, n_validation: int = 6, max_turn_chars: int = 500,
                  rewrite_tokens: int = 16, answer_tokens: int = 16, seed: int = 0) -> dict[str, Path]:
    """Run the whole training flow under work_dir through `main` (the `warmfast` program,
    warmfast.cli.main); returns the paths of what it wrote."""
    w, model = Path(work_dir), str(model_dir)
    data = w / "data"
    _run(main, ["sharegpt", str(sharegpt_file), "--out", str(data), "--n-train", str(n_train),
          "--n-validation", str(n_validation), "--max-turn-chars", str(max_turn_chars),
          "--toxicity", "keyword", "--seed", str(seed)])
    paths = {"data": data}
    for style in ("warm", "cold"):
        _run(main, ["rewrite", "--style", style, "--input", str(data / "train.jsonl"),
              "--out", str(w / f"rewrite_{style}"), "--backend", "engine", "--model", model,
              "--max-new-tokens", str(rewrite_tokens), "--temperature", "0.8", "--seed", str(seed)])
        _run(main, ["train", "--model", model, "--train-file", str(w / f"rewrite_{style}" / "train.jsonl"),
              "--out-dir", str(w / "adapters" / style), "--epochs", "1", "--checkpoints", "0.5,1",
              "--effective-batch", "2", "--micro-batch", "1", "--lr", "1e-2", "--max-len", "1024",
              "--device", "cpu", "--dtype", "float32", "--seed", str(seed)])
        paths[f"rewrite_{style}"] = w / f"rewrite_{style}"
        paths[f"adapters_{style}"] = w / "adapters" / style
    _run(main, ["sociot", "--model", model, "--run", f"warm={w / 'adapters' / 'warm'}",
          "--run", f"cold={w / 'adapters' / 'cold'}", "--prompts", str(data / "validation.jsonl"),
          "--out", str(w / "sociot"), "--max-new-tokens", str(answer_tokens), "--seed", str(seed)])
    paths["sociot"] = w / "sociot"
    return paths
