"""One thread control for every pool fastnn uses, and why there is only one pool.

fastnn's kernels run on ONE thread pool: libgomp's OpenMP team, shared by the Cython ``prange``
loops and by numba (its "omp" threading layer). The BLAS the kernels call (the OpenBLAS behind
``scipy.linalg.cython_blas``, also what numba's ``np.dot`` uses) has a pthreads pool of its own;
a training step alternates OpenMP loops with GEMMs hundreds of times, and two pools of busy
threads on the same cores fight each other (measured on the 2-core VM: the mlp step went from
2.5 ms with one thread to 310 ms with two). So that BLAS is pinned to ONE thread for good, and
the kernels parallelise GEMM themselves inside OpenMP regions (``_blas.gemm_rm`` cuts C into
per-thread blocks, each a single-threaded BLAS call; a convolution gives each thread whole
samples: its im2col, its GEMM and its scatter in one region).

``set_num_threads(n)`` sets the OpenMP/numba count to ``n``, and the BLAS numpy uses for your own
``@`` and ``np.dot`` (a separate library in the pip wheels) to ``n`` too. If scipy and numpy share
one BLAS library (some conda builds), that library stays at one thread.
"""
import os

# Below this many elements of work a kernel (numba's and fastnn._core.basic's Cython ones) runs
# serially: waking the thread pool costs more than sharing a small loop saves
# (benchmarks/decisions.md, "Serial below PARALLEL_MIN_WORK").
PARALLEL_MIN_WORK = 32768
# Work of one exp/tanh/log per element relative to one relu element: kernels doing
# transcendentals count their elements this many times, so they go parallel sooner.
TRANSCENDENTAL_WORK = 8


def pick(parallel_kernel, serial_kernel, work):
    """The parallel kernel when there is enough work to share between threads."""
    return parallel_kernel if work >= PARALLEL_MIN_WORK else serial_kernel


# libgomp reads its wait policy once, when it is loaded (by _openmp below, or by numba), so it is
# chosen here unless the user chose. Measured on the 2-core VM under load 3-8 from other jobs
# (2 threads, steps of the zoo models): libgomp's default (spin 300k iterations, ~1 ms, before
# sleeping) and ACTIVE made the mlp step 236 ms and dcgan-d 210-350 ms, because a thread spinning
# at a barrier steals the core its partner needs; PASSIVE (sleep at once) gave 3-6 ms and
# 66-160 ms; a short spin of 10k iterations (tens of us: long enough to bridge the Python gap
# between two kernels of one step, short enough to give the core back) gave 1.9-17 ms and
# 30-105 ms. The numbers are noisy, but short spins were never worse than PASSIVE by much and
# often 2x better; default spinning was always catastrophic under load.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
# numpy's OpenBLAS (the pip wheels' scipy-openblas, loaded with numpy) has the same habit: after
# each call its idle workers spin for 2**28 TSC cycles, a tenth of a second here, before they
# sleep. Measured on the 2-core VM, 2 threads: a conv backward (64->64 3x3 at 14x14) took 11 ms
# after itself and 17-21 ms right after one 1024^3 numpy matmul, until 0.1-0.2 s had passed.
# 2**18 cycles (~0.1 ms) removes that and leaves numpy's own matmuls as fast (64^3 to 1024^3).
# OpenBLAS reads it once, when it loads: it takes effect when fastnn is imported before numpy.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "18")

from threadpoolctl import ThreadpoolController  # noqa: E402

try:
    from . import _openmp  # noqa: E402  (the first compiled module fastnn imports)
except ImportError as e:  # a source tree whose extensions were never built in place
    _here = os.path.dirname(os.path.abspath(__file__))
    raise ImportError(
        f"fastnn's compiled core is not built in {_here}: you are probably importing fastnn from "
        "its source directory. Install it (pip install .) and run Python from another "
        "directory, or build it in place (pip install -e . or python setup.py build_ext "
        f"--inplace). ({e})") from e
from . import isa  # noqa: E402,F401  (chooses the kernels' level, and numba's CPU, before numba loads)

_state = {"n": None, "kernel_blas_pinned": False}


def _is_kernel_blas(filepath):
    """True for the BLAS library shipped with scipy (what scipy.linalg.cython_blas calls)."""
    import sys

    scipy = sys.modules.get("scipy")
    if scipy is None:  # not loaded yet, so neither is its BLAS
        return False
    scipy_dir = os.path.dirname(os.path.realpath(scipy.__file__))
    roots = (scipy_dir + os.sep, scipy_dir + ".libs" + os.sep)
    return os.path.realpath(filepath).startswith(roots)


