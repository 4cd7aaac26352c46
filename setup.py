"""Build the compiled core.

The kernel modules (_blas, _conv, _recurrent, _basic) are compiled once per instruction-set level into
fastnn/_core/_<level>/ (generated here: one-line .pyx/.pxd files that include the sources of
fastnn/_core), each with its level's -march and its level's kernels/*_<level>.c files;
fastnn._core.isa imports the best level the CPU supports (capped by FASTNN_MAX_ISA at run time).
The other .pyx files (_openmp, _cpuid) are built once, for the baseline. No -march=native: one
build runs, at full speed, on any x86-64.

Environment switches (read at build time):
  FASTNN_BOUNDSCHECK=1           compile with Cython bounds/wraparound checks on (issue 8's build)
  FASTNN_ISA_LEVELS=avx512,...   build only these levels (the AddressSanitizer test's copy)
  FASTNN_OPT=-O1                 this optimisation level instead of -O3 (the AddressSanitizer
                                 test's copy: the level ASan's documentation suggests, and a
                                 third of -O3's build time)
"""
import glob
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


class ParallelBuildExt(build_ext):
    """Compiles the extension modules side by side (pip gives no -j), the heaviest first."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        # longest first: started last, a level's _conv (the build's longest module by far)
        # would run alone at the end while the other compilers sit idle
        def rank(ext):
            name = ext.name.rsplit(".", 1)[-1]
            return BUILD_ORDER.index(name) if name in BUILD_ORDER else len(BUILD_ORDER)
        self.extensions.sort(key=rank)  # stable: the levels keep their order
        super().build_extensions()

debug_checks = os.environ.get("FASTNN_BOUNDSCHECK") == "1"

# -fno-wrapv undoes the -fwrapv of CPython's own CFLAGS (sysconfig), which setuptools passes first:
# with signed overflow defined, gcc keeps the kernels' int index arithmetic in 32 bits and cannot
# fold it into addressing (dcgan-d's strided conv forward, one thread, interleaved with torch in
# one process: 8.1 -> 5.9 ms, torch 6.1)
# -fvisibility=hidden: the kernels' C symbols stay inside their module (only PyInit_* is exported)
opt_level = os.environ.get("FASTNN_OPT", "-O3")
if opt_level not in ("-O0", "-O1", "-O2", "-O3"):
    sys.exit(f"FASTNN_OPT: {opt_level!r} is not one of -O0, -O1, -O2, -O3")
compile_args = [opt_level, "-fno-wrapv", "-fopenmp", "-ffp-contract=fast", "-fvisibility=hidden"]
link_args = ["-fopenmp"]

CORE = os.path.join("fastnn", "_core")
KERNELS = os.path.join(CORE, "kernels")
# The levels fastnn._core.isa chooses from, with the compiler flags of each: x86-64-v3 is AVX2,
# FMA, BMI1/2, F16C, LZCNT, MOVBE; x86-64-v4 adds AVX-512 F, BW, CD, DQ, VL.
ISA_FLAGS = {"baseline": [], "avx2": ["-march=x86-64-v3"], "avx512": ["-march=x86-64-v4"]}
# The modules compiled per level, and the kernel families each links (kernels/<family>_<level>.c
# where the level has one)
LEVEL_MODULES = {"_blas": ("microkernel",),
                 "_conv": ("microkernel", "conv", "winograd", "winograd_small", "winograd_s2",
                           "winograd_s2_dw", "winograd_small4"),
                 "_recurrent": ("microkernel", "gates"), "_basic": ()}
# Extra compiler flags of one level module: _basic's kernels round op by op as torch's float32
# ones do (Adam within 1 ulp of its unfused formula), so no contraction into FMAs (vecmath.h's
# explicit fmaf calls stay); no errno from sqrt, which otherwise keeps Adam's loop scalar
MODULE_ARGS = {"_basic": ["-ffp-contract=off", "-fno-math-errno"]}
# The level modules by compile time, longest first (the order ParallelBuildExt starts them in)
BUILD_ORDER = ("_conv", "_recurrent", "_blas", "_basic")
# The kernel families each level defines in kernels/<family>_<level>.c (isa.h's FNN_ISA_KERNEL)
LEVEL_KERNELS = {"baseline": (), "avx2": ("microkernel", "conv", "winograd", "winograd_small",
                                            "winograd_small4", "winograd_s2", "winograd_s2_dw"),
                 "avx512": ("microkernel", "conv", "gates", "winograd", "winograd_small",
                            "winograd_s2", "winograd_s2_dw", "winograd_small4")}
LEVEL_PXD = ("_blas", "_microkernel", "_vecmath", "_conv_kernels", "_gates")
levels = [lv.strip() for lv in os.environ.get("FASTNN_ISA_LEVELS", ",".join(ISA_FLAGS)).split(",")]
unknown = sorted(set(levels) - set(ISA_FLAGS))
if unknown:
    sys.exit(f"FASTNN_ISA_LEVELS: unknown level(s) {unknown}; known: {list(ISA_FLAGS)}")
if not sys.platform.startswith("linux") or os.uname().machine not in ("x86_64", "AMD64"):
    levels = ["baseline"]  # the -march levels are x86-64 ones


def write_if_changed(path, text):
    """Leaves an unchanged file's mtime alone, so an incremental build skips its module."""
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


