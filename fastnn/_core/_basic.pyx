# Why Cython and not numba (where the other elementwise families live): these are the kernels
# every plain dense or conv model's training step calls (ReLU's gradient, 2x2 max pooling, the
# softmax cross-entropy, Adam). Compiled at install, per ISA level like _blas, they make a first
# training step of such a model need no JIT at all (no numba import, no compilation with an
# empty numba cache). The loops are those of the numba versions they replaced, with the same
# float32 exponential (kernels/vecmath.h is the C twin of _fastmath.py).
"""ReLU, 2x2 max pooling, softmax cross-entropy and Adam: the compiled kernels under
fastnn._core.basic's wrappers (which validate everything before calling in here)."""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, log, sqrt, INFINITY
from libc.stdint cimport int64_t
cimport numpy as cnp
cimport openmp

cnp.import_array()

cdef extern from "kernels/vecmath.h":
    float fnn_expf(float v) noexcept nogil


# ---- helpers --------------------------------------------------------------------------------------
cdef inline bint _is_f32(cnp.ndarray a):
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


cdef inline void* _ptr(cnp.ndarray a):
    return cnp.PyArray_DATA(a)


cdef inline int _threads(bint parallel) noexcept nogil:
    # prange's num_threads: 1 runs the loop on the calling thread (no team is woken)
    return openmp.omp_get_max_threads() if parallel else 1


cdef inline float _exp_diff32(float a, float b) noexcept nogil:
    # exp(a - b) as if a - b were not rounded: the difference's rounding error (two-sum) corrects
    # the exponential to first order (_fastmath._exp_diff's float32 version)
    cdef float d = a - b
    cdef float t = d - a
    cdef float err = (a - (d - t)) + (-b - t)
    if err != err:  # infinite or NaN difference: no correction
        err = 0.0
    cdef float e = fnn_expf(d)
    if e < INFINITY:
        return e + e * err
    return e


# ---- ReLU (flat arrays) ---------------------------------------------------------------------------
cdef void _relu_fwd(floating* x, floating* out, Py_ssize_t n, bint parallel) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in prange(n, num_threads=_threads(parallel), schedule="static"):
        v = x[i]
        out[i] = 0 if v <= 0 else v  # NaN propagates, as torch.relu


cdef void _relu_bwd(floating* x, floating* dy, floating* dx, Py_ssize_t n, bint parallel) noexcept nogil:
    cdef Py_ssize_t i
    for i in prange(n, num_threads=_threads(parallel), schedule="static"):
        dx[i] = 0 if x[i] <= 0 else dy[i]


def relu_forward(cnp.ndarray x, cnp.ndarray out, bint parallel):
    """out := max(x, 0) over contiguous arrays of one dtype and size."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef void* p_x = _ptr(x)
    cdef void* p_out = _ptr(out)
    if _is_f32(x):
        with nogil:
            _relu_fwd(<float*>p_x, <float*>p_out, n, parallel)
    else:
        with nogil:
            _relu_fwd(<double*>p_x, <double*>p_out, n, parallel)


def relu_backward(cnp.ndarray x, cnp.ndarray dy, cnp.ndarray dx, bint parallel):
    """dx := dy where x > 0, else 0."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef void* p_x = _ptr(x)
    cdef void* p_dy = _ptr(dy)
    cdef void* p_dx = _ptr(dx)
    if _is_f32(x):
        with nogil:
            _relu_bwd(<float*>p_x, <float*>p_dy, <float*>p_dx, n, parallel)
    else:
        with nogil:
            _relu_bwd(<double*>p_x, <double*>p_dy, <double*>p_dx, n, parallel)


# ---- softmax cross-entropy on (M, C) --------------------------------------------------------------
cdef inline double _row_lse(floating* z, floating* p, Py_ssize_t cols) noexcept nogil:
    # one row: p := softmax(z); returns its log-sum-exp (a NaN logit makes both NaN)
    cdef Py_ssize_t j
    cdef floating top = z[0]
    cdef double s = 0.0, inv
    for j in range(1, cols):
        if z[j] > top:
            top = z[j]
    for j in range(cols):  # apart from the sum, so the exponentials vectorise
        if floating is float:
            p[j] = _exp_diff32(z[j], top)
        else:
            p[j] = exp(z[j] - top)
    for j in range(cols):
        s += p[j]
    inv = 1.0 / s
    for j in range(cols):
        p[j] = <floating>(p[j] * inv)
    return top + log(s)


cdef int _ce_fwd(floating* z, int64_t* target, floating* p, double* row_loss, Py_ssize_t rows,
                 Py_ssize_t cols, bint parallel) noexcept nogil:
    cdef Py_ssize_t m
    cdef int64_t t
    cdef double lse
    cdef int bad = 0
    for m in prange(rows, num_threads=_threads(parallel), schedule="static"):
        lse = _row_lse(z + m * cols, p + m * cols, cols)
        t = target[m]
        if 0 <= t < cols:
            row_loss[m] = lse - z[m * cols + t]
        else:  # counted, never read
            row_loss[m] = 0.0
            bad += 1
    return bad


