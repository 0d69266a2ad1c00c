"""warmfast: fused multi-LoRA scoring and sampling, and the warmth study pipeline around it."""
# The C++ extension warmfast._C is imported where the CPU path uses it (warmfast.native.C()), so
# a missing build fails only the calls that need it, with a message that says how to build it.

__version__ = "0.1.0"
_API = ("Engine", "ScoreRequest", "ScoreResult", "GenerateRequest", "GenerateResult")


def __getattr__(name: str):
    # The engine pulls in torch; analysis and task code that never touch a model stay light.
    if name in _API:
        from warmfast.engine import api

        return getattr(api, name)
    raise AttributeError(f"module 'warmfast' has no attribute {name!r}")

__all__ = ["Engine", "ScoreRequest", "ScoreResult", "GenerateRequest", "GenerateResult", "__version__"]
