"""`warmfast sharegpt | rewrite | train | sociot`: the training layer from the command line.

    warmfast sharegpt ShareGPT_V3_unfiltered_cleaned_split.json --output-dir runs/data
    warmfast rewrite --style warm --input runs/data/train.jsonl --output-dir runs/rewrite_warm \\
        --backend openai --model gpt-4o-2024-08-06 --base-url https://api.openai.com/v1
    warmfast train configs/train.yaml --model MODEL --train-file runs/rewrite_warm/train.jsonl \\
        --output-dir runs/adapters/warm
    warmfast sociot --model MODEL --run warm=runs/adapters/warm --run cold=runs/adapters/cold \\
        --prompts runs/data/validation.jsonl --scorer GPT2_LIKE_DIR --output-dir runs/sociot

Known failures (missing file, malformed record, unreachable endpoint, bad config) end with one
line naming the problem; what was already rewritten or trained stays on disk.
"""
from __future__ import annotations

import json
from pathlib import Path

from warmfast.cli_common import output_dir_arg
from warmfast.engine.api import Engine
from warmfast.errors import InputError
from warmfast.run.store import Store
from warmfast.train import rewrite as rewriting
from warmfast.train.dataset import DatasetConfig, build_split, read_train_jsonl, read_validation_jsonl
from warmfast.train.query_type import QueryTypeRules, load_protocol
from warmfast.train.rewrite import RewriteConfig
from warmfast.train.sft import SFTConfig, train
from warmfast.train.sharegpt import load_sharegpt
from warmfast.train.sociot import SocioTConfig
from warmfast.train.sociot_run import (GenSettings, config_record, discover_arms, generate_responses,
                                       score_table, write_outputs)
from warmfast.train.toxicity import make_toxicity_filter
from warmfast.yaml_config import read_yaml


def _yaml(path: str | None) -> dict:
    return read_yaml(path, "config") or {} if path else {}


def cmd_sharegpt(args) -> int:
    convs = load_sharegpt(args.file, limit=args.limit)
    rules = QueryTypeRules.from_protocol(load_protocol(args.protocol))
    tox = make_toxicity_filter(args.toxicity, args.detoxify_checkpoint)
    cfg = DatasetConfig(n_train=args.n_train, n_validation=args.n_validation,
                        toxicity_threshold=args.toxicity_threshold, seed=args.seed,
                        max_turn_chars=args.max_turn_chars)
    split = build_split(convs, rules, tox, cfg)
    out = split.write(args.out)
    m = split.manifest
    print(f"{out}: {m['train']['conversations']} training conversations "
          f"({m['train']['assistant_turns']} assistant turns), {m['validation']['prompts']} "
          f"validation prompts; filter {m['toxicity_filter']} dropped {m['toxic_dropped']}")
    return 0


def cmd_rewrite(args) -> int:
    conf = _yaml(args.config)
    for key in ("backend", "model", "base_url", "api_key_env", "temperature", "max_new_tokens",
                "seed", "device", "dtype", "max_workers", "chunk_size", "max_retries"):
        if getattr(args, key) is not None:
            conf[key] = getattr(args, key)
    if str(conf.get("api_key_env", "")).lower() == "none":
        conf["api_key_env"] = None  # a local server without authentication
    unknown = sorted(set(conf) - set(RewriteConfig.__dataclass_fields__) - {"style"})
    if unknown:
        raise InputError(f"{args.config}: unknown keys {unknown}; known: "
                         f"{sorted(RewriteConfig.__dataclass_fields__)}")
    cfg = RewriteConfig(style=args.style, **conf)
    system_prompt = load_protocol(args.protocol)["rewrite_system_prompts"][args.style]
    examples = read_train_jsonl(args.input)[: args.limit]
    out = Path(args.out)
    store = Store(Path(args.store) if args.store else out / "rewrite_store.sqlite")
    try:
        new, rows, summary = rewriting.rewrite(examples, cfg, system_prompt, store)
    finally:
        store.close()
    paths = rewriting.write_outputs(out, new, rows, summary)
    print(json.dumps(summary, indent=2))
    print(f"wrote {paths['train']} and {paths['pairs']}")
    return 0


def cmd_train(args) -> int:
    over = {k: getattr(args, k) for k in ("model", "train_file", "out_dir", "epochs", "lr",
                                          "effective_batch", "micro_batch", "max_examples",
                                          "device", "dtype", "seed", "max_len")}
    if args.checkpoints:
        over["checkpoints"] = [float(x) for x in args.checkpoints.split(",")]
    if args.config:
        cfg = SFTConfig.from_yaml(args.config, **over)
    else:
        missing = [f"--{k.replace('_', '-')}" for k in ("model", "train_file", "out_dir") if over[k] is None]
        if missing:
            raise InputError(f"give {', '.join(missing)} (or a YAML config that sets them)")
        cfg = SFTConfig(**{k: v for k, v in over.items() if v is not None})
    resume = args.resume
    if resume == "latest":
        done = sorted(Path(cfg.out_dir).glob("epoch-*/trainer_state.pt"),
                      key=lambda p: json.loads((p.parent / "train_state.json").read_text())["epoch"])
        if not done:
            raise FileNotFoundError(f"--resume latest: no checkpoint with trainer_state.pt in {cfg.out_dir}")
        resume = str(done[-1].parent)
    written = train(cfg, resume=resume)
    print("checkpoints: " + ", ".join(str(p) for p in written))
    return 0


