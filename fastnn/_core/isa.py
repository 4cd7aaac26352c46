"""The one place that chooses the instruction-set level of the compiled kernels.

setup.py compiles the kernel modules (_blas, _conv, _recurrent, _basic) once per level into
``fastnn._core._<level>``; ``fastnn._core._blas`` (and the others) are thin modules that put the
chosen level's module in their place. The level is the best one that the CPU supports (CPUID,
``_cpuid``), that was compiled, and that ``FASTNN_MAX_ISA`` (environment, read once at import:
``baseline``, ``avx2`` or ``avx512``) allows.

numba: a cap below the CPU's level also caps numba's code generation, by setting
``NUMBA_CPU_NAME`` (``haswell`` for avx2, ``x86-64`` for baseline) when it is not set and numba
is not imported yet (numba reads it once, at its import): the whole library then runs what a CPU
of that level would. An explicit ``NUMBA_CPU_NAME`` wins; numba imported before fastnn keeps
the host's CPU (``fnn.config()["numba"]`` says which).
"""
import importlib
import importlib.util
import os
import sys

LEVELS = ("baseline", "avx2", "avx512")
_NUMBA_CPU = {"baseline": "x86-64", "avx2": "haswell"}
_KERNEL_MODULES = ("_blas", "_conv", "_recurrent", "_basic")


def cpu_level():
    """The best level this CPU (and OS) runs."""
    from . import _cpuid

    return LEVELS[_cpuid.cpu_level()]


def compiled_levels():
    """The levels whose kernel modules this installation has, lowest first."""
    return [lv for lv in LEVELS
            if all(importlib.util.find_spec(f"{__package__}._{lv}.{m}") is not None
                   for m in _KERNEL_MODULES)] if _package_exists() else []


def _package_exists():
    return any(importlib.util.find_spec(f"{__package__}._{lv}") is not None for lv in LEVELS)


def max_level():
    """FASTNN_MAX_ISA, validated (None when unset or empty)."""
    cap = os.environ.get("FASTNN_MAX_ISA", "").strip().lower()
    if not cap:
        return None
    if cap not in LEVELS:
        raise ValueError(f"FASTNN_MAX_ISA={os.environ['FASTNN_MAX_ISA']!r}: expected one of "
                         f"{', '.join(LEVELS)}")
    return cap


def _choose():
    compiled = compiled_levels()
    if not compiled:
        raise ImportError(f"fastnn's compiled core is not built in {os.path.dirname(__file__)}: "
                          "no ISA level's kernel modules (build it: pip install .)")
    best = cpu_level()
    cap = max_level()
    limit = min(LEVELS.index(best), LEVELS.index(cap) if cap else len(LEVELS))
    usable = [lv for lv in compiled if LEVELS.index(lv) <= limit]
    if not usable:
        raise ImportError(f"fastnn: no compiled ISA level runs here (compiled {compiled}, CPU "
                          f"{best}, FASTNN_MAX_ISA {cap})")
    level = usable[-1]
    if (LEVELS.index(level) < LEVELS.index(best) and "NUMBA_CPU_NAME" not in os.environ
            and "numba" not in sys.modules):
        os.environ["NUMBA_CPU_NAME"] = _NUMBA_CPU[level]
    return level


LEVEL = _choose()


def load(name):
    """The chosen level's compiled module ``name`` (one of _KERNEL_MODULES)."""
    return importlib.import_module(f"{__package__}._{LEVEL}.{name}")


def dense_epilogue_activations():
    """The activations a Dense layer runs in its GEMM's epilogue instead of their own kernels:
    ReLU always; Sigmoid and Tanh where the level's epilogue (fnn_sigmoidf / fnn_tanhf) gives the
    numba kernels' bits (the FMA levels: checked over every 97th float32 bit pattern at avx2). At
    the baseline level the two round differently, so those stay separate passes there and a
    fused model's output stays bitwise that of its layers one by one."""
    return ("relu",) if LEVEL == "baseline" else ("relu", "sigmoid", "tanh")
