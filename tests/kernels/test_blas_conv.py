"""The Cython core (_blas, _conv) against the NumPy reference, plus its validation."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastnn
from fastnn import _core
from fastnn._core import _conv, reference
from fastnn._core.tuning import tuning

DTYPES = [np.float32, np.float64]
TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-10}


def assert_close(actual, expected):
    tol = TOL[actual.dtype]
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ---- GEMM and dense ----------------------------------------------------------------------------

@given(m=st.integers(0, 40), n=st.integers(0, 40), k=st.integers(0, 40), trans_a=st.booleans(),
       trans_b=st.booleans(), alpha=st.sampled_from([1.0, 0.5, -2.0]), beta=st.sampled_from([0.0, 1.0, 0.3]),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2 ** 16))
def test_gemm_matches_reference(m, n, k, trans_a, trans_b, alpha, beta, dtype, seed):
    rng = np.random.default_rng(seed)
    a = rand(rng, (k, m) if trans_a else (m, k), dtype)
    b = rand(rng, (n, k) if trans_b else (k, n), dtype)
    out = rand(rng, (m, n), dtype)
    if beta == 0.0:
        out[...] = np.nan  # beta = 0 must ignore whatever out holds, as BLAS does
    expected = reference.gemm(a, b, out.copy(), trans_a, trans_b, alpha, beta)
    _core.gemm(a, b, out, trans_a, trans_b, alpha, beta)
    assert_close(out, expected)


def test_gemm_large_multithreaded():
    rng = np.random.default_rng(0)
    a, b = rand(rng, (300, 257), np.float32), rand(rng, (257, 190), np.float32)
    out = np.empty((300, 190), np.float32)
    _core.gemm(a, b, out)
    assert_close(out, reference.gemm(a, b, out.copy()))


@given(m=st.integers(1, 80), n=st.integers(1, 30), k=st.integers(1, 30),
       activation=st.sampled_from(_core.ACTIVATIONS), with_bias=st.booleans(),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2 ** 16))
def test_dense_forward_matches_reference(m, n, k, activation, with_bias, dtype, seed):
    rng = np.random.default_rng(seed)
    x, w = rand(rng, (m, k), dtype) * 3, rand(rng, (n, k), dtype)
    b = rand(rng, (n,), dtype) if with_bias else None
    out = np.full((m, n), np.nan, dtype)
    expected = reference.dense_forward(x, w, b, out.copy(), activation, 0.2)
    _core.dense_forward(x, w, b, out, activation, 0.2)
    assert_close(out, expected)


@pytest.mark.parametrize("activation", _core.ACTIVATIONS)
def test_dense_forward_row_blocked_epilogue(activation):
    # A (2000, 300) float32 output is 2.4 MB: three epilogue row blocks of ~1 MB, the last partial.
    rng = np.random.default_rng(1)
    x, w, b = rand(rng, (2000, 40), np.float32), rand(rng, (300, 40), np.float32), rand(rng, (300,), np.float32)
    out = np.empty((2000, 300), np.float32)
    _core.dense_forward(x, w, b, out, activation, 0.01)
    assert_close(out, reference.dense_forward(x, w, b, out.copy(), activation, 0.01))


def test_sigmoid_epilogue_is_stable_for_large_logits():
    x = np.array([[1.0], [-1.0]], np.float32)
    w = np.array([[1000.0]], np.float32)
    out = np.empty((2, 1), np.float32)
    _core.dense_forward(x, w, None, out, "sigmoid")
    assert np.all(np.isfinite(out)) and out[0, 0] == 1.0 and out[1, 0] == 0.0


@given(m=st.integers(1, 50), n=st.integers(1, 30), k=st.integers(1, 30), dtype=st.sampled_from(DTYPES),
       skip=st.sampled_from(["none", "dx", "dweight", "dbias"]), seed=st.integers(0, 2 ** 16))
def test_dense_backward_matches_reference_and_accumulates(m, n, k, dtype, skip, seed):
    rng = np.random.default_rng(seed)
    x, w, dy = rand(rng, (m, k), dtype), rand(rng, (n, k), dtype), rand(rng, (m, n), dtype)
    outs = {"dx": np.full((m, k), np.nan, dtype), "dweight": rand(rng, (n, k), dtype),
            "dbias": rand(rng, (n,), dtype)}  # dweight, dbias start non-zero: they must accumulate
    if skip != "none":
        outs[skip] = None
    expected = {key: (None if v is None else v.copy()) for key, v in outs.items()}
    reference.dense_backward(x, w, dy, expected["dx"], expected["dweight"], expected["dbias"])
    _core.dense_backward(x, w, dy, outs["dx"], outs["dweight"], outs["dbias"])
    for key, v in outs.items():
        if v is not None:
            assert_close(v, expected[key])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n, k", [(128, 256, 256), (300, 10, 72), (5, 3, 7), (9, 0, 4)])
def test_dense_backward_through_a_relu_is_dense_backward_then_relu_backward_bitwise(dtype, m, n, k):
    """relu=True: dx masked by x > 0 (the ReLU whose output x is; NaN in x keeps the value, as
    relu_backward) as the GEMM writes it, dweight and dbias unchanged; the bits of the two
    passes at one and two threads (the 2-thread pair of GEMMs, the microkernel's row blocks,
    BLAS for n < 16, an empty n), and the reference's values."""
    rng = np.random.default_rng(m + n + k)
    x = np.maximum(rand(rng, (m, k), dtype), 0)
    x.flat[::97] = np.nan
    w, dy = rand(rng, (n, k), dtype), rand(rng, (m, n), dtype)
    previous = fastnn.get_num_threads()
    try:
        for threads in (1, 2):
            fastnn.set_num_threads(threads)
            want = [np.empty((m, k), dtype), np.ones((n, k), dtype), np.ones(n, dtype)]
            _core.dense_backward(x, w, dy, *want)
            _core.relu_backward(x, want[0], want[0])
            got = [np.full((m, k), 7, dtype), np.ones((n, k), dtype), np.ones(n, dtype)]
            _core.dense_backward(x, w, dy, *got, relu=True)
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)
    finally:
        fastnn.set_num_threads(previous)
    ref = [np.empty((m, k), dtype), np.ones((n, k), dtype), np.ones(n, dtype)]
    reference.dense_backward(x, w, dy, *ref, relu=True)
    assert_close(got[0][np.isfinite(got[0])], ref[0][np.isfinite(ref[0])])


