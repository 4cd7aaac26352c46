# Why Cython and not numba (where the other elementwise families live): these are the kernels
# every plain dense or conv model's training step calls (ReLU's gradient, 2x2 max pooling, the
# softmax cross-entropy, Adam). Compiled at install, per ISA level like _blas, they make a first
# training step of such a model need no JIT at all (no numba import, no compilation with an
# empty numba cache). The loops are those of the numba versions they replaced, with the same
# float32 exponential (kernels/vecmath.h is the C twin of _fastmath.py).
"""ReLU, 2x2 max pooling, softmax cross-entropy and Adam: the compiled kernels under
fastnn._core.basic's wrappers (which validate everything before calling in here)."""
from cython cimport floating
from cython.parallel cimport parallel
from libc.math cimport exp, log, sqrt, INFINITY
from libc.stdint cimport int64_t
cimport numpy as cnp
cimport openmp

cnp.import_array()

cdef extern from "kernels/vecmath.h":
    float fnn_expf(float v) noexcept nogil
    float fnn_selectf(int c, float a, float b) noexcept nogil

cdef extern from "kernels/pool.h":
    void fnn_maxpool2x2_f32(const float* x, float* out, int64_t* argmax, int64_t lo, int64_t hi,
                            int64_t h, int64_t w, int64_t oh, int64_t ow) noexcept nogil


# ---- helpers --------------------------------------------------------------------------------------
cdef inline bint _is_f32(cnp.ndarray a):
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


cdef inline void* _ptr(cnp.ndarray a):
    return cnp.PyArray_DATA(a)


# The parallel kernels run one OpenMP region per call in which each thread takes one contiguous
# share of the outer range (no worksharing loop: its barrier would come on top of the region's,
# and under load every barrier waits for a descheduled thread); a count a kernel returns is
# summed from one slot per thread.
cdef enum:
    MAX_THREADS = 256


cdef inline int _team() noexcept nogil:
    cdef int n = openmp.omp_get_max_threads()
    return n if n < MAX_THREADS else MAX_THREADS


