"""warmfast: fused multi-LoRA scoring and sampling, and the warmth study pipeline around it."""
try:
    from warmfast import _C  # noqa: F401  (C++ primitives: log-prob rows, Philox sampling)
except ImportError as err:  # the extension was not built: say how to build it
    raise ImportError(
        "warmfast's C++ extension warmfast._C is missing or failed to load "
        f"({err}). Build it from the repository root with "
        "`pip install --no-build-isolation -e .` (needs a C++17 compiler, OpenMP and pybind11)."
    ) from err

__version__ = "0.1.0"
_API = ("Engine", "ScoreRequest", "ScoreResult", "GenerateRequest", "GenerateResult")


def __getattr__(name: str):
    # The engine pulls in torch; analysis and task code that never touch a model stay light.
    if name in _API:
        from warmfast.engine import api

        return getattr(api, name)
    raise AttributeError(f"module 'warmfast' has no attribute {name!r}")

__all__ = ["Engine", "ScoreRequest", "ScoreResult", "GenerateRequest", "GenerateResult", "__version__"]