def level_package(level):
    """fastnn/_core/_<level>/: a package of one-line sources including fastnn/_core's, so the
    same Cython compiles to distinct modules (relative cimports resolve inside the package)."""
    pkg = os.path.join(CORE, "_" + level)
    os.makedirs(pkg, exist_ok=True)
    write_if_changed(os.path.join(pkg, "__init__.py"),
                     f'"""fastnn\'s kernel modules compiled for the {level} level (generated by '
                     'setup.py; imported through fastnn._core.isa)."""\n')
    for name in LEVEL_MODULES:
        write_if_changed(os.path.join(pkg, name + ".pyx"), f'include "../{name}.pyx"\n')
    for name in LEVEL_PXD:
        write_if_changed(os.path.join(pkg, name + ".pxd"), f'include "../{name}.pxd"\n')
    return pkg


import sysconfig  # noqa: E402
import Cython  # noqa: E402

write_if_changed(os.path.join(CORE, "_buildinfo.py"), (
    '"""How the compiled core was built (generated by setup.py; fastnn.config() reports it)."""\n'
    f"LEVELS = {levels!r}\n"
    f"COMPILE_ARGS = {compile_args!r}\n"
    f"ISA_FLAGS = { {lv: ISA_FLAGS[lv] for lv in levels}!r}\n"
    f"BOUNDSCHECK = {debug_checks!r}\n"
    f"CC = {sysconfig.get_config_var('CC')!r}\n"
    f"CYTHON = {Cython.__version__!r}\n"))

common = dict(
    # fastnn/_core holds kernels/ (the C the .pyx files include); depends also puts the headers
    # in the sdist and rebuilds the extensions when one changes
    include_dirs=[np.get_include(), CORE],
    depends=sorted(glob.glob(os.path.join(KERNELS, "*.h")) + glob.glob(os.path.join(KERNELS, "*.c"))
                   + glob.glob(os.path.join(CORE, "*.pyx"))
                   + glob.glob(os.path.join(CORE, "*.pxi"))
                   + glob.glob(os.path.join(CORE, "*.pxd"))),
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_link_args=link_args,
)
extensions = [
    Extension("fastnn._core." + os.path.splitext(os.path.basename(path))[0], [path],
              extra_compile_args=compile_args, **common)
    for path in sorted(glob.glob(os.path.join(CORE, "*.pyx")))
    if os.path.splitext(os.path.basename(path))[0] not in LEVEL_MODULES
]
for level in levels:
    pkg = level_package(level)
    for name, families in LEVEL_MODULES.items():
        # each module compiles its own one-line copy of a shared kernel file: the same .o path
        # built by two extensions at once (setup.py builds them in parallel) would race
        kernels = []
        for fam in families:
            if fam in LEVEL_KERNELS[level]:
                source = os.path.join(KERNELS, f"{fam}_{level}.c")
                if not os.path.exists(source):
                    sys.exit(f"setup.py: {source} is missing (the {level} level's {fam} kernels)")
                wrapper = os.path.join(pkg, f"{name}__{fam}.c")
                write_if_changed(wrapper, f'#include "kernels/{fam}_{level}.c"\n')
                kernels.append(wrapper)
        extensions.append(Extension(
            f"fastnn._core._{level}.{name}", [os.path.join(pkg, name + ".pyx")] + kernels,
            extra_compile_args=compile_args + ISA_FLAGS[level] + MODULE_ARGS.get(name, []), **common))

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
