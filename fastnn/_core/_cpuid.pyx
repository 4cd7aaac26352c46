"""The CPU's instruction-set level, for fastnn._core.isa (compiled once, for the baseline)."""
cdef extern from "kernels/cpuid.h":
    int fnn_cpu_level() noexcept nogil


def cpu_level():
    """0 baseline x86-64, 1 AVX2+FMA (x86-64-v3), 2 AVX-512 F/BW/CD/DQ/VL: the best level this
    CPU and OS run."""
    return fnn_cpu_level()