# ---- convolution -------------------------------------------------------------------------------

@st.composite
def conv_configs(draw):
    """Shapes where the kernel fits: rectangular, 1x1, stride > kernel, kernel = input, padding <= k-1."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return dict(n=n, c=c, h=h, w=w, o=o, k=(kh, kw), s=(sh, sw), p=(ph, pw),
                dtype=draw(st.sampled_from(DTYPES)), seed=draw(st.integers(0, 2 ** 16)),
                chunk=draw(st.sampled_from([1, 1 << 30])))


def out_grid(cfg):
    (kh, kw), (sh, sw), (ph, pw) = cfg["k"], cfg["s"], cfg["p"]
    return (cfg["h"] + 2 * ph - kh) // sh + 1, (cfg["w"] + 2 * pw - kw) // sw + 1


@given(cfg=conv_configs())
def test_im2col_col2im_match_reference(cfg):
    rng = np.random.default_rng(cfg["seed"])
    dt, k, s, p = cfg["dtype"], cfg["k"], cfg["s"], cfg["p"]
    oh, ow = out_grid(cfg)
    x = rand(rng, (cfg["n"], cfg["c"], cfg["h"], cfg["w"]), dt)
    col = np.full((cfg["n"], cfg["c"] * k[0] * k[1], oh * ow), np.nan, dt)
    _core.im2col(x, k, s, p, col)
    assert_close(col, reference.im2col(x, k, s, p, col.copy()))
    col = rand(rng, col.shape, dt)
    img = np.full(x.shape, np.nan, dt)
    _core.col2im(col, k, s, p, img)
    assert_close(img, reference.col2im(col, k, s, p, img.copy()))


@pytest.mark.parametrize("k, p", [(1, 0), (2, 0), (3, 1), (3, 2), (1, 1)])
@pytest.mark.parametrize("w", [15, 16, 17, 31, 32, 33, 40])
def test_im2col_stride_two_rows_equal_reference(k, p, w):
    """Rows wide enough for the stride-2 vector gather (8 outputs from two loads), with the
    loads near the row's end and padding either side: the exact copy of the reference."""
    rng = np.random.default_rng(w * 10 + k)
    x = rng.standard_normal((2, 3, 9, w)).astype(np.float32)
    oh, ow = (9 + 2 * p - k) // 2 + 1, (w + 2 * p - k) // 2 + 1
    col = np.full((2, 3 * k * k, oh * ow), np.nan, np.float32)
    _core.im2col(x, k, 2, p, col)
    np.testing.assert_array_equal(col, reference.im2col(x, k, 2, p, col.copy()))
    wt = rng.standard_normal((8, 3, k, k)).astype(np.float32)
    dy = rng.standard_normal((2, 8, oh, ow)).astype(np.float32)
    from fastnn._core import isa
    forced = (dict(conv_forward="im2col_forward/f32", conv_dw="im2col_dw/nt")
              if isa.LEVEL in ("avx2", "avx512") else {})  # (the microkernel's routes)
    with tuning(**forced):
        out = _core.conv2d_forward(x, wt, None, np.empty((2, 8, oh, ow), np.float32), 2, p)
        dw = np.zeros_like(wt)
        _core.conv2d_backward(x, wt, dy, None, dw, None, 2, p)
    assert_close(out, reference.conv2d_forward(x, wt, None, np.empty_like(out), 2, p))
    want = [None, np.zeros_like(wt), None]
    reference.conv2d_backward(x, wt, dy, *want, 2, p)
    assert_close(dw, want[1])


