"""`warmfast` command line: one sub-command per job of the pipeline.

Each area of the package registers its own sub-commands with a `register(subparsers)` function;
this file only lists them, so a reader finds each command's code beside the code it drives. This
package is the top layer (docs/architecture.md): the engine's commands (cli/engine.py), the demos
(cli/demo.py, cli/real_demo.py) and convert-gguf (cli/gguf.py) live here, since they drive several
layers below; run/, train/, analysis/ and integrations/ keep their own `cli.py` modules, which
import only their own layer and those below it. A command that drives other commands (the demos)
gets the program as `args.main` instead of importing this package (which imports it).

The error contract: a failure the user can fix (`WarmfastError`, a missing or unwritable file)
prints one line, `warmfast COMMAND: message`, and exits 2; `--debug` adds the traceback. Ctrl-C
exits 130 and SIGTERM 143, with one line (`warmfast run` first finishes its current commit and
says how far it got: run/signals.py). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import traceback

from warmfast import __version__
from warmfast.analysis import cli as analysis_cli
from warmfast.cli import demo, engine, gguf
from warmfast.errors import Stopped, WarmfastError, one_line
from warmfast.integrations import lm_eval_cli
from warmfast.run import cli as run_cli
from warmfast.serve import cli as serve_cli
from warmfast.train import cli as train_cli

# each module defines register(subparsers) adding one or more commands
COMMAND_MODULES = [
    engine,  # score, generate, tiny
    demo,  # demo (--real: cli/real_demo.py)
    analysis_cli,
    run_cli,
    train_cli,
    lm_eval_cli,  # `warmfast lm-eval` (needs the lm-eval extra when run)
    gguf,  # convert-gguf
    serve_cli,  # `warmfast serve` (fastapi, uvicorn, prometheus_client loaded when it runs)
]
LOG_LEVELS = ("debug", "info", "warning", "error")
# commands that keep each finished batch in a store: an interruption loses only the batch in flight
_RESUME = {c: "; results saved before it are kept: rerun the same command to resume"
           for c in ("run", "judge", "rewrite", "sociot", "train")}


class Terminated(BaseException):
    """SIGTERM, raised where the main thread is (like KeyboardInterrupt for Ctrl-C)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warmfast", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"warmfast {__version__}")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=None,
                        help="messages shown on stderr (default info; -v = debug, -q = warning)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    parser.add_argument("--debug", action="store_true", help="on an error, print the traceback too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    parser.set_defaults(main=main)  # the demos run other commands through it
    return parser


def _log_level(args) -> int:
    if args.log_level is not None:
        return getattr(logging, args.log_level.upper())
    if args.verbose or args.debug:
        return logging.DEBUG
    return logging.WARNING if args.quiet else logging.INFO


def _configure_logging(level: int) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    # other libraries' records that reach the root (transformers propagates them when CI is set)
    # show only at -v / --debug or from ERROR up: they keep their own handlers otherwise
    handler.addFilter(lambda r: r.name.split(".")[0] == "warmfast" or level <= logging.DEBUG
                      or r.levelno >= logging.ERROR)
    handler._warmfast = True  # ours: replaced, not stacked, when main() runs again in one process
    root.handlers = [h for h in root.handlers if not getattr(h, "_warmfast", False)] + [handler]
    root.setLevel(level)
    logging.getLogger("warmfast").setLevel(level)


def _on_sigterm(signum, frame):
    raise Terminated()


def _fail(command: str, message: str, debug: bool, code: int) -> int:
    if debug:
        traceback.print_exc()
    print(f"warmfast {command}: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = _log_level(args)
    _configure_logging(level)
    args.quiet = level > logging.INFO  # progress bars are info too: -q or a higher level hides them
    if args.quiet and hasattr(args, "no_progress"):
        args.no_progress = True
    previous = None
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # (only the main thread may set it)
        try:
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:
            previous = None
    try:
        return int(args.func(args) or 0)
    except Stopped as err:
        if threading.current_thread() is threading.main_thread() and argv is None:  # the program, not a caller
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopped cleanly: a second Ctrl-C changes nothing
        return _fail(args.command, str(err), False, err.exit_code)
    except WarmfastError as err:
        return _fail(args.command, one_line(err), args.debug, err.exit_code)
    except OSError as err:  # a file the user named: missing, unwritable, a folder, disk full
        where = f"{err.filename}: " if err.filename else ""
        return _fail(args.command, f"{where}{err.strerror or one_line(err)}", args.debug, 2)
    except SystemExit as err:  # `raise SystemExit("message")` in a command: one line, exit 2
        if isinstance(err.code, str):
            return _fail(args.command, one_line(err.code.removeprefix(f"warmfast {args.command}: ")), False, 2)
        raise
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted (Ctrl-C)" + _RESUME.get(args.command, ""), args.debug, 130)
    except Terminated:
        return _fail(args.command, "terminated (SIGTERM)" + _RESUME.get(args.command, ""), args.debug, 143)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def console_main() -> int:
    """The `warmfast` program: main(), and once it stopped on a signal, further Ctrl-C are ignored
    while the process exits (one landing in interpreter shutdown would print a traceback)."""
    code = main()
    if code in (130, 143):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(console_main())
