"""Builds warmfast._C (C++/pybind11, OpenMP) and maps kernels/ to warmfast.kernels."""
import sys

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

extra_compile = ["-O3", "-fopenmp", "-std=c++17"]
extra_link = ["-fopenmp"]
if sys.platform == "darwin":  # Apple clang: OpenMP needs libomp; keep -O3 only
    extra_compile, extra_link = ["-O3", "-std=c++17"], []

ext = Pybind11Extension(
    "warmfast._C",
    sources=["csrc/bindings.cpp", "csrc/logprob.cpp", "csrc/sampling.cpp"],
    include_dirs=["csrc"],
    extra_compile_args=extra_compile,
    extra_link_args=extra_link,
)

setup(
    packages=find_packages("src") + ["warmfast.kernels"],
    package_dir={"": "src", "warmfast.kernels": "kernels"},
    package_data={"warmfast": ["data/**/*", "configs/*.yaml"]},
    include_package_data=True,
    ext_modules=[ext],
    cmdclass={"build_ext": build_ext},
    zip_safe=False,
)
