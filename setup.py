"""Builds warmfast._C (C++/pybind11, OpenMP) and maps kernels/ to warmfast.kernels."""
import sys

import shutil
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class build_py_with_configs(build_py):
    """Wheels carry configs/*.yaml as warmfast/configs/ (demo.yaml runs offline after install)."""

    def run(self):
        super().run()
        dst = Path(self.build_lib) / "warmfast" / "configs"
        dst.mkdir(parents=True, exist_ok=True)
        for cfg in Path("configs").glob("*.yaml"):
            shutil.copy2(cfg, dst / cfg.name)

extra_compile = ["-O3", "-fopenmp", "-std=c++17"]
extra_link = ["-fopenmp"]
if sys.platform == "darwin":  # Apple clang: OpenMP needs libomp; keep -O3 only
    extra_compile, extra_link = ["-O3", "-std=c++17"], []

ext = Pybind11Extension(
    "warmfast._C",
    sources=["csrc/bindings.cpp", "csrc/attention.cpp", "csrc/logprob.cpp", "csrc/sampling.cpp"],
    include_dirs=["csrc"],
    extra_compile_args=extra_compile,
    extra_link_args=extra_link,
)

setup(
    packages=find_packages("src") + ["warmfast.kernels"],
    package_dir={"": "src", "warmfast.kernels": "kernels"},
    package_data={"warmfast": ["data/**/*"]},
    include_package_data=True,
    ext_modules=[ext],
    cmdclass={"build_ext": build_ext, "build_py": build_py_with_configs},
    zip_safe=False,
)
