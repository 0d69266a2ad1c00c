"""`warmfast run CONFIG` and `warmfast judge CONFIG`: the study grid from the command line."""
from __future__ import annotations

import logging
import sys


def _load(args):
    from warmfast.run.config import ConfigError, load_config

    config = load_config(args.config)
    if args.output_dir is not None:  # same config, another run folder
        import dataclasses

        try:
            config = dataclasses.replace(config, output_dir=args.output_dir)
        except ConfigError as err:
            raise SystemExit(f"--output-dir: {err}") from None
    return config


def _where(args, err: Exception) -> str:
    """The error, prefixed with the config file when the message does not name it yet."""
    msg, src = str(err), getattr(args, "config", None) or getattr(args, "judge", None)
    return msg if src is None or msg.startswith(str(src)) else f"{src}: {msg}"


def _report(summary) -> None:
    for line in summary.lines():
        print(line)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """"RANK/WORLD", or "env" for torchrun's RANK and WORLD_SIZE variables; None: no sharding."""
    import os

    if text is None:
        return None
    if text == "env":
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise SystemExit("--shard env: RANK and WORLD_SIZE are not set (launch with torchrun)")
        text = f"{os.environ['RANK']}/{os.environ['WORLD_SIZE']}"
    rank, sep, world = text.partition("/")
    if not sep or not rank.isdigit() or not world.isdigit() or not int(rank) < int(world):
        raise SystemExit(f"--shard expects RANK/WORLD with 0 <= RANK < WORLD (or 'env'), got {text!r}")
    return int(rank), int(world)


def cmd_run(args) -> int:
    from warmfast.run.config import ConfigError
    from warmfast.run.runner import run

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shard = parse_shard(args.shard)
    try:
        config = _load(args)
        summary = run(config, progress=not args.no_progress, generate_only=args.generate_only, shard=shard)
    except ConfigError as err:
        print(f"warmfast run: {_where(args, err)}", file=sys.stderr)
        return 2
    _report(summary)
    return 0


def cmd_judge(args) -> int:
    from warmfast.run.config import ConfigError
    from warmfast.run.runner import run

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if (args.config is None) == (args.labelled is None):
        print("warmfast judge: give either a run CONFIG or --labelled DIR --judge FILE", file=sys.stderr)
        return 2
    try:
        if args.labelled is not None:
            return _judge_labelled(args)
        config = _load(args)
        summary = run(config, progress=not args.no_progress, skip_generation=True)
    except ConfigError as err:
        print(f"warmfast judge: {_where(args, err)}", file=sys.stderr)
        return 2
    _report(summary)
    return 0


def _judge_labelled(args) -> int:
    from pathlib import Path

    from warmfast.run.config import ConfigError, load_judge_spec
    from warmfast.run.labelled import judge_labelled

    if args.judge is None:
        raise ConfigError("--labelled needs --judge FILE (e.g. configs/judges/openai.yaml)")
    spec = load_judge_spec(Path(args.judge))
    if args.device or args.dtype:
        import dataclasses

        spec = dataclasses.replace(spec, device=args.device or spec.device, dtype=args.dtype or spec.dtype)
    out = args.output_dir or "runs/judge-labelled"
    result = judge_labelled(args.labelled, spec, out, per_task=args.per_task, progress=not args.no_progress)
    _report(result)
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="run a study grid from a YAML config (resumable: rerun after a kill)")
    p.add_argument("config", help="run config, e.g. configs/paper.yaml or configs/demo.yaml")
    p.add_argument("--output-dir", default=None, help="run folder (default: output_dir in the config)")
    p.add_argument("--generate-only", action="store_true", help="stop after generation (judge later)")
    p.add_argument("--shard", default=None, metavar="RANK/WORLD",
                   help="run one rank's share into its own store (RANK/WORLD, or 'env' under torchrun); "
                        "a later run without --shard merges the shards and exports")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("judge", help="judge and export a run's stored generations (no new generation; "
                                     "edit the config's judge: section to re-judge), or with --labelled, "
                                     "grade labelled outputs and report the judge's agreement and kappa")
    p.add_argument("config", nargs="?", default=None, help="the run's config")
    p.add_argument("--labelled", default=None, metavar="DIR",
                   help="outputs in the study layout with reference labels (e.g. warm_ai_2025/sample_data)")
    p.add_argument("--judge", default=None, metavar="FILE", help="judge config for --labelled (configs/judges/*.yaml)")
    p.add_argument("--per-task", type=int, default=None, help="--labelled: at most this many rows per task")
    p.add_argument("--device", default=None, help="--labelled: device of a log-prob judge")
    p.add_argument("--dtype", default=None, help="--labelled: dtype of a log-prob judge")
    p.add_argument("--output-dir", default=None, help="run folder (default: output_dir in the config; "
                                                      "--labelled: runs/judge-labelled)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_judge)
