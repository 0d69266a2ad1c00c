"""`warmfast lm-eval ARGS...`: lm-eval's own command line, with the `warmfast` backend registered.

lm-eval 0.4.13 finds a backend only once its module is imported (it does not read entry points),
so this command imports warmfast.integrations.lm_eval_backend and hands every argument, unchanged,
to lm-eval's command line (`lm-eval run ...`, the legacy form without `run`, `ls`, `validate`).

`--model warmfast --model_args ...,arm=all` evaluates the base model and every adapter from one
scoring pass: lm-eval runs once per arm (base first, then the adapters in the order given) with
`arm=NAME,all_arms=True` (and `peft=DIR` for an adapter); the first run scores every request for
every arm in the same batches, the others read those answers. Each arm writes the ordinary
lm-eval results of its own, under --output_path in the folder lm-eval names after the model
(`peft=` for an adapter, `pretrained=` for the base: the folders that `hf` + `peft=` runs get).
`--use_cache PATH` becomes PATH_<arm> per run: lm-eval keys cached responses by the request alone.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from pathlib import Path

from warmfast.integrations.engines import BASE, parse_adapters


def arm_runs(model: str | None, model_args, output_path: str | None) -> list[tuple[str, dict]] | None:
    """(arm, model_args) of each lm-eval run `arm=all` stands for; None when arm=all is not asked."""
    if model != "warmfast" or not isinstance(model_args, dict) or model_args.get("arm") != "all":
        return None
    where = "warmfast lm-eval --model_args arm=all"
    if "peft" in model_args:
        raise SystemExit(f"{where}: the arms come from adapters=NAME:DIR|...; drop peft={model_args['peft']}")
    if output_path and Path(output_path).suffix == ".json":
        raise SystemExit(f"{where}: --output_path {output_path} is a file, and each arm writes results "
                         "of its own; give a folder")
    try:
        adapters = parse_adapters(model_args.get("adapters"), where)
    except (TypeError, ValueError) as err:
        raise SystemExit(str(err)) from err
    runs = []
    for arm in [BASE, *adapters]:
        args = {**model_args, "arm": arm, "all_arms": True}
        if arm != BASE:
            args["peft"] = adapters[arm]  # lm-eval names the results folder after peft=
        runs.append((arm, args))
    return runs


def arm_namespace(parsed: argparse.Namespace, arm: str, model_args: dict) -> argparse.Namespace:
    """lm-eval's parsed arguments for one arm's run."""
    one = copy.deepcopy(parsed)  # lm-eval's run fills dicts of its namespace in place
    one.model_args = model_args
    if getattr(parsed, "use_cache", None):  # lm-eval keys cached responses by the request alone
        one.use_cache = f"{parsed.use_cache}_{arm}"
    return one


@contextlib.contextmanager
def task_index_once():
    """lm-eval indexes every task YAML it ships (about 24 s on the 2-vCPU development machine) each
    time a run starts; the arm runs of one command index once and share it. The index is read-only
    after it is built; lm-eval's own function is put back afterwards."""
    from lm_eval.tasks._index import TaskIndex

    original = TaskIndex.__dict__["build"]
    built: dict[tuple, dict] = {}

    def build(paths, *, resolve_includes=True):
        paths = list(paths)
        key = (tuple(str(p) for p in paths), resolve_includes)
        if key not in built:
            built[key] = original.__func__(paths, resolve_includes=resolve_includes)
        return dict(built[key])

    TaskIndex.build = staticmethod(build)
    try:
        yield
    finally:
        TaskIndex.build = original


def run_lm_eval(argv: list[str]) -> int:
    try:
        from lm_eval._cli import HarnessCLI
        from lm_eval.utils import setup_logging
    except ImportError as err:
        raise SystemExit(f"warmfast lm-eval needs lm-evaluation-harness ({err}): "
                         "pip install 'warmfast[lm-eval]' (tested with lm-eval 0.4.13)") from err
    from warmfast.integrations import lm_eval_backend  # noqa: F401 (needs lm-eval; registers the "warmfast" backend)

    setup_logging()
    cli = HarnessCLI()
    saved, sys.argv = sys.argv, ["lm-eval", *argv]
    try:
        parsed = cli.parse_args()  # lm-eval's parser, its legacy form (no `run`) included
    finally:
        sys.argv = saved
    runs = arm_runs(getattr(parsed, "model", None), getattr(parsed, "model_args", None),
                    getattr(parsed, "output_path", None))
    if runs is None:
        cli.execute(parsed)
        return 0
    try:
        with task_index_once():
            for i, (arm, model_args) in enumerate(runs, 1):
                print(f"warmfast lm-eval: arm {arm!r} ({i}/{len(runs)})", file=sys.stderr)
                cli.execute(arm_namespace(parsed, arm, model_args))
    finally:
        lm_eval_backend.clear_arm_memo()
    return 0


def cmd_lm_eval(args) -> int:
    return run_lm_eval(args.lm_eval_args)


def register(sub) -> None:
    # every argument, --help included, belongs to lm-eval: this parser recognises no options
    p = sub.add_parser("lm-eval", add_help=False, prefix_chars="\x00",
                       help="lm-evaluation-harness with the warmfast backend (--model warmfast); "
                            "arm=all scores every adapter in one pass")
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_lm_eval)