def _apply_blas_threads(n):
    """Kernel BLAS (scipy's) to 1 thread; every other BLAS to ``n`` (None: leave it alone)."""
    blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    kernel = [lib for lib in blas if _is_kernel_blas(lib.filepath)]
    import sys

    if not kernel and "scipy.linalg.cython_blas" in sys.modules:
        kernel = blas  # scipy uses a BLAS we cannot tell apart from numpy's: keep them all at 1
    for lib in blas:
        if lib in kernel:
            lib.set_num_threads(1)
        elif n is not None:
            lib.set_num_threads(n)
    return bool(kernel)


def pin_kernel_blas():
    """Called when the Cython BLAS kernels load: scipy's BLAS runs on the calling thread only."""
    if not _state["kernel_blas_pinned"]:
        _state["kernel_blas_pinned"] = _apply_blas_threads(_state["n"])


def _env_threads():
    """FASTNN_NUM_THREADS as a positive int; None when unset, or when invalid (with a warning:
    a typo in the environment should not make ``import fastnn`` fail)."""
    env = os.environ.get("FASTNN_NUM_THREADS", "").strip()
    if not env:
        return None
    try:
        n = int(env)
    except ValueError:
        n = 0
    if n < 1:
        import warnings

        warnings.warn(f"FASTNN_NUM_THREADS={env!r} is not a positive integer; ignoring it and "
                      f"using the default of {_default_threads()} threads (the cores available)",
                      RuntimeWarning, stacklevel=2)
        return None
    return n


def _default_threads():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def set_num_threads(n):
    """Use ``n`` threads in fastnn's kernels (OpenMP and numba) and in numpy's BLAS.

    The BLAS under fastnn's own GEMMs always runs single-threaded inside OpenMP blocks (see the
    module docstring)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _state["n"] = n
    _state["kernel_blas_pinned"] = _apply_blas_threads(n) or _state["kernel_blas_pinned"]
    import sys

    if "numba" in sys.modules:  # otherwise sync_numba_threads applies it when numba loads
        sync_numba_threads()
    _openmp.set_num_threads(n)


def get_num_threads():
    """The thread count last set with :func:`set_num_threads` (default: available cores)."""
    if _state["n"] is None:
        return _default_threads()
    return _state["n"]


def _pin_numba_threading_layer(numba):
    """Make numba run its parallel kernels on libgomp, the OpenMP pool fastnn controls.

    Left to itself numba takes the first layer that loads in its priority order, TBB before
    OpenMP: with the ``tbb`` package installed, numba's kernels would run on a TBB pool of their
    own, next to the OpenMP pool of the Cython kernels, and the two would fight over the cores
    as BLAS's pool did. A layer the user chose (``NUMBA_THREADING_LAYER``, or
    ``numba.config.THREADING_LAYER`` set before fastnn's kernels load) is kept, and so is
    numba's choice where its OpenMP layer cannot load. Effective only before numba's pool starts
    (its first parallel kernel or ``numba.get_num_threads()``).
    """
    if "NUMBA_THREADING_LAYER" in os.environ or numba.config.THREADING_LAYER != "default":
        return
    try:
        from numba.np.ufunc import omppool  # noqa: F401  (loads: the layer is available)
    except ImportError:  # pragma: no cover - numba built without OpenMP
        return
    numba.config.THREADING_LAYER = "omp"


def sync_numba_threads():
    """Bring numba's OpenMP threading layer in line (called when the numba kernels are first loaded).

    numba's OpenMP threading layer shares libgomp with the Cython kernels, and
    ``numba.set_num_threads`` resets libgomp's count, so the OpenMP count is set again after it.
    Starting its pool, numba also allows nested parallel regions in all of libgomp
    (max-active-levels 255). fastnn never nests, but other OpenMP code in the process does: with
    nesting allowed, PyTorch's intra-op regions open a second BLAS team inside each worker, and
    its RNN step went from 4.5 ms to 15-55 ms. So the level goes back to libgomp's default of 1.
    """
    import numba

    _pin_numba_threading_layer(numba)
    numba.get_num_threads()  # starts numba's pool now, not at the first parallel kernel
    if _state["n"] is not None:
        numba.set_num_threads(min(_state["n"], numba.config.NUMBA_NUM_THREADS))
        _openmp.set_num_threads(_state["n"])
    _openmp.set_max_active_levels(1)


# FASTNN_NUM_THREADS=n is set_num_threads(n) at import. Only OpenMP is set here (cheap); the BLAS
# pools follow when the GEMM kernels load (pin_kernel_blas) and numba when its kernels load.
_state["n"] = _env_threads()
if _state["n"] is not None:
    _openmp.set_num_threads(_state["n"])
