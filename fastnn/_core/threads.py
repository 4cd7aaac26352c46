"""One thread control for every pool fastnn uses: OpenMP (Cython), numba and BLAS.

Rule of the core: one level of parallelism at a time. Cython/numba loops never call BLAS from
inside a parallel region, so setting all three pools to ``n`` never oversubscribes.
"""
import os

from threadpoolctl import threadpool_limits

from . import _openmp

_state = {"n": None, "blas_limiter": None}


def _default_threads():
    env = os.environ.get("FASTNN_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def set_num_threads(n):
    """Use ``n`` threads in OpenMP loops, numba kernels and BLAS (all three together)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    # threadpool_limits keeps the limit until it is garbage collected or restored: hold it.
    _state["blas_limiter"] = threadpool_limits(limits=n, user_api="blas")
    _state["n"] = n
    import sys

    if "numba" in sys.modules:  # otherwise sync_numba_threads applies it when numba loads
        sync_numba_threads()
    _openmp.set_num_threads(n)


def get_num_threads():
    """The thread count last set with :func:`set_num_threads` (default: available cores)."""
    if _state["n"] is None:
        return _default_threads()
    return _state["n"]


def sync_numba_threads():
    """Apply the chosen thread count to numba (called when the numba kernels are first loaded).

    numba's OpenMP threading layer shares libgomp with the Cython kernels, and
    ``numba.set_num_threads`` resets libgomp's count, so the OpenMP count is set again after it.
    """
    if _state["n"] is not None:
        import numba

        numba.set_num_threads(min(_state["n"], numba.config.NUMBA_NUM_THREADS))
        _openmp.set_num_threads(_state["n"])
