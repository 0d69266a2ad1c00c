"""The one reader of YAML files (experiment definitions: run, judge, training and study configs).

PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML lets the
last one win silently), and every failure is one `ConfigError` line naming the file, line and
column. Validating what the YAML holds is the caller's job (run/config.py, train/sft.py, ...).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from warmfast.errors import ConfigError, MissingPathError


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> Python objects; an error is one ConfigError line naming source, line and column."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        what = " ".join(x for x in (err.context, err.problem) if x)
        raise ConfigError(f"{where}: not valid YAML: {what}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from None


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """The parsed YAML file at `path`; `what` names it in the error for a missing file."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"{what} {path} does not exist" + (" (a folder, not a file)" if path.is_dir() else ""))
    return parse_yaml(read_text(path), str(path))
