#!/usr/bin/env bash
# Builds warmfast._C the way the GPU image does (pip --no-build-isolation --no-deps --no-index) in a
# fresh venv holding only torch, pybind11 and setuptools, from a copy of the tracked files.
#   TORCH_WHEEL=/opt/wheels/torch-...whl bash bench/check_clean_build.sh [SETUPTOOLS_SPEC]
# Measured 2026-12-04 (2-vCPU AMD EPYC, CPython 3.11, torch 2.13.0+cpu, pybind11 3.1.0):
#   setuptools 84.2.1, no wheel package: builds in ~70 s, `import warmfast._C` works (no numpy needed)
#   setuptools 65.5.0, no wheel package: fails, "error: invalid command 'bdist_wheel'": without
#   build isolation, pyproject's build requires (setuptools>=68, wheel) are not installed, and
#   setuptools < 70.1 has no bdist_wheel of its own
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(mktemp -d /tmp/wf_clean_build.XXXXXX)
python3 -m venv "$WORK/venv"
. "$WORK/venv/bin/activate"
pip install --no-deps "${TORCH_WHEEL:-torch}"
pip install pybind11 "${1:-setuptools>=70.1}"
pip list
mkdir "$WORK/src"
git ls-files -z | xargs -0 -I{} cp --parents {} "$WORK/src/"
cd "$WORK/src"
python -m pip install --no-build-isolation --no-deps --no-index .
cd "$WORK"
python -c "import warmfast, warmfast._C as C; print('built', C.__file__)"
echo "ok: $WORK (remove it when done)"
