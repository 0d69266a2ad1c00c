"""`warmfast run CONFIG` and `warmfast judge CONFIG`: the study grid from the command line.

`--tensor-parallel T` (or `model.tensor_parallel: T`) splits the model over T ranks inside the
engine (engine/tensor_parallel.py): one process, which starts T-1 workers. Under torchrun,
`--shard env` splits the grid over data-parallel processes, each with its own engine (its T GPUs
from cuda:LOCAL_RANK*T).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from warmfast.errors import InputError
from warmfast.run.config import ConfigError, load_config, load_judge_spec
from warmfast.run.estimate import estimate_lines
from warmfast.run.labelled import judge_labelled
from warmfast.run.runner import run


def _load(args):
    config = load_config(args.config)
    if args.output_dir is not None:  # same config, another run folder
        try:
            config = dataclasses.replace(config, output_dir=args.output_dir)
        except ConfigError as err:
            raise InputError(f"--output-dir: {err}") from None
    tp = getattr(args, "tensor_parallel", None)
    if tp is not None:  # the flag overrides model.tensor_parallel
        if tp < 1:
            raise InputError(f"--tensor-parallel must be a positive integer, got {tp}")
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, tensor_parallel=tp))
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
    if text is None:
        return None
    if text == "env":
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise InputError("--shard env: RANK and WORLD_SIZE are not set (launch with torchrun)")
        text = f"{os.environ['RANK']}/{os.environ['WORLD_SIZE']}"
    rank, sep, world = text.partition("/")
    if not sep or not rank.isdigit() or not world.isdigit() or not int(rank) < int(world):
        raise InputError(f"--shard expects RANK/WORLD with 0 <= RANK < WORLD (or 'env'), got {text!r}")
    return int(rank), int(world)


def _execute(args, shard: tuple[int, int] | None, **kwargs) -> int:
    """Run the grid and report."""
    try:
        config = _load(args)
        summary = run(config, progress=not args.no_progress, shard=shard, **kwargs)
    except ConfigError as err:  # config, store, lock, judge endpoint, a stop signal: main() prints it
        raise ConfigError(_where(args, err)) from err
    _report(summary)
    return 0


def cmd_run(args) -> int:
    if getattr(args, "estimate", False):  # run/estimate.py: hours on a card, nothing is run
        return _estimate(args)
    shard = parse_shard(args.shard)
    return _execute(args, shard, generate_only=args.generate_only)


def _estimate(args) -> int:
    try:
        lines = estimate_lines(_load(args), args.card, Path(args.records))
    except ConfigError as err:
        print(f"warmfast run --estimate: {_where(args, err)}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def cmd_judge(args) -> int:
    if (args.config is None) == (args.labelled is None):
        raise InputError("give either a run CONFIG or --labelled DIR --judge FILE")
    if args.labelled is None:  # a run's stored generations
        return _execute(args, None, skip_generation=True)
    try:
        return _judge_labelled(args)
    except ConfigError as err:
        raise ConfigError(_where(args, err)) from err


def _judge_labelled(args) -> int:
    if args.judge is None:
        raise ConfigError("--labelled needs --judge FILE (e.g. configs/judges/openai.yaml)")
    spec = load_judge_spec(Path(args.judge))
    if args.device or args.dtype:
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
    p.add_argument("--tensor-parallel", type=int, default=None, metavar="T",
                   help="split the model over T ranks (overrides model.tensor_parallel): T-1 worker "
                        "processes start with the engine; on CUDA T GPUs each")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--estimate", action="store_true",
                   help="print the grid's expected hours on --card (from bench records) and run nothing")
    p.add_argument("--card", default="H200", help="--estimate: the card, as bench records name it")
    p.add_argument("--records", default="bench/results", help="--estimate: folder of bench records")
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
    p.add_argument("--tensor-parallel", type=int, default=None, metavar="T",
                   help="split the model over T ranks (overrides model.tensor_parallel)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_judge)