@given(cfg=conv_configs(), with_bias=st.booleans())
def test_conv2d_matches_reference(cfg, with_bias):
    rng = np.random.default_rng(cfg["seed"])
    dt, k, s, p = cfg["dtype"], cfg["k"], cfg["s"], cfg["p"]
    n, c, o = cfg["n"], cfg["c"], cfg["o"]
    oh, ow = out_grid(cfg)
    x, w = rand(rng, (n, c, cfg["h"], cfg["w"]), dt), rand(rng, (o, c) + k, dt)
    b = rand(rng, (o,), dt) if with_bias else None
    with tuning(conv_col_chunk_bytes=cfg["chunk"]):
        out = np.full((n, o, oh, ow), np.nan, dt)
        _core.conv2d_forward(x, w, b, out, s, p)
        assert_close(out, reference.conv2d_forward(x, w, b, out.copy(), s, p))
        dy = rand(rng, out.shape, dt)
        dx, dw, db = np.full(x.shape, np.nan, dt), rand(rng, w.shape, dt), rand(rng, (o,), dt)
        ex = [dx.copy(), dw.copy(), db.copy()]
        reference.conv2d_backward(x, w, dy, *ex, s, p)
        _core.conv2d_backward(x, w, dy, dx, dw, db, s, p)
        for got, want in zip((dx, dw, db), ex):
            assert_close(got, want)


@given(cfg=conv_configs(), data=st.data())
def test_conv_transpose2d_matches_reference(cfg, data):
    rng = np.random.default_rng(cfg["seed"])
    dt, (kh, kw), (sh, sw), (ph, pw) = cfg["dtype"], cfg["k"], cfg["s"], cfg["p"]
    n, cin, cout, h, w = cfg["n"], cfg["c"], cfg["o"], cfg["h"], cfg["w"]
    oph, opw = data.draw(st.integers(0, sh - 1)), data.draw(st.integers(0, sw - 1))
    oh, ow = (h - 1) * sh - 2 * ph + kh + oph, (w - 1) * sw - 2 * pw + kw + opw
    if oh < 1 or ow < 1:
        return
    x, wt, b = rand(rng, (n, cin, h, w), dt), rand(rng, (cin, cout, kh, kw), dt), rand(rng, (cout,), dt)
    with tuning(conv_col_chunk_bytes=cfg["chunk"]):
        out = np.full((n, cout, oh, ow), np.nan, dt)
        _core.conv_transpose2d_forward(x, wt, b, out, (sh, sw), (ph, pw))
        assert_close(out, reference.conv_transpose2d_forward(x, wt, b, out.copy(), (sh, sw), (ph, pw)))
        dy = rand(rng, out.shape, dt)
        dx, dw, db = np.full(x.shape, np.nan, dt), rand(rng, wt.shape, dt), rand(rng, (cout,), dt)
        ex = [dx.copy(), dw.copy(), db.copy()]
        reference.conv_transpose2d_backward(x, wt, dy, *ex, (sh, sw), (ph, pw))
        _core.conv_transpose2d_backward(x, wt, dy, dx, dw, db, (sh, sw), (ph, pw))
        for got, want in zip((dx, dw, db), ex):
            assert_close(got, want)


@given(cfg=conv_configs())
def test_conv_transpose_is_the_adjoint_of_conv(cfg):
    """<conv2d(u), v> == <u, conv_transpose2d(v)> with the same weight and no bias."""
    rng = np.random.default_rng(cfg["seed"])
    k, s, p = cfg["k"], cfg["s"], cfg["p"]
    n, c, o = cfg["n"], cfg["c"], cfg["o"]
    oh, ow = out_grid(cfg)
    u, w = rand(rng, (n, c, cfg["h"], cfg["w"]), np.float64), rand(rng, (o, c) + k, np.float64)
    v = rand(rng, (n, o, oh, ow), np.float64)
    conv_u = _core.conv2d_forward(u, w, None, np.empty(v.shape), s, p)
    # conv2d maps (c, h, w) -> (o, oh, ow); its transpose takes weight (o, c, kh, kw) as (in, out).
    # u's size is always reachable: the stride leftover of conv2d is the transpose's output padding.
    convt_v = _core.conv_transpose2d_forward(v, w, None, np.empty(u.shape), s, p)
    np.testing.assert_allclose(np.vdot(conv_u, v), np.vdot(u, convt_v), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel", ["dx", "dweight", "dbias"])
def test_conv_backward_skips_none_outputs(kernel):
    rng = np.random.default_rng(3)
    x, w = rand(rng, (2, 3, 6, 6), np.float64), rand(rng, (4, 3, 3, 3), np.float64)
    dy = rand(rng, (2, 4, 4, 4), np.float64)
    outs = {"dx": np.zeros(x.shape), "dweight": np.zeros(w.shape), "dbias": np.zeros(4)}
    want = {key: v.copy() for key, v in outs.items()}
    reference.conv2d_backward(x, w, dy, want["dx"], want["dweight"], want["dbias"], 1, 0)
    outs[kernel] = None
    _core.conv2d_backward(x, w, dy, outs["dx"], outs["dweight"], outs["dbias"], 1, 0)
    for key, v in outs.items():
        if v is not None:
            assert_close(v, want[key])


def test_results_do_not_depend_on_thread_count():
    rng = np.random.default_rng(4)
    x, w, b = rand(rng, (8, 5, 12, 12), np.float32), rand(rng, (7, 5, 3, 3), np.float32), rand(rng, (7,), np.float32)
    dy = rand(rng, (8, 7, 12, 12), np.float32)
    a, bm = rand(rng, (200, 150), np.float32), rand(rng, (150, 120), np.float32)
    previous = fastnn.get_num_threads()

    def run():
        out = np.empty((8, 7, 12, 12), np.float32)
        _core.conv2d_forward(x, w, b, out, 1, 1)
        dx, dw, db = np.empty_like(x), np.zeros_like(w), np.zeros_like(b)
        _core.conv2d_backward(x, w, dy, dx, dw, db, 1, 1)
        g = _core.gemm(a, bm, np.empty((200, 120), np.float32))
        return out, dx, dw, db, g

    try:
        fastnn.set_num_threads(1)
        one = run()
        fastnn.set_num_threads(2)
        two = run()
    finally:
        fastnn.set_num_threads(previous)
    for r1, r2 in zip(one, two):
        # dw sums N*OH*OW = 1152 products per entry, in per-thread chunks: float32 rounding of
        # a sum is relative to the size of its terms, so the tolerance follows the array's scale
        np.testing.assert_allclose(r1, r2, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(r2).max()))


