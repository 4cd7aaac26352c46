# Shared by the .pyx files: the one row-major BLAS entry point, the route trace and the fast array
# checks.
from cython cimport floating
cimport numpy as cnp

cdef void gemm_rm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                  const floating* a, int lda, const floating* b, int ldb, floating beta,
                  floating* c, int ldc) noexcept nogil

cdef int gemm_threads(Py_ssize_t work) noexcept nogil

cdef bint tracing() noexcept
cdef void took(str route)


cdef inline bint fast_ok(object a, int ndim, int typenum, bint writable) noexcept:
    """True when ``a`` surely passes _checks: a native-order, C-contiguous ndarray of rank
    ``ndim`` and type ``typenum`` (writable if asked). False sends the caller to the slow
    validator, which raises the precise error."""
    if not cnp.PyArray_Check(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_NDIM(arr) == ndim and cnp.PyArray_TYPE(arr) == typenum
            and cnp.PyArray_ISNOTSWAPPED(arr) and cnp.PyArray_IS_C_CONTIGUOUS(arr)
            and (not writable or cnp.PyArray_ISWRITEABLE(arr)))


cdef inline cnp.npy_intp dim(object a, int axis) noexcept:
    return cnp.PyArray_DIMS(<cnp.ndarray>a)[axis]


cdef inline void* data(object a) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>a)