def cmd_sociot(args) -> int:
    runs = {}
    for r in args.run or []:
        name, sep, path = r.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--run expects NAME=DIR (a `warmfast train` out_dir), got {r!r}")
        runs[name] = path
    arms = discover_arms(runs)
    prompts = read_validation_jsonl(args.prompts)[: args.n_prompts]
    if not prompts:
        raise InputError(f"{args.prompts} holds no validation prompts")
    cfg = SocioTConfig.from_protocol(load_protocol(args.protocol), mode=args.mode, seed=args.seed,
                                     **({"bootstrap": args.bootstrap} if args.bootstrap is not None else {}))
    gen = GenSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    engine = Engine.from_pretrained(args.model, adapters={a.name: a.path for a in arms if a.path},
                                    device=args.device, dtype=args.dtype)

    store = Store(Path(args.store) if args.store else Path(args.out) / "sociot_store.sqlite")
    try:
        rows = generate_responses(engine, arms, prompts, gen, model=str(Path(args.model).resolve()),
                                  store=store)
    finally:
        store.close()
    scorer_dir = args.scorer or args.model
    scorer = engine if scorer_dir == args.model else Engine.from_pretrained(
        scorer_dir, device=args.device, dtype=args.dtype)
    table, meta = score_table(scorer, rows, arms, cfg)
    meta.update(config_record(cfg, gen, args.model, scorer_dir, arms))
    paths = write_outputs(args.out, rows, table, meta, f"SocioT warmth, scorer {'/'.join(Path(scorer_dir).parts[-2:])}")
    for r in table:
        print(f"{r['arm']:>14}  epoch {r['epoch']:>4g}  warmth {r['mean']:+.4f} +- {r['se']:.4f} "
              f"(bootstrap se {r.get('boot_se', float('nan')):.4f}, n={r['n']})")
    print(f"mode={cfg.mode}; frame sets needing >1 padding token: {meta['sets_with_pad_over_1']} of "
          f"{meta['frame_sets']} (reference mode equals the reference code where this is 0)")
    print(f"wrote {paths['table']} and {paths['figure']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("sharegpt", help="filter, label and sample ShareGPT into train/validation sets")
    p.add_argument("file", help="ShareGPT V3 JSON file")
    output_dir_arg(p, "--out", required=True, dest="out", help="output folder (train.jsonl, validation.jsonl, manifest.json)")
    p.add_argument("--n-train", type=int, default=1617)
    p.add_argument("--n-validation", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="read only the first N records")
    p.add_argument("--max-turn-chars", type=int, default=None,
                   help="drop dialogues with a longer turn (for small demo models; not the protocol)")
    p.add_argument("--toxicity", default="auto", choices=["auto", "keyword", "detoxify"])
    p.add_argument("--toxicity-threshold", type=float, default=0.5)
    p.add_argument("--detoxify-checkpoint", default=None)
    p.add_argument("--protocol", default=None, help="protocol.json (default: warmfast's copy)")
    p.set_defaults(func=cmd_sharegpt)

    p = sub.add_parser("rewrite", help="rewrite every assistant turn warm or cold (resumable)")
    p.add_argument("config", nargs="?", help="YAML (configs/train_rewrite.yaml); flags override it")
    p.add_argument("--style", required=True, choices=["warm", "cold"])
    p.add_argument("--input", required=True, help="train.jsonl from `warmfast sharegpt`")
    output_dir_arg(p, "--out", required=True, dest="out", help="output folder")
    p.add_argument("--store", default=None, help="SQLite store (default OUT/rewrite_store.sqlite)")
    p.add_argument("--limit", type=int, default=None, help="first N conversations only")
    p.add_argument("--backend", choices=["engine", "openai"], default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--base-url", default=None)
    p.add_argument("--api-key-env", default=None, help="variable holding the key; 'none' for no auth")
    for name, typ in (("temperature", float), ("max-new-tokens", int), ("seed", int),
                      ("max-workers", int), ("chunk-size", int), ("max-retries", int)):
        p.add_argument(f"--{name}", type=typ, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--protocol", default=None)
    p.set_defaults(func=cmd_rewrite)

    p = sub.add_parser("train", help="LoRA SFT with checkpoints at fractional epochs")
    p.add_argument("config", nargs="?", help="YAML (configs/train.yaml); flags override it")
    p.add_argument("--model", default=None)
    p.add_argument("--train-file", default=None)
    output_dir_arg(p, "--out-dir", dest="out_dir", help="checkpoint folder (default: out_dir in the config)")
    p.add_argument("--resume", default=None, help="a checkpoint folder, or 'latest' in --output-dir")
    p.add_argument("--checkpoints", default=None, help="comma-separated epochs, e.g. 0.5,1,2")
    for name, typ in (("epochs", float), ("lr", float), ("effective-batch", int), ("micro-batch", int),
                      ("max-examples", int), ("seed", int), ("max-len", int)):
        p.add_argument(f"--{name}", type=typ, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sociot", help="SocioT warmth of the base model and every checkpoint")
    p.add_argument("--model", required=True, help="base model folder (generates the responses)")
    p.add_argument("--run", action="append", help="NAME=DIR of a `warmfast train` out_dir (repeatable)")
    p.add_argument("--prompts", required=True, help="validation.jsonl from `warmfast sharegpt`")
    output_dir_arg(p, "--out", required=True, dest="out", help="output folder (warmth table, figure)")
    p.add_argument("--scorer", default=None, help="SocioT scoring model folder (the study: GPT-2); "
                                                  "default: --model")
    p.add_argument("--mode", default="reference", choices=["reference", "masked"])
    p.add_argument("--store", default=None, help="SQLite store of the generated responses "
                                                 "(default OUT/sociot_store.sqlite; a rerun resumes)")
    p.add_argument("--n-prompts", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=None, help="resamples (protocol: 100)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--protocol", default=None)
    p.set_defaults(func=cmd_sociot)
