"""What the kernel tests may expect of two thread counts (docs/robustness.md, "Determinism").

fastnn's own float32 kernels (built with AVX-512) sum every output entry in one fixed order,
whatever rows or columns a thread takes, and the recurrent weight gradients' BLAS calls have
shapes fixed by the problem alone: 1 and 2 threads give the same bits. Elsewhere (float64, a
build without AVX-512) each thread's rows go to BLAS, and a BLAS library may pick another kernel,
with another order of sums, for another block shape: the results agree to rounding only."""
import contextlib

import numpy as np

from fastnn._core import _conv
from fastnn._core import threads as threads_module


def bitwise_across_threads(dtype):
    return np.dtype(dtype) == np.float32 and _conv._microkernel_available()


def assert_same_across_threads(one, two, dtype, err_msg=""):
    """``one`` (1 thread) and ``two`` (2 threads): bit for bit where fastnn promises it, else to
    a few units of rounding per element."""
    if bitwise_across_threads(dtype):
        np.testing.assert_array_equal(one, two, err_msg=err_msg)
    else:
        tol = 1e-5 if np.dtype(dtype) == np.float32 else 1e-12
        np.testing.assert_allclose(two, one, rtol=tol, atol=tol, err_msg=err_msg)


@contextlib.contextmanager
def forced(path):
    """Run the kernels' parallel or serial variant whatever the input size."""
    saved = threads_module.PARALLEL_MIN_WORK
    threads_module.PARALLEL_MIN_WORK = 0 if path == "parallel" else 1 << 62
    try:
        yield
    finally:
        threads_module.PARALLEL_MIN_WORK = saved
