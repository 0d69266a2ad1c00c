"""The one error base of warmfast: every failure a user can cause or fix is a `WarmfastError`.

Contract (the CLI's, and every caller's): the message is one line that names the file, field or
request and the values involved; `warmfast ...` prints it as `warmfast COMMAND: message` and exits
2 (`--debug` shows the traceback as well). Anything else reaching the top is a bug in warmfast.

Each layer keeps its own subclass (model.config.ModelConfigError, model.adapters.AdapterError,
model.weights.WeightsError, run.store.StoreError, tasks.item.TaskDataError,
openai_client.EndpointError, ...); they also derive from the builtin they always were (ValueError,
RuntimeError, ...) so callers catching those keep working. `ConfigError` (a YAML experiment
config) is here because the one YAML reader (yaml_config.py) sits below every layer reading one.
This module imports nothing of warmfast, so every layer can use it.
"""
from __future__ import annotations


class WarmfastError(Exception):
    """A failure the user can fix (bad input, missing file, unreachable endpoint, busy run folder)."""

    exit_code = 2


class InputError(WarmfastError, ValueError):
    """A value given by the user (a flag, a field of an input row, a request) that cannot be used."""


class RequestError(InputError):
    """One request of a batch (score or generate) is invalid; `index` is its position in the
    caller's list (set by the engine's validation loop), so a CLI can name the input line."""

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index


class UnknownAdapterError(RequestError, KeyError):
    """A request names an adapter that is not loaded. (A KeyError too, for older callers.)"""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(InputError):
    """An experiment config (YAML: a run, a judge, training) that cannot be used; the message names
    the file and the key."""


class MissingPathError(WarmfastError, FileNotFoundError):
    """A file or folder the user named does not exist (or lacks a file it must hold)."""


class Stopped(WarmfastError):
    """The run stopped on a signal after its last commit; rerunning the same command resumes.
    exit_code: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(err: BaseException) -> str:
    """The error's message on one line (a message spanning lines is joined with '; ')."""
    text = str(err).strip() or type(err).__name__
    parts = [p.strip() for p in text.splitlines() if p.strip()]
    return "; ".join(parts)