# ---- validation --------------------------------------------------------------------------------

F32, F64 = np.float32, np.float64


def bad_calls():
    x = np.zeros((2, 3, 6, 6), F32)
    w = np.zeros((4, 3, 3, 3), F32)
    out = np.zeros((2, 4, 4, 4), F32)
    ro = out.copy()
    ro.flags.writeable = False
    yield "gemm", ValueError, lambda: _core.gemm(np.zeros((2, 3), F32), np.zeros((4, 5), F32), np.zeros((2, 5), F32))
    yield "gemm", ValueError, lambda: _core.gemm(np.zeros((2, 3), F32), np.zeros((3, 5), F32), np.zeros((2, 4), F32))
    yield "gemm", TypeError, lambda: _core.gemm(np.zeros((2, 3), F32), np.zeros((3, 5), F64), np.zeros((2, 5), F32))
    yield "gemm", TypeError, lambda: _core.gemm(np.zeros((2, 3), np.int64), np.zeros((3, 5)), np.zeros((2, 5)))
    yield "gemm", ValueError, lambda: _core.gemm(np.zeros((3, 2), F32).T, np.zeros((3, 5), F32), np.zeros((2, 5), F32))
    yield "gemm", ValueError, lambda: _core.gemm(np.zeros((2, 3, 1), F32), np.zeros((3, 5), F32), np.zeros((2, 5), F32))
    yield "dense_forward", ValueError, lambda: _core.dense_forward(np.zeros((2, 3), F32), np.zeros((4, 5), F32), None, np.zeros((2, 4), F32))
    yield "dense_forward", ValueError, lambda: _core.dense_forward(np.zeros((2, 3), F32), np.zeros((4, 3), F32), np.zeros(5, F32), np.zeros((2, 4), F32))
    yield "dense_forward", ValueError, lambda: _core.dense_forward(np.zeros((2, 3), F32), np.zeros((4, 3), F32), None, np.zeros((2, 4), F32), "gelu")
    yield "dense_forward", ValueError, lambda: _core.dense_forward(np.zeros((2, 3), F32), np.zeros((4, 3), F32), None, ro[0, 0, :2])
    yield "dense_forward", TypeError, lambda: _core.dense_forward(np.zeros((2, 3), F32), np.zeros((4, 3), F32), None, np.zeros((2, 4), F64))
    yield "dense_forward", TypeError, lambda: _core.dense_forward([[1.0]], np.zeros((1, 1), F32), None, np.zeros((1, 1), F32))
    yield "dense_backward", ValueError, lambda: _core.dense_backward(np.zeros((2, 3)), np.zeros((4, 3)), np.zeros((2, 5)), None, None, None)
    yield "dense_backward", ValueError, lambda: _core.dense_backward(np.zeros((2, 3)), np.zeros((4, 3)), np.zeros((2, 4)), np.zeros((3, 2)), None, None)
    yield "dense_backward", ValueError, lambda: _core.dense_backward(np.zeros((2, 3)), np.zeros((4, 3)), np.zeros((2, 4)), None, np.zeros((3, 4)), None)
    yield "dense_backward", TypeError, lambda: _core.dense_backward(np.zeros((2, 3)), np.zeros((4, 3)), np.zeros((2, 4)), None, None, np.zeros(4, F32))
    yield "conv2d_forward", ValueError, lambda: _core.conv2d_forward(x[0], w, None, out, 1, 0)
    yield "conv2d_forward", ValueError, lambda: _core.conv2d_forward(np.zeros((2, 2, 6, 6), F32), w, None, out, 1, 0)
    yield "conv2d_forward", ValueError, lambda: _core.conv2d_forward(x, w, None, np.zeros((2, 4, 5, 5), F32), 1, 0)
    yield "conv2d_forward", ValueError, lambda: _core.conv2d_forward(x, w, None, ro, 1, 0)
    yield "conv2d_forward", ValueError, lambda: _core.conv2d_forward(x[:, :, ::2, ::2], w, None, np.zeros((2, 4, 1, 1), F32), 1, 0)
    yield "conv2d_forward", ValueError, lambda: _core.conv2d_forward(np.zeros((2, 3, 2, 2), F32), w, None, out, 1, 0)
    yield "conv2d_forward", ValueError, lambda: _core.conv2d_forward(x, w, None, out, 0, 0)
    yield "conv2d_forward", TypeError, lambda: _core.conv2d_forward(x.astype(F64), w, None, out, 1, 0)
    yield "conv2d_forward", ValueError, lambda: _core.conv2d_forward(x, w, np.zeros(3, F32), out, 1, 0)
    yield "conv2d_backward", ValueError, lambda: _core.conv2d_backward(x, w, np.zeros((2, 4, 5, 5), F32), None, None, None, 1, 0)
    yield "conv2d_backward", ValueError, lambda: _core.conv2d_backward(x, w, out, np.zeros((2, 3, 6, 5), F32), None, None, 1, 0)
    yield "conv2d_backward", ValueError, lambda: _core.conv2d_backward(x, w, out, None, np.zeros((4, 3, 3, 2), F32), None, 1, 0)
    yield "conv_transpose2d_forward", ValueError, lambda: _core.conv_transpose2d_forward(np.zeros((2, 5, 4, 4), F32), np.zeros((4, 3, 3, 3), F32), None, np.zeros((2, 3, 6, 6), F32), 1, 0)
    yield "conv_transpose2d_forward", ValueError, lambda: _core.conv_transpose2d_forward(np.zeros((2, 4, 4, 4), F32), np.zeros((4, 3, 3, 3), F32), None, np.zeros((2, 3, 7, 7), F32), 1, 0)
    yield "conv_transpose2d_forward", ValueError, lambda: _core.conv_transpose2d_forward(np.zeros((2, 4, 4, 4), F32), np.zeros((4, 3, 3, 3), F32), None, np.zeros((2, 3, 11, 11), F32), 2, 0)
    yield "conv_transpose2d_backward", ValueError, lambda: _core.conv_transpose2d_backward(np.zeros((2, 4, 4, 4), F32), np.zeros((4, 3, 3, 3), F32), np.zeros((2, 3, 5, 5), F32), None, None, None, 1, 0)
    yield "im2col", ValueError, lambda: _core.im2col(x, 3, 1, 0, np.zeros((2, 27, 15), F32))
    yield "im2col", ValueError, lambda: _core.im2col(x, 7, 1, 0, np.zeros((2, 147, 1), F32))
    yield "col2im", ValueError, lambda: _core.col2im(np.zeros((2, 27, 15), F32), 3, 1, 0, x)
    yield "col2im", TypeError, lambda: _core.col2im(np.zeros((2, 27, 16), F64), 3, 1, 0, x)


