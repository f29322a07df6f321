"""Builds the pybind11 extension `bertforge._csrc` from csrc/ (C++17, numpy in / numpy out, no libtorch)."""
from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

# one compiler process per source file, up to the machine's cores (NPY_NUM_BUILD_JOBS=N to cap): the GPU call builds
# the extension in its preflight, on the clock
ParallelCompile("NPY_NUM_BUILD_JOBS").install()

ext_modules = [
    Pybind11Extension(
        "bertforge._csrc",
        sorted(glob("csrc/*.cpp")),
        include_dirs=["csrc"],
        cxx_std=17,
        extra_compile_args=["-O3"],
    )
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