def softmax_cross_entropy_forward(cnp.ndarray logits, cnp.ndarray target, cnp.ndarray probs,
                                  cnp.ndarray row_loss, bint parallel):
    """probs := softmax(logits); row_loss[m] := lse - logits[m, target[m]]; returns (sum of
    row_loss in row order, count of labels outside [0, C)): the same bits for any thread count."""
    cdef Py_ssize_t rows = cnp.PyArray_DIM(logits, 0), cols = cnp.PyArray_DIM(logits, 1), m
    cdef int bad
    cdef double total = 0.0
    cdef double* rl = <double*>_ptr(row_loss)
    cdef void* p_logits = _ptr(logits)
    cdef void* p_target = _ptr(target)
    cdef void* p_probs = _ptr(probs)
    if _is_f32(logits):
        with nogil:
            bad = _ce_fwd(<float*>p_logits, <int64_t*>p_target, <float*>p_probs, rl,
                          rows, cols, parallel)
    else:
        with nogil:
            bad = _ce_fwd(<double*>p_logits, <int64_t*>p_target, <double*>p_probs, rl,
                          rows, cols, parallel)
    for m in range(rows):
        total += rl[m]
    return total, bad


cdef int _ce_bwd(floating* p, int64_t* target, double factor, floating* d, Py_ssize_t rows,
                 Py_ssize_t cols, bint parallel) noexcept nogil:
    cdef Py_ssize_t m, j
    cdef int64_t t
    cdef int bad = 0
    for m in prange(rows, num_threads=_threads(parallel), schedule="static"):
        for j in range(cols):
            d[m * cols + j] = <floating>(factor * p[m * cols + j])
        t = target[m]
        if 0 <= t < cols:
            # factor * (p - 1) rounded once: p - 1 is exact in double
            d[m * cols + t] = <floating>(factor * (p[m * cols + t] - 1.0))
        else:
            bad += 1
    return bad


def softmax_cross_entropy_backward(cnp.ndarray probs, cnp.ndarray target, double factor,
                                   cnp.ndarray dlogits, bint parallel):
    """dlogits := factor * (probs - onehot(target)); returns the count of bad labels."""
    cdef Py_ssize_t rows = cnp.PyArray_DIM(probs, 0), cols = cnp.PyArray_DIM(probs, 1)
    cdef int bad
    cdef void* p_probs = _ptr(probs)
    cdef void* p_target = _ptr(target)
    cdef void* p_dlogits = _ptr(dlogits)
    if _is_f32(probs):
        with nogil:
            bad = _ce_bwd(<float*>p_probs, <int64_t*>p_target, factor, <float*>p_dlogits,
                          rows, cols, parallel)
    else:
        with nogil:
            bad = _ce_bwd(<double*>p_probs, <int64_t*>p_target, factor, <double*>p_dlogits,
                          rows, cols, parallel)
    return bad


# ---- max pooling on planes (P, H, W) --------------------------------------------------------------
cdef void _maxpool_2x2(floating* x, floating* out, int64_t* argmax, Py_ssize_t planes, Py_ssize_t h,
                       Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow, bint parallel) noexcept nogil:
    # the 2x2 window at stride 2, no padding: the window's four values compared in row order,
    # strictly greater (the first maximum wins) or NaN (propagates), as PyTorch
    cdef Py_ssize_t p, i, j, a, b, where
    cdef floating best, v
    cdef floating* xp
    for p in prange(planes, num_threads=_threads(parallel), schedule="static"):
        xp = x + p * h * w
        for i in range(oh):
            a = 2 * i
            for j in range(ow):
                b = 2 * j
                best = xp[a * w + b]
                where = a * w + b
                v = xp[a * w + b + 1]
                if v > best or v != v:
                    best = v
                    where = a * w + b + 1
                v = xp[(a + 1) * w + b]
                if v > best or v != v:
                    best = v
                    where = (a + 1) * w + b
                v = xp[(a + 1) * w + b + 1]
                if v > best or v != v:
                    best = v
                    where = (a + 1) * w + b + 1
                out[(p * oh + i) * ow + j] = best
                argmax[(p * oh + i) * ow + j] = where


def maxpool2d_forward_2x2(cnp.ndarray x, cnp.ndarray out, cnp.ndarray argmax, bint parallel):
    """out, argmax (P, OH, OW) := max and its flat h*W + w over each 2x2 window of x (P, H, W)."""
    cdef Py_ssize_t planes = cnp.PyArray_DIM(x, 0), h = cnp.PyArray_DIM(x, 1), w = cnp.PyArray_DIM(x, 2)
    cdef Py_ssize_t oh = cnp.PyArray_DIM(out, 1), ow = cnp.PyArray_DIM(out, 2)
    cdef void* p_x = _ptr(x)
    cdef void* p_out = _ptr(out)
    cdef void* p_argmax = _ptr(argmax)
    if _is_f32(x):
        with nogil:
            _maxpool_2x2(<float*>p_x, <float*>p_out, <int64_t*>p_argmax, planes, h, w,
                         oh, ow, parallel)
    else:
        with nogil:
            _maxpool_2x2(<double*>p_x, <double*>p_out, <int64_t*>p_argmax, planes, h, w,
                         oh, ow, parallel)


