"""Build the compiled core: every fastnn/_core/*.pyx becomes one extension module.

Environment switches (read at build time):
  FASTNN_BOUNDSCHECK=1   compile with Cython bounds/wraparound checks on (the test build of issue 8)
  FASTNN_NO_NATIVE=1     do not pass -march=native (for wheels meant for other machines)
"""
import glob
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


class ParallelBuildExt(build_ext):
    """Compiles the extension modules side by side (pip gives no -j)."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

debug_checks = os.environ.get("FASTNN_BOUNDSCHECK") == "1"

# -fno-wrapv undoes the -fwrapv of CPython's own CFLAGS (sysconfig), which setuptools passes first:
# with signed overflow defined, gcc keeps the kernels' int index arithmetic in 32 bits and cannot
# fold it into addressing (dcgan-d's strided conv forward, one thread, interleaved with torch in
# one process: 8.1 -> 5.9 ms, torch 6.1)
compile_args = ["-O3", "-fno-wrapv", "-fopenmp", "-ffp-contract=fast"]
if os.environ.get("FASTNN_NO_NATIVE") != "1" and sys.platform.startswith("linux"):
    compile_args.append("-march=native")
link_args = ["-fopenmp"]

extensions = [
    Extension(
        "fastnn._core." + os.path.splitext(os.path.basename(path))[0],
        [path],
        # fastnn/_core holds the C headers the .pyx files include (_microkernel.h); depends also
        # puts them in the sdist and rebuilds the extensions when a header changes
        include_dirs=[np.get_include(), os.path.join("fastnn", "_core")],
        depends=sorted(glob.glob(os.path.join("fastnn", "_core", "*.h"))),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for path in sorted(glob.glob(os.path.join("fastnn", "_core", "*.pyx")))
]

setup(
    # benchmarks/ ships inside the package as fastnn.bench, so ``fastnn bench`` works after
    # ``pip install`` without putting a top-level ``benchmarks`` module into site-packages
    packages=find_packages(include=["fastnn", "fastnn.*"]) + ["fastnn.bench"],
    package_dir={"fastnn.bench": "benchmarks"},
    cmdclass={"build_ext": ParallelBuildExt},
    ext_modules=cythonize(
        extensions,
        nthreads=os.cpu_count() or 1,
        compiler_directives={
            "language_level": 3,
            "boundscheck": debug_checks,
            "wraparound": debug_checks,
            "initializedcheck": debug_checks,
            "cdivision": True,
            "nonecheck": False,
        },
    ),
)
