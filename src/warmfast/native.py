"""The C++ extension warmfast._C, imported where it is used (the CPU path), never at package import.

A GPU run needs none of it (Triton samples and scores there), so a failed build must not stop
`import warmfast`, the Triton kernels or the analysis code; the CPU sampler, C++ log-prob rows and
C++ paged decode attention call `native.C()` and get one clear message when it is missing.
"""
from __future__ import annotations

from types import ModuleType

BUILD_HINT = ("Build it from the repository root with `pip install --no-build-isolation -e .` "
              "(needs a C++17 compiler, OpenMP, torch and pybind11), or use the GPU path "
              "(device='cuda', backend='triton'), which does not need it.")


def C() -> ModuleType:
    """warmfast._C, or ImportError naming the missing build and how to make it."""
    try:
        from warmfast import _C
    except ImportError as err:
        raise ImportError(f"warmfast's C++ extension warmfast._C is missing or failed to load ({err}); "
                          f"the CPU path needs it. {BUILD_HINT}") from err
    return _C
