"""`warmfast run CONFIG` and `warmfast judge CONFIG`: the study grid from the command line.

Under torchrun, `--shard env` splits the grid over data-parallel groups, and `--tensor-parallel T`
(or `model.tensor_parallel: T`) makes each group T consecutive ranks running one tensor-parallel
engine: data-parallel shard (RANK // T, WORLD_SIZE // T); run/runner.py `run_rank` and
run/lockstep.py say who does what.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import torch.distributed as dist

from warmfast.errors import InputError, WarmfastError
from warmfast.model.parallel import (TensorParallelError, check_world, finish_distributed, init_distributed,
                                     parallel_layout)
from warmfast.run.config import ConfigError, load_config, load_judge_spec
from warmfast.run.estimate import estimate_lines
from warmfast.run.labelled import judge_labelled
from warmfast.run.runner import run, run_rank


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


def data_parallel_shard(text: str | None, shard: tuple[int, int] | None, n: int,
                        world: int) -> tuple[int, int] | None:
    """The data-parallel shard of this rank's tensor-parallel group, in a torchrun world of `world`
    ranks with groups of n: "env" -> (RANK // n, WORLD_SIZE // n); an explicit RANK/WORLD is the
    shard of this launch's single group; None is allowed for a single group only."""
    check_world(n, world)
    if text == "env":
        return shard[0] // n, shard[1] // n
    if world != n:
        what = f"--shard {text}" if text is not None else "a run without --shard"
        raise TensorParallelError(
            f"{what} with tensor_parallel={n} in a torchrun world of {world} ranks: the world holds "
            f"{world // n} tensor-parallel groups, so use --shard env (each group then writes its own "
            f"store.shard<group>of{world // n}.sqlite)")
    return shard


def _start(config, shard_text: str | None, shard: tuple[int, int] | None):
    """(ParallelLayout, data-parallel shard) of this rank, or (None, shard) without tensor parallel.
    Every check that can fail runs before the process group exists, identically on every rank."""
    n = config.model.tensor_parallel
    if n == 1:
        return None, shard

    if "WORLD_SIZE" not in os.environ:
        raise TensorParallelError(f"model.tensor_parallel={n} needs torchrun (`torchrun --nproc-per-node {n} "
                                  f"-m warmfast ...`, or --tensor-parallel 1); WORLD_SIZE is not set")
    dp_shard = data_parallel_shard(shard_text, shard, n, int(os.environ["WORLD_SIZE"]))
    init_distributed(config.model.device)
    return parallel_layout(n), dp_shard  # its (dp_rank, dp_size) is dp_shard under --shard env


def _drop(layout) -> None:
    """After an error: leave the process group without waiting for ranks that may never come."""
    if layout is not None and dist.is_initialized():
        dist.destroy_process_group()


def _execute(args, name: str, shard_text: str | None, shard: tuple[int, int] | None, **kwargs) -> int:
    """Run the grid (one process, or this rank of a tensor-parallel group) and report."""
    layout = None
    try:
        config = _load(args)
        layout, shard = _start(config, shard_text, shard)
        if layout is None:
            summary = run(config, progress=not args.no_progress, shard=shard, **kwargs)
        else:  # progress bars and the report on TP rank 0 only (the other ranks return None)
            summary = run_rank(config, layout, progress=not args.no_progress, shard=shard, **kwargs)
    except WarmfastError as err:  # config, store, lock, judge endpoint, a stop signal: main() prints it
        _drop(layout)
        if isinstance(err, ConfigError):
            raise ConfigError(_where(args, err)) from err
        raise
    if summary is not None:
        _report(summary)
    if layout is not None:
        finish_distributed()  # every rank of every group, in step
    return 0


def cmd_run(args) -> int:
    if getattr(args, "estimate", False):  # run/estimate.py: hours on a card, nothing is run
        return _estimate(args)
    shard = parse_shard(args.shard)
    return _execute(args, "run", args.shard, shard, generate_only=args.generate_only)


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
    if args.labelled is None:  # a run's stored generations (one tensor-parallel group under torchrun)
        return _execute(args, "judge", None, None, skip_generation=True)
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
                   help="ranks per tensor-parallel engine (overrides model.tensor_parallel); under torchrun "
                        "with --shard env the world is WORLD_SIZE/T data-parallel groups of T ranks")
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
                   help="ranks of the tensor-parallel engine under torchrun (overrides model.tensor_parallel)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_judge)