@pytest.mark.parametrize("kernel,error,call", list(bad_calls()))
def test_bad_input_raises_naming_the_kernel(kernel, error, call):
    with pytest.raises(error, match=kernel):
        call()


# ---- the threaded paths: split GEMM, fused per-thread conv chunks ------------------------------

@pytest.fixture
def two_threads():
    previous = fastnn.get_num_threads()
    fastnn.set_num_threads(2)
    yield
    fastnn.set_num_threads(previous)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m,n", [(130, 37), (37, 130)])  # split rows, split columns
def test_split_gemm_matches_reference(two_threads, dtype, trans_a, trans_b, m, n):
    rng = np.random.default_rng(m + 2 * n + 4 * trans_a + 8 * trans_b)
    k = 120  # m*n*k above the threshold where gemm_rm splits C over the threads
    a = rand(rng, (k, m) if trans_a else (m, k), dtype)
    b = rand(rng, (n, k) if trans_b else (k, n), dtype)
    out = rand(rng, (m, n), dtype)
    expected = reference.gemm(a, b, out.copy(), trans_a, trans_b, 0.5, 0.3)
    _core.gemm(a, b, out, trans_a, trans_b, 0.5, 0.3)
    assert_close(out, expected)
    x, w, bias = rand(rng, (m, k), dtype), rand(rng, (n, k), dtype), rand(rng, (n,), dtype)
    got = _core.dense_forward(x, w, bias, np.empty((m, n), dtype), "tanh")
    assert_close(got, reference.dense_forward(x, w, bias, np.empty((m, n), dtype), "tanh"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [2, 7])  # one chunk per thread; uneven chunks
def test_fused_conv_chunks_match_reference(two_threads, dtype, batch):
    rng = np.random.default_rng(batch)
    x, w, b = rand(rng, (batch, 8, 16, 16), dtype), rand(rng, (8, 8, 3, 3), dtype), rand(rng, (8,), dtype)
    wt, xt = rand(rng, (8, 8, 4, 4), dtype), rand(rng, (batch, 8, 12, 12), dtype)
    sample_bytes = 8 * 9 * 256 * np.dtype(dtype).itemsize
    # both shapes are big enough to run fused (one chunk of samples per thread at a time)
    assert _conv._plan(batch, sample_bytes, batch * 8 * 72 * 256)[0] == 2
    assert _conv._plan(batch, sample_bytes, batch * 8 * 8 * 16 * 144)[0] == 2
    for samples_per_chunk in (1, 3):
        with tuning(conv_col_chunk_bytes=samples_per_chunk * sample_bytes):
            out = _core.conv2d_forward(x, w, b, np.empty((batch, 8, 16, 16), dtype), 1, 1)
            assert_close(out, reference.conv2d_forward(x, w, b, np.empty_like(out), 1, 1))
            dy = rand(rng, out.shape, dtype)
            got = [np.empty_like(x), np.ones_like(w), np.ones_like(b)]  # dweight, dbias accumulate
            want = [np.empty_like(x), np.ones_like(w), np.ones_like(b)]
            _core.conv2d_backward(x, w, dy, *got, 1, 1)
            reference.conv2d_backward(x, w, dy, *want, 1, 1)
            for g, e in zip(got, want):
                assert_close(g, e)
            outt = _core.conv_transpose2d_forward(xt, wt, b, np.empty((batch, 8, 24, 24), dtype), 2, 1)
            assert_close(outt, reference.conv_transpose2d_forward(xt, wt, b, np.empty_like(outt), 2, 1))
            dyt = rand(rng, outt.shape, dtype)
            got = [np.empty_like(xt), np.ones_like(wt), np.ones_like(b)]
            want = [np.empty_like(xt), np.ones_like(wt), np.ones_like(b)]
            _core.conv_transpose2d_backward(xt, wt, dyt, *got, 2, 1)
            reference.conv_transpose2d_backward(xt, wt, dyt, *want, 2, 1)
            for g, e in zip(got, want):
                assert_close(g, e)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, stride, skip", [(1, 1, ()), (5, 1, ("dx",)), (64, 2, ("dweight",)),
                                             (3, 3, ("dbias",)), (2, 1, ("dx", "dweight"))])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_transpose2d_of_one_pixel_inputs(dtype, n, stride, skip, with_bias):
    """A 1x1 input with no padding and a one-kernel output (the DCGAN generator's first layer)
    runs as plain GEMMs; it must equal the reference like the general path."""
    rng = np.random.default_rng(n)
    cin, cout, kh, kw = 7, 5, 4, 3
    x, wt = rand(rng, (n, cin, 1, 1), dtype), rand(rng, (cin, cout, kh, kw), dtype)
    b = rand(rng, (cout,), dtype) if with_bias else None
    out = np.full((n, cout, kh, kw), np.nan, dtype)
    _core.conv_transpose2d_forward(x, wt, b, out, stride, 0)
    assert_close(out, reference.conv_transpose2d_forward(x, wt, b, out.copy(), stride, 0))
    dy = rand(rng, out.shape, dtype)
    outs = {"dx": np.full(x.shape, np.nan, dtype), "dweight": rand(rng, wt.shape, dtype),
            "dbias": rand(rng, (cout,), dtype)}
    for name in skip:
        outs[name] = None
    expected = {k: None if v is None else v.copy() for k, v in outs.items()}
    reference.conv_transpose2d_backward(x, wt, dy, expected["dx"], expected["dweight"],
                                        expected["dbias"], stride, 0)
    _core.conv_transpose2d_backward(x, wt, dy, outs["dx"], outs["dweight"], outs["dbias"], stride, 0)
    for name in outs:
        if outs[name] is not None:
            assert_close(outs[name], expected[name])


