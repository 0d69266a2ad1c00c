"""Triton kernels, installed as `warmfast.kernels`, each beside its plain-torch *_ref.

Kernel files: lora.py (segmented shrink/expand), attention.py (varlen causal prefill, paged
decode), logprob.py (lm_head + logsumexp + target + argmax), norm.py (residual-add RMSNorm),
rope.py (in-place rotary), activation.py (fused SiLU x mul), sampling.py; common.py holds the
helpers they share.

This folder sits at the repository root (the layout is part of the design), and Python puts the
working folder first on sys.path for `python -m ...`, `python -c` and the REPL. Imported under the
top-level name `kernels` that way, it would shadow the PyPI package `kernels` (Hugging Face's
kernel hub, which transformers imports). So under any name but `warmfast.kernels` this module
replaces itself with the installed package of that name. Where none is installed it becomes what
Python makes of a folder without code: an empty namespace-like module (no `__file__`, no
`__version__`, no submodules). Raising ImportError instead is not an option: transformers >= 5
finds this folder on sys.path, imports it to read a version, and treats exactly that empty module
as "not installed" but lets an ImportError escape from `import transformers.activations` (seen on
an H200 with transformers 5.17, where the kernel hub is not installed).
"""
from __future__ import annotations

if __name__ != "warmfast.kernels":
    import importlib.machinery
    import importlib.util
    import os
    import sys

    def _installed_package(name: str):
        """Load `name` from sys.path without this repository's root folder (or None if absent)."""
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != here]
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # the import system returns whatever sys.modules holds after this file
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module

    if _installed_package(__name__) is None:
        __file__ = None  # noqa: A001  (a namespace package has none: transformers reads it as absent)
        __path__ = []  # nothing below it imports under this name
