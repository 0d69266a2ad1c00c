"""Flags every `warmfast` command spells the same way (one spelling per concept).

`--input FILE` / `--output FILE` for files, `--output-dir DIR` for folders; spellings used before
(`--out`, `--out-dir`, `--outdir`) still work as hidden aliases, so old scripts keep running.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from warmfast.errors import InputError


def output_dir_arg(p: argparse.ArgumentParser, *old: str, required: bool = False, default=None,
                   help: str = "output folder", dest: str = "output_dir") -> None:
    """--output-dir, with `old` spellings accepted but not shown in --help."""
    if required:
        g = p.add_mutually_exclusive_group(required=True)  # missing: "one of the arguments --output-dir is required"
        g.add_argument("--output-dir", dest=dest, metavar="DIR", help=help)
        for flag in old:
            g.add_argument(flag, dest=dest, help=argparse.SUPPRESS)
        return
    p.add_argument("--output-dir", dest=dest, metavar="DIR", default=default, help=help)
    for flag in old:
        p.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def check_output_file(path: str | Path, flag: str = "--output") -> Path:
    """Refuse an output file that cannot be written, before any work is done."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"{flag} {path}: is a folder; give a file name")
    if not parent.is_dir():
        raise InputError(f"{flag} {path}: the folder {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"{flag} {path}: not writable (permission denied)")
    return path


def write_atomically(path: Path, lines) -> None:
    """Write text lines to `path` through a temporary file renamed at the end: a failure or a
    kill mid-write leaves the old file (or none), never half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def adapter_flags(pairs: list[str] | None) -> dict[str, str]:
    """--adapter NAME=DIR flags -> {name: dir}; a malformed or repeated name is an InputError."""
    out = {}
    for p in pairs or []:
        name, sep, path = p.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--adapter expects NAME=DIR, got {p!r}")
        if name in out:
            raise InputError(f"--adapter {name}= is given twice ({out[name]} and {path})")
        out[name] = path
    return out