@pytest.mark.parametrize("c, o, threads", [(29, 11, 1), (3, 261, 2), (30, 37, 2)])
def test_conv2d_float32_deep_gemms_match_reference(c, o, threads):
    """GEMM depths past one 256-deep block of the float32 microkernel (C*KH*KW = 261 forward,
    O = 261 for the backward-data product), ragged row and column tails, 1 and 2 threads."""
    rng = np.random.default_rng(c + o)
    x, w, b = rand(rng, (3, c, 6, 7), np.float32), rand(rng, (o, c, 3, 3), np.float32), rand(rng, (o,), np.float32)
    before = fastnn.get_num_threads()
    fastnn.set_num_threads(threads)
    try:
        out = np.full((3, o, 6, 7), np.nan, np.float32)
        _core.conv2d_forward(x, w, b, out, 1, 1)
        assert_close(out, reference.conv2d_forward(x, w, b, out.copy(), 1, 1))
        dy = rand(rng, out.shape, np.float32)
        dx, dw = np.full(x.shape, np.nan, np.float32), rand(rng, w.shape, np.float32)
        ex = [dx.copy(), dw.copy(), None]
        reference.conv2d_backward(x, w, dy, *ex, 1, 1)
        _core.conv2d_backward(x, w, dy, dx, dw, None, 1, 1)
        assert_close(dx, ex[0])
        assert_close(dw, ex[1])
    finally:
        fastnn.set_num_threads(before)


@pytest.mark.parametrize("kernel, padding", [((3, 3), (1, 1)), ((3, 2), (1, 0)), ((3, 3), (0, 0)),
                                             ((1, 1), (0, 0)), ((2, 4), (1, 3)),
                                             ((1, 1), (1, 1)), ((3, 3), (3, 2))])
