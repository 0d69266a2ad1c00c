"""`warmfast` command line: one sub-command per job of the pipeline.

Each area of the package registers its own sub-commands with a `register(subparsers)` function;
this file only lists them, so a reader finds each command's code beside the code it drives.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (module path) -> each module defines register(subparsers) adding one or more commands.
COMMAND_MODULES = [
    "warmfast.engine.cli",
    "warmfast.analysis.cli",
    "warmfast.run.cli",
    "warmfast.train.cli",
    "warmfast.model.gguf",  # convert-gguf
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warmfast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