cdef inline Py_ssize_t _share(Py_ssize_t n, Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    # the start of share ``part`` of ``parts`` over range(n)
    return n * part // parts


cdef inline float _exp_diff32(float a, float b) noexcept nogil:
    # exp(a - b) as if a - b were not rounded: the difference's rounding error (two-sum) corrects
    # the exponential to first order (_fastmath._exp_diff's float32 version)
    # (selects, not branches: a loop over it vectorises)
    cdef float d = a - b
    cdef float t = d - a
    cdef float err = (a - (d - t)) + (-b - t)
    err = fnn_selectf(err != err, 0.0, err)  # infinite or NaN difference: no correction
    cdef float e = fnn_expf(d)
    return fnn_selectf(e < INFINITY, e + e * err, e)  # inf * 0 would be NaN


# ---- ReLU (flat arrays) ---------------------------------------------------------------------------
cdef void _relu_fwd(floating* x, floating* out, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(lo, hi):
        v = x[i]
        out[i] = 0 if v <= 0 else v  # NaN propagates, as torch.relu


cdef void _relu_bwd(floating* x, floating* dy, floating* dx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        dx[i] = 0 if x[i] <= 0 else dy[i]


cdef void _relu_fwd_run(floating* x, floating* out, Py_ssize_t n, bint par) noexcept nogil:
    cdef int t, nt
    if not par:
        _relu_fwd(x, out, 0, n)
        return
    with parallel(num_threads=_team()):
        t = openmp.omp_get_thread_num()
        nt = openmp.omp_get_num_threads()
        _relu_fwd(x, out, _share(n, t, nt), _share(n, t + 1, nt))


cdef void _relu_bwd_run(floating* x, floating* dy, floating* dx, Py_ssize_t n, bint par) noexcept nogil:
    cdef int t, nt
    if not par:
        _relu_bwd(x, dy, dx, 0, n)
        return
    with parallel(num_threads=_team()):
        t = openmp.omp_get_thread_num()
        nt = openmp.omp_get_num_threads()
        _relu_bwd(x, dy, dx, _share(n, t, nt), _share(n, t + 1, nt))


def relu_forward(cnp.ndarray x, cnp.ndarray out, bint threaded):
    """out := max(x, 0) over contiguous arrays of one dtype and size."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef void* px = _ptr(x)
    cdef void* po = _ptr(out)
    if _is_f32(x):
        with nogil:
            _relu_fwd_run(<float*>px, <float*>po, n, threaded)
    else:
        with nogil:
            _relu_fwd_run(<double*>px, <double*>po, n, threaded)


def relu_backward(cnp.ndarray x, cnp.ndarray dy, cnp.ndarray dx, bint threaded):
    """dx := dy where x > 0, else 0."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef void* px = _ptr(x)
    cdef void* pdy = _ptr(dy)
    cdef void* pdx = _ptr(dx)
    if _is_f32(x):
        with nogil:
            _relu_bwd_run(<float*>px, <float*>pdy, <float*>pdx, n, threaded)
    else:
        with nogil:
            _relu_bwd_run(<double*>px, <double*>pdy, <double*>pdx, n, threaded)


# ---- softmax cross-entropy on (M, C) --------------------------------------------------------------
cdef int _ce_fwd_rows(floating* z, int64_t* target, floating* p, double* row_loss, Py_ssize_t lo,
                      Py_ssize_t hi, Py_ssize_t cols) noexcept nogil:
    # rows [lo, hi): p := softmax(z); row_loss := lse - z[target] (0 for a label outside
    # [0, cols), counted, never read); a NaN logit makes its row's p and loss NaN
    cdef Py_ssize_t m, j
    cdef floating top
    cdef floating* zm
    cdef floating* pm
    cdef double s, inv
    cdef int64_t t
    cdef int bad = 0
    for m in range(lo, hi):
        zm = z + m * cols
        pm = p + m * cols
        top = zm[0]
        for j in range(1, cols):
            if zm[j] > top:
                top = zm[j]
        for j in range(cols):  # apart from the sum, so the exponentials vectorise
            if floating is float:
                pm[j] = _exp_diff32(zm[j], top)
            else:
                pm[j] = exp(zm[j] - top)
        s = 0.0
        for j in range(cols):
            s += pm[j]
        inv = 1.0 / s
        for j in range(cols):
            pm[j] = <floating>(pm[j] * inv)
        t = target[m]
        if 0 <= t < cols:
            row_loss[m] = (top + log(s)) - zm[t]
        else:
            row_loss[m] = 0.0
            bad += 1
    return bad


cdef int _ce_fwd(floating* z, int64_t* target, floating* p, double* row_loss, Py_ssize_t rows,
                 Py_ssize_t cols, bint par) noexcept nogil:
    cdef int t, nt, k, bad = 0
    cdef int counts[MAX_THREADS]
    if not par:
        return _ce_fwd_rows(z, target, p, row_loss, 0, rows, cols)
    nt = _team()
    for k in range(nt):
        counts[k] = 0
    with parallel(num_threads=nt):
        t = openmp.omp_get_thread_num()
        counts[t] = _ce_fwd_rows(z, target, p, row_loss, _share(rows, t, openmp.omp_get_num_threads()),
                                 _share(rows, t + 1, openmp.omp_get_num_threads()), cols)
    for k in range(nt):
        bad += counts[k]
    return bad


def softmax_cross_entropy_forward(cnp.ndarray logits, cnp.ndarray target, cnp.ndarray probs,
                                  cnp.ndarray row_loss, bint threaded):
    """probs := softmax(logits); row_loss[m] := lse - logits[m, target[m]]; returns (sum of
    row_loss in row order, count of labels outside [0, C)): the same bits for any thread count."""
    cdef Py_ssize_t rows = cnp.PyArray_DIM(logits, 0), cols = cnp.PyArray_DIM(logits, 1), m
    cdef int bad
    cdef double total = 0.0
    cdef double* rl = <double*>_ptr(row_loss)
    cdef void* pz = _ptr(logits)
    cdef void* pt = _ptr(target)
    cdef void* pp = _ptr(probs)
    if _is_f32(logits):
        with nogil:
            bad = _ce_fwd(<float*>pz, <int64_t*>pt, <float*>pp, rl, rows, cols, threaded)
    else:
        with nogil:
            bad = _ce_fwd(<double*>pz, <int64_t*>pt, <double*>pp, rl, rows, cols, threaded)
    for m in range(rows):
        total += rl[m]
    return total, bad


cdef int _ce_bwd_rows(floating* p, int64_t* target, double factor, floating* d, Py_ssize_t lo,
                      Py_ssize_t hi, Py_ssize_t cols) noexcept nogil:
    cdef Py_ssize_t m, j
    cdef int64_t t
    cdef int bad = 0
    for m in range(lo, hi):
        for j in range(cols):
            d[m * cols + j] = <floating>(factor * p[m * cols + j])
        t = target[m]
        if 0 <= t < cols:
            # factor * (p - 1) rounded once: p - 1 is exact in double
            d[m * cols + t] = <floating>(factor * (p[m * cols + t] - 1.0))
        else:
            bad += 1
    return bad


cdef int _ce_bwd(floating* p, int64_t* target, double factor, floating* d, Py_ssize_t rows,
                 Py_ssize_t cols, bint par) noexcept nogil:
    cdef int t, nt, k, bad = 0
    cdef int counts[MAX_THREADS]
    if not par:
        return _ce_bwd_rows(p, target, factor, d, 0, rows, cols)
    nt = _team()
    for k in range(nt):
        counts[k] = 0
    with parallel(num_threads=nt):
        t = openmp.omp_get_thread_num()
        counts[t] = _ce_bwd_rows(p, target, factor, d, _share(rows, t, openmp.omp_get_num_threads()),
                                 _share(rows, t + 1, openmp.omp_get_num_threads()), cols)
    for k in range(nt):
        bad += counts[k]
    return bad


def softmax_cross_entropy_backward(cnp.ndarray probs, cnp.ndarray target, double factor,
                                   cnp.ndarray dlogits, bint threaded):
    """dlogits := factor * (probs - onehot(target)); returns the count of bad labels."""
    cdef Py_ssize_t rows = cnp.PyArray_DIM(probs, 0), cols = cnp.PyArray_DIM(probs, 1)
    cdef int bad
    cdef void* pp = _ptr(probs)
    cdef void* pt = _ptr(target)
    cdef void* pd = _ptr(dlogits)
    if _is_f32(probs):
        with nogil:
            bad = _ce_bwd(<float*>pp, <int64_t*>pt, factor, <float*>pd, rows, cols, threaded)
    else:
        with nogil:
            bad = _ce_bwd(<double*>pp, <int64_t*>pt, factor, <double*>pd, rows, cols, threaded)
    return bad


# ---- max pooling on planes (P, H, W) --------------------------------------------------------------
cdef inline floating _select(Py_ssize_t c, floating a, floating b) noexcept nogil:
    if floating is float:
        return fnn_selectf(<int>c, a, b)
    return a if c else b


cdef void _maxpool_2x2_planes(floating* x, floating* out, int64_t* argmax, Py_ssize_t lo,
                              Py_ssize_t hi, Py_ssize_t h, Py_ssize_t w, Py_ssize_t oh,
                              Py_ssize_t ow) noexcept nogil:
    # the 2x2 window at stride 2, no padding: the window's four values compared in row order,
    # strictly greater (the first maximum wins) or NaN (propagates), as PyTorch
    # selects, not branches (on random data the comparisons are unpredictable; gcc branches on a
    # float ?:): the index by a mask, the float32 value by vecmath.h's bit select
    cdef Py_ssize_t p, i, j, top, where, k0, k1
    cdef floating best, v
    cdef Py_ssize_t c
    cdef floating* row0
    cdef floating* row1
    cdef floating* o
    cdef int64_t* a
    if floating is float:
        if h * w < (<Py_ssize_t>1 << 31):  # kernels/pool.h: vectorised, the same comparisons
            fnn_maxpool2x2_f32(x, out, argmax, lo, hi, h, w, oh, ow)
            return
    for p in range(lo, hi):
        for i in range(oh):
            top = (p * h + 2 * i) * w
            row0 = x + top
            row1 = row0 + w
            o = out + (p * oh + i) * ow
            a = argmax + (p * oh + i) * ow
            k0 = 2 * i * w
            k1 = k0 + w
            for j in range(ow):
                where = k0 + 2 * j
                best = row0[2 * j]
                v = row0[2 * j + 1]
                c = (v > best) | (v != v)
                best = _select(c, v, best)
                where ^= (where ^ (k0 + 2 * j + 1)) & -c
                v = row1[2 * j]
                c = (v > best) | (v != v)
                best = _select(c, v, best)
                where ^= (where ^ (k1 + 2 * j)) & -c
                v = row1[2 * j + 1]
                c = (v > best) | (v != v)
                best = _select(c, v, best)
                where ^= (where ^ (k1 + 2 * j + 1)) & -c
                o[j] = best
                a[j] = where


cdef void _maxpool_2x2(floating* x, floating* out, int64_t* argmax, Py_ssize_t planes, Py_ssize_t h,
                       Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow, bint par) noexcept nogil:
    cdef int t, nt
    if not par:
        _maxpool_2x2_planes(x, out, argmax, 0, planes, h, w, oh, ow)
        return
    with parallel(num_threads=_team()):
        t = openmp.omp_get_thread_num()
        nt = openmp.omp_get_num_threads()
        _maxpool_2x2_planes(x, out, argmax, _share(planes, t, nt), _share(planes, t + 1, nt), h, w, oh, ow)


def maxpool2d_forward_2x2(cnp.ndarray x, cnp.ndarray out, cnp.ndarray argmax, bint threaded):
    """out, argmax (P, OH, OW) := max and its flat h*W + w over each 2x2 window of x (P, H, W)."""
    cdef Py_ssize_t planes = cnp.PyArray_DIM(x, 0), h = cnp.PyArray_DIM(x, 1), w = cnp.PyArray_DIM(x, 2)
    cdef Py_ssize_t oh = cnp.PyArray_DIM(out, 1), ow = cnp.PyArray_DIM(out, 2)
    cdef void* px = _ptr(x)
    cdef void* po = _ptr(out)
    cdef void* pa = _ptr(argmax)
    if _is_f32(x):
        with nogil:
            _maxpool_2x2(<float*>px, <float*>po, <int64_t*>pa, planes, h, w, oh, ow, threaded)
    else:
        with nogil:
            _maxpool_2x2(<double*>px, <double*>po, <int64_t*>pa, planes, h, w, oh, ow, threaded)


cdef int _maxpool_bwd_planes(floating* dy, int64_t* argmax, floating* dx, Py_ssize_t lo, Py_ssize_t hi,
                             Py_ssize_t hw, Py_ssize_t positions) noexcept nogil:
    cdef Py_ssize_t p, q, k
    cdef int64_t idx
    cdef int bad = 0
    cdef floating* d
    for p in range(lo, hi):
        d = dx + p * hw
        for q in range(hw):
            d[q] = 0
        for k in range(positions):
            idx = argmax[p * positions + k]
            if 0 <= idx < hw:
                d[idx] += dy[p * positions + k]
            else:
                bad += 1
    return bad


cdef int _maxpool_bwd(floating* dy, int64_t* argmax, floating* dx, Py_ssize_t planes,
                      Py_ssize_t hw, Py_ssize_t positions, bint par) noexcept nogil:
    cdef int t, nt, k, bad = 0
    cdef int counts[MAX_THREADS]
    if not par:
        return _maxpool_bwd_planes(dy, argmax, dx, 0, planes, hw, positions)
    nt = _team()
    for k in range(nt):
        counts[k] = 0
    with parallel(num_threads=nt):
        t = openmp.omp_get_thread_num()
        counts[t] = _maxpool_bwd_planes(dy, argmax, dx, _share(planes, t, openmp.omp_get_num_threads()),
                                        _share(planes, t + 1, openmp.omp_get_num_threads()), hw, positions)
    for k in range(nt):
        bad += counts[k]
    return bad


def maxpool2d_backward(cnp.ndarray dy, cnp.ndarray argmax, cnp.ndarray dx, bint threaded):
    """dx (P, HW) := 0, then dy (P, K) added at argmax (P, K) in each plane; returns the count of
    argmax entries outside [0, HW) (skipped)."""
    cdef Py_ssize_t planes = cnp.PyArray_DIM(dx, 0), hw = cnp.PyArray_DIM(dx, 1)
    cdef Py_ssize_t positions = cnp.PyArray_DIM(dy, 1)
    cdef int bad
    cdef void* pdy = _ptr(dy)
    cdef void* pa = _ptr(argmax)
    cdef void* pdx = _ptr(dx)
    if _is_f32(dy):
        with nogil:
            bad = _maxpool_bwd(<float*>pdy, <int64_t*>pa, <float*>pdx, planes, hw, positions, threaded)
    else:
        with nogil:
            bad = _maxpool_bwd(<double*>pdy, <int64_t*>pa, <double*>pdx, planes, hw, positions, threaded)
    return bad


# ---- Adam / AdamW (flat arrays) -------------------------------------------------------------------
cdef void _adam_range(floating* param, floating* grad, floating* exp_avg, floating* exp_avg_sq,
                      floating* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # s: (weight, 1 - weight, beta2, 1 - beta2, eps, l2, shrink, step_size, bc2_sqrt) in the
    # parameter's dtype (fastnn._core.basic.adam_scalars); the arithmetic in that dtype, in
    # torch's order
    cdef floating weight = s[0], one_minus_weight = s[1], beta2 = s[2], one_minus_beta2 = s[3]
    cdef floating eps = s[4], l2 = s[5], shrink = s[6], step_size = s[7], bc2_sqrt = s[8]
    cdef Py_ssize_t i
    cdef floating p, g, m, v, root
    for i in range(lo, hi):
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


cdef void _adam(floating* param, floating* grad, floating* exp_avg, floating* exp_avg_sq,
                floating* s, Py_ssize_t n, bint par) noexcept nogil:
    cdef int t, nt
    if not par:
        _adam_range(param, grad, exp_avg, exp_avg_sq, s, 0, n)
        return
    with parallel(num_threads=_team()):
        t = openmp.omp_get_thread_num()
        nt = openmp.omp_get_num_threads()
        _adam_range(param, grad, exp_avg, exp_avg_sq, s, _share(n, t, nt), _share(n, t + 1, nt))


cdef inline void _adam_call(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray exp_avg,
                            cnp.ndarray exp_avg_sq, cnp.ndarray scalars, bint par):
    cdef Py_ssize_t n = cnp.PyArray_SIZE(param)
    cdef void* pp = _ptr(param)
    cdef void* pg = _ptr(grad)
    cdef void* pm = _ptr(exp_avg)
    cdef void* pv = _ptr(exp_avg_sq)
    cdef void* ps = _ptr(scalars)
    if _is_f32(param):
        with nogil:
            _adam(<float*>pp, <float*>pg, <float*>pm, <float*>pv, <float*>ps, n, par)
    else:
        with nogil:
            _adam(<double*>pp, <double*>pg, <double*>pm, <double*>pv, <double*>ps, n, par)


def adam_update_parallel(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray exp_avg,
                         cnp.ndarray exp_avg_sq, cnp.ndarray scalars):
    """One Adam/AdamW update of a flat parameter, its range shared between the threads."""
    _adam_call(param, grad, exp_avg, exp_avg_sq, scalars, True)


def adam_update_serial(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray exp_avg,
                       cnp.ndarray exp_avg_sq, cnp.ndarray scalars):
    """One Adam/AdamW update of a flat parameter on the calling thread."""
    _adam_call(param, grad, exp_avg, exp_avg_sq, scalars, False)