@pytest.mark.parametrize("threads", [1, 2])
def test_stride_one_input_gradient_as_a_flipped_forward_conv(kernel, padding, threads):
    # float32 stride-1 dx runs as a forward convolution of dy with the flipped, channel-swapped
    # kernel (padding K-1-p); padding >= K (last two cases) keeps col2im. Both equal the reference.
    rng = np.random.default_rng(sum(kernel) + sum(padding))
    x, w = rand(rng, (5, 6, 9, 8), np.float32), rand(rng, (7, 6) + kernel, np.float32)
    oh, ow = 9 + 2 * padding[0] - kernel[0] + 1, 8 + 2 * padding[1] - kernel[1] + 1
    dy = rand(rng, (5, 7, oh, ow), np.float32)
    want = np.empty_like(x)
    reference.conv2d_backward(x, w, dy, want, None, None, 1, padding)
    previous = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(threads)
        got, dw, db = np.full_like(x, np.nan), np.zeros_like(w), np.zeros(7, np.float32)
        assert _core.conv2d_backward(x, w, dy, got, dw, db, 1, padding) is got
    finally:
        fastnn.set_num_threads(previous)
    assert_close(got, want)
    want_dw, want_db = np.zeros_like(w), np.zeros(7, np.float32)
    reference.conv2d_backward(x, w, dy, None, want_dw, want_db, 1, padding)
    assert_close(dw, want_dw)
    assert_close(db, want_db)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cached_workspaces_are_reused_without_stale_data(two_threads, dtype):
    # Workspaces persist between calls: a big call leaves garbage (and a big buffer) behind,
    # then smaller and differently shaped calls must still equal the reference, and the
    # per-thread weight-gradient accumulators must start from zero every time.
    rng = np.random.default_rng(7)
    _conv._clear_workspaces()
    shapes = [((9, 12, 15, 15), (16, 12, 3, 3), 1, 1), ((4, 3, 8, 9), (5, 3, 2, 2), 2, 0),
              ((9, 12, 15, 15), (16, 12, 3, 3), 1, 1), ((6, 5, 10, 10), (7, 5, 4, 4), 2, 1)]
    for xs, ws, stride, padding in shapes:
        x, w = rand(rng, xs, dtype), rand(rng, ws, dtype)
        grid = tuple((s + 2 * padding - k) // stride + 1 for s, k in zip(xs[2:], ws[2:]))
        out = _core.conv2d_forward(x, w, None, np.empty((xs[0], ws[0]) + grid, dtype), stride, padding)
        assert_close(out, reference.conv2d_forward(x, w, None, np.empty_like(out), stride, padding))
        dy = rand(rng, out.shape, dtype)
        got = [np.empty_like(x), np.zeros_like(w), None]
        want = [np.empty_like(x), np.zeros_like(w), None]
        _core.conv2d_backward(x, w, dy, *got, stride, padding)
        reference.conv2d_backward(x, w, dy, *want, stride, padding)
        assert_close(got[0], want[0])
        assert_close(got[1], want[1])
        wt = rand(rng, (xs[1], ws[0], ws[2], ws[3]), dtype)
        outt = np.empty(((xs[0], ws[0]) + tuple((s - 1) * stride - 2 * padding + k for s, k in
                                                zip(xs[2:], ws[2:]))), dtype)
        if min(outt.shape) < 1:
            continue
        _core.conv_transpose2d_forward(x, wt, None, outt, stride, padding)
        assert_close(outt, reference.conv_transpose2d_forward(x, wt, None, np.empty_like(outt), stride, padding))
        dyt = rand(rng, outt.shape, dtype)
        got = [np.empty_like(x), np.zeros_like(wt), None]
        want = [np.empty_like(x), np.zeros_like(wt), None]
        _core.conv_transpose2d_backward(x, wt, dyt, *got, stride, padding)
        reference.conv_transpose2d_backward(x, wt, dyt, *want, stride, padding)
        assert_close(got[0], want[0])
        assert_close(got[1], want[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (1, 2), (2, 1), (3, 2)])
def test_im2col_col2im_wide_rows_match_reference(dtype, stride):
    # float32 im2col copies rows 16 outputs at a time (masked at the edges; stride 2 through an
    # even-lane permute) and same-size stride-1 planes as one shifted flat copy: rows wider
    # than one and two vectors, ragged tails, padding up to and past the kernel size, every
    # entry written (the column matrix starts as NaN)
    rng = np.random.default_rng(sum(stride))
    # (rows of exactly 8 and 10 outputs with vertical padding only: the whole-row copies)
    for h, w in [(5, 33), (7, 16), (4, 17), (30, 30), (3, 1), (6, 12), (9, 8)]:
        for k in [(3, 3), (4, 4), (1, 1), (2, 5)]:
            for p in [(0, 0), (1, 1), (k[0] // 2, k[1] // 2), (k[0], k[1] + 1), (k[0], 0), (1, 0)]:
                if h + 2 * p[0] < k[0] or w + 2 * p[1] < k[1]:
                    continue
                oh = (h + 2 * p[0] - k[0]) // stride[0] + 1
                ow = (w + 2 * p[1] - k[1]) // stride[1] + 1
                x = rand(rng, (2, 2, h, w), dtype)
                col = np.full((2, 2 * k[0] * k[1], oh * ow), np.nan, dtype)
                _core.im2col(x, k, stride, p, col)
                np.testing.assert_array_equal(col, reference.im2col(x, k, stride, p, col.copy()))
                col = rand(rng, col.shape, dtype)  # and its adjoint
                img = np.full(x.shape, np.nan, dtype)
                _core.col2im(col, k, stride, p, img)
                assert_close(img, reference.col2im(col, k, stride, p, img.copy()))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n, h, w, kernel, padding", [
    (1, 12, 37, (3, 3), (1, 1)),  # one sample split over column ranges; ragged 32-column panel
    (3, 6, 5, (3, 5), (0, 2)),    # output shorter than the input (ph = 0), rectangular kernel
    (5, 4, 33, (1, 1), (0, 0)),
    (2, 7, 7, (5, 5), (2, 2)),
    (4, 3, 3, (3, 3), (2, 1)),    # padding past the half kernel: rows entirely in the padding
])
def test_conv2d_float32_implicit_gemm_matches_reference(threads, n, h, w, kernel, padding):
    # stride-1 float32 convolutions whose output is as wide as the input pack the microkernel's
    # panels straight from the image; both routes equal the reference, with and without bias
    rng = np.random.default_rng(h * w + n)
    c, o = 6, 11
    x, wt, b = rand(rng, (n, c, h, w), np.float32), rand(rng, (o, c) + kernel, np.float32), rand(rng, (o,), np.float32)
    oh = h + 2 * padding[0] - kernel[0] + 1
    assert w + 2 * padding[1] - kernel[1] + 1 == w
    previous = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(threads)
        for implicit in (True, False):
            with tuning(conv_s1_implicit=implicit):
                for bias in (b, None):
                    out = np.full((n, o, oh, w), np.nan, np.float32)
                    _core.conv2d_forward(x, wt, bias, out, 1, padding)
                    assert_close(out, reference.conv2d_forward(x, wt, bias, out.copy(), 1, padding))
    finally:
        fastnn.set_num_threads(previous)


@pytest.mark.parametrize("o", [16, 17, 32, 33])
@pytest.mark.parametrize("threads", [1, 2])
def test_conv2d_float32_weight_gradient_transposed_gather(o, threads):
    # float32 weight gradients transpose dy with 16-channel gathers for O <= 32 (a full and a
    # ragged block for 17), scalar above; single-channel input as in a network's first layer
    rng = np.random.default_rng(o)
    x, w = rand(rng, (6, 1, 13, 11), np.float32), rand(rng, (o, 1, 3, 3), np.float32)
    dy = rand(rng, (6, o, 7, 6), np.float32)
    want = rand(rng, w.shape, np.float32)
    got = want.copy()
    reference.conv2d_backward(x, w, dy, None, want, None, 2, 1)
    previous = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(threads)
        _core.conv2d_backward(x, w, dy, None, got, None, 2, 1)
    finally:
        fastnn.set_num_threads(previous)
    assert_close(got, want)


@pytest.mark.parametrize("o", [6, 16, 32, 48, 64, 65, 96, 128])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 5])
def test_conv2d_float32_weight_gradient_transposed_columns(o, threads, n):
    # O != 32: dW += G @ col.T with the column matrix's panels transposed (fnn_mk_sgemm_nt);
    # C*K*K = 45 and 75 leave ragged 32-column panels, P*n > 256 spans k blocks; both routes
    rng = np.random.default_rng(o + n)
    for c, k, stride, pad, size in ((5, 3, 1, 1, 13), (3, 5, 2, 2, 16)):
        x, w = rand(rng, (n, c, size, size - 1), np.float32), rand(rng, (o, c, k, k), np.float32)
        oh = (size + 2 * pad - k) // stride + 1
        ow = (size - 1 + 2 * pad - k) // stride + 1
        dy = rand(rng, (n, o, oh, ow), np.float32)
        start = rand(rng, w.shape, np.float32)
        want = start.copy()
        reference.conv2d_backward(x, w, dy, None, want, None, stride, pad)
        previous = fastnn.get_num_threads()
        try:
            fastnn.set_num_threads(threads)
            for gathered in (True, False):
                with tuning(conv_dw_nt=gathered):
                    got = start.copy()
                    _core.conv2d_backward(x, w, dy, None, got, None, stride, pad)
                assert_close(got, want)
        finally:
            fastnn.set_num_threads(previous)


@pytest.mark.parametrize("o", [1, 2, 3, 6, 7, 13, 15])
def test_conv2d_float32_output_channels_below_a_full_tile(o):
    # O % 8 rows run as 4-, 2- and 1-row microkernel tiles: implicit stride-1 forward, im2col
    # forward (stride 2) and the stride-1 dx (a forward conv with C as its output channels)
    rng = np.random.default_rng(o)
    x, w = rand(rng, (3, o, 9, 11), np.float32), rand(rng, (o, o, 3, 3), np.float32)
    for stride in (1, 2):
        oh, ow = (9 + 2 - 3) // stride + 1, (11 + 2 - 3) // stride + 1
        out = np.full((3, o, oh, ow), np.nan, np.float32)
        _core.conv2d_forward(x, w, None, out, stride, 1)
        assert_close(out, reference.conv2d_forward(x, w, None, out.copy(), stride, 1))
        dy = rand(rng, out.shape, np.float32)
        dx, want = np.full_like(x, np.nan), np.empty_like(x)
        _core.conv2d_backward(x, w, dy, dx, None, None, stride, 1)
        reference.conv2d_backward(x, w, dy, want, None, None, stride, 1)
        assert_close(dx, want)