cdef int _maxpool_bwd(floating* dy, int64_t* argmax, floating* dx, Py_ssize_t planes,
                      Py_ssize_t hw, Py_ssize_t positions, bint parallel) noexcept nogil:
    cdef Py_ssize_t p, q, k
    cdef int64_t idx
    cdef int bad = 0
    for p in prange(planes, num_threads=_threads(parallel), schedule="static"):
        for q in range(hw):
            dx[p * hw + q] = 0
        for k in range(positions):
            idx = argmax[p * positions + k]
            if 0 <= idx < hw:
                dx[p * hw + idx] += dy[p * positions + k]
            else:
                bad += 1
    return bad


def maxpool2d_backward(cnp.ndarray dy, cnp.ndarray argmax, cnp.ndarray dx, bint parallel):
    """dx (P, HW) := 0, then dy (P, K) added at argmax (P, K) in each plane; returns the count of
    argmax entries outside [0, HW) (skipped)."""
    cdef Py_ssize_t planes = cnp.PyArray_DIM(dx, 0), hw = cnp.PyArray_DIM(dx, 1)
    cdef Py_ssize_t positions = cnp.PyArray_DIM(dy, 1)
    cdef int bad
    cdef void* p_dy = _ptr(dy)
    cdef void* p_argmax = _ptr(argmax)
    cdef void* p_dx = _ptr(dx)
    if _is_f32(dy):
        with nogil:
            bad = _maxpool_bwd(<float*>p_dy, <int64_t*>p_argmax, <float*>p_dx, planes, hw,
                               positions, parallel)
    else:
        with nogil:
            bad = _maxpool_bwd(<double*>p_dy, <int64_t*>p_argmax, <double*>p_dx, planes, hw,
                               positions, parallel)
    return bad


# ---- Adam / AdamW (flat arrays) -------------------------------------------------------------------
cdef void _adam(floating* param, floating* grad, floating* exp_avg, floating* exp_avg_sq,
                floating* s, Py_ssize_t n, bint parallel) noexcept nogil:
    # s: (weight, 1 - weight, beta2, 1 - beta2, eps, l2, shrink, step_size, bc2_sqrt) in the
    # parameter's dtype (fastnn._core.basic.adam_scalars)
    cdef floating weight = s[0], one_minus_weight = s[1], beta2 = s[2], one_minus_beta2 = s[3]
    cdef floating eps = s[4], l2 = s[5], shrink = s[6], step_size = s[7], bc2_sqrt = s[8]
    cdef Py_ssize_t i
    cdef floating p, g, m, v, root
    for i in prange(n, num_threads=_threads(parallel), schedule="static"):
        p = param[i] * shrink
        g = grad[i]
        if l2 != 0:
            g = g + l2 * p
        m = exp_avg[i]
        # torch.lerp's two-sided formula (exact at both ends), as exp_avg.lerp_(grad, 1 - beta1)
        if weight < 0.5:
            m = m + weight * (g - m)
        else:
            m = g - (g - m) * one_minus_weight
        v = beta2 * exp_avg_sq[i] + one_minus_beta2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        root = sqrt(v)  # rounded to the dtype: float32's sqrtf
        param[i] = p - step_size * (m / (root / bc2_sqrt + eps))


cdef inline void _adam_call(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray exp_avg,
                            cnp.ndarray exp_avg_sq, cnp.ndarray scalars, bint parallel):
    cdef Py_ssize_t n = cnp.PyArray_SIZE(param)
    cdef void* p_param = _ptr(param)
    cdef void* p_grad = _ptr(grad)
    cdef void* p_exp_avg = _ptr(exp_avg)
    cdef void* p_exp_avg_sq = _ptr(exp_avg_sq)
    cdef void* p_scalars = _ptr(scalars)
    if _is_f32(param):
        with nogil:
            _adam(<float*>p_param, <float*>p_grad, <float*>p_exp_avg,
                  <float*>p_exp_avg_sq, <float*>p_scalars, n, parallel)
    else:
        with nogil:
            _adam(<double*>p_param, <double*>p_grad, <double*>p_exp_avg,
                  <double*>p_exp_avg_sq, <double*>p_scalars, n, parallel)


def adam_update_parallel(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray exp_avg,
                         cnp.ndarray exp_avg_sq, cnp.ndarray scalars):
    """One Adam/AdamW update of a flat parameter, its loop shared between the threads."""
    _adam_call(param, grad, exp_avg, exp_avg_sq, scalars, True)


def adam_update_serial(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray exp_avg,
                       cnp.ndarray exp_avg_sq, cnp.ndarray scalars):
    """One Adam/AdamW update of a flat parameter on the calling thread."""
    _adam_call(param, grad, exp_avg, exp_avg_sq, scalars, False)
