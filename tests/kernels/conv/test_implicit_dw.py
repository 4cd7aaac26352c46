"""float32 convolution weight gradients as an implicit GEMM (tuning conv_implicit_dw): against
the NumPy reference, against im2col chunks + GEMM, identical for 1 and 2 threads, and for
conv_transpose2d_backward (whose dW is the weight gradient of the convolution dy -> x)."""
import itertools

import numpy as np
import pytest

import fastnn
from fastnn import _core
from fastnn._core import conv_plan, reference
from fastnn._core.tuning import tuning

from conv_route_helpers import assert_close, conv_cases, needs_microkernel, rand

pytestmark = needs_microkernel


def run(fn, *args, threads, implicit):
    """fn(*args) on ``threads`` threads, the implicit route forced for every shape (implicit)
    or off; never the stride-1 routes of test_dwt_s1 and test_winograd_dw, which would take some
    shapes first."""
    prev_threads = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(threads)
        with tuning(conv_implicit_dw=implicit, conv_implicit_dw_force=implicit, conv_dwt_s1=False,
                    conv_winograd_dw=False):
            return fn(*args)
    finally:
        fastnn.set_num_threads(prev_threads)


def conv_dw_all(x, wt, dy, stride, padding, start, bitwise=True):
    """{(threads, implicit): (dW, db)} of conv2d_backward, each = start (db: 0.5) + the
    gradient, checked against the reference; the implicit results of 1 and 2 threads are
    bitwise equal (``bitwise``: the threads split dW's panels, not the batch's pixels)."""
    want = start.astype(np.float64)
    want_db = np.full(wt.shape[0], 0.5)
    reference.conv2d_backward(x.astype(np.float64), wt.astype(np.float64), dy.astype(np.float64),
                              None, want, want_db, stride, padding)
    results = {}
    for threads, implicit in itertools.product([1, 2], [True, False]):
        dw, db = start.copy(), np.full(wt.shape[0], 0.5, np.float32)
        run(_core.conv2d_backward, x, wt, dy, None, dw, db, stride, padding,
            threads=threads, implicit=implicit)
        assert_close(dw, want, 1e-4)
        assert_close(db, want_db, 1e-5)
        results[threads, implicit] = dw, db
    if bitwise:
        for got1, got2 in zip(results[1, True], results[2, True]):
            np.testing.assert_array_equal(got1, got2)
    assert_close(results[1, True][0], results[2, True][0], 1e-5)
    assert_close(results[1, True][0], results[1, False][0], 1e-4)
    return results


def out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


@pytest.mark.parametrize("s, k, p, h, w", conv_cases([1, 2, 3], [(7, 9), (2, 11)]))
def test_weight_gradient_matches_reference_and_im2col(s, k, p, h, w):
    rng = np.random.default_rng(1000 * s + 100 * k + 10 * p + h + w)
    n, c, o = 3, 5, 7
    x, wt = rand(rng, (n, c, h, w)), rand(rng, (o, c, k, k))
    dy = rand(rng, (n, o, out_size(h, k, s, p), out_size(w, k, s, p)))
    conv_dw_all(x, wt, dy, s, p, rand(rng, wt.shape))


@pytest.mark.parametrize("n, c, o, h, w, kernel, stride, padding", [
    (64, 64, 128, 14, 14, (4, 4), (2, 2), (1, 1)),  # dcgan-d conv2: 13 k steps of 256 pixels
    (6, 64, 64, 14, 14, (3, 3), (1, 1), (1, 1)),    # a vgg-bn block
    (1, 3, 70, 5, 5, (5, 5), (3, 3), (2, 2)),       # O = 70: 8 tiles and a 6-row tail
    (5, 17, 13, 9, 12, (3, 5), (2, 3), (1, 2)),     # C*KH*KW = 255: a 31-column last panel
    (3, 20, 1, 13, 7, (5, 2), (3, 2), (4, 0)),      # one output channel
    (2, 40, 9, 6, 6, (1, 1), (1, 1), (0, 0)),       # 1x1: 40 columns, a panel and 8 more
])
def test_weight_gradient_batches_and_channels(n, c, o, h, w, kernel, stride, padding):
    rng = np.random.default_rng(n + c + o + h)
    kh, kw = kernel
    x, wt = rand(rng, (n, c, h, w)), rand(rng, (o, c, kh, kw))
    dy = rand(rng, (n, o, out_size(h, kh, stride[0], padding[0]),
                    out_size(w, kw, stride[1], padding[1])))
    conv_dw_all(x, wt, dy, stride, padding, np.zeros_like(wt))


@pytest.mark.parametrize("c, o, kernel", [(1, 64, 4), (3, 70, 3)])
def test_few_columns_split_the_pixels_between_threads(c, o, kernel):
    # dcgan-d's first conv (C*KH*KW = 16: one panel) and an RGB 3x3 (27): at 2 threads each
    # thread takes half the batch's pixels into its own dW (and dbias sums), added after;
    # the direct stride-2 route (test_conv_direct_s2) splits their taps instead, bitwise
    rng = np.random.default_rng(c + o)
    x, wt = rand(rng, (64, c, 28, 28)), rand(rng, (o, c, kernel, kernel))
    dy = rand(rng, (64, o, out_size(28, kernel, 2, 1), out_size(28, kernel, 2, 1)))
    start = rand(rng, wt.shape)
    with tuning(conv_direct_dw=False):
        conv_dw_all(x, wt, dy, 2, 1, start, bitwise=False)
    conv_dw_all(x, wt, dy, 2, 1, start, bitwise=True)


def test_weight_gradient_with_dx_and_dbias():
    # the implicit dW leaves dx and dbias to their own routes; all three as the reference
    rng = np.random.default_rng(5)
    x, wt = rand(rng, (4, 64, 14, 14)), rand(rng, (128, 64, 4, 4))
    dy = rand(rng, (4, 128, 7, 7))
    want = [np.zeros(x.shape), np.zeros(wt.shape), np.zeros(128)]
    reference.conv2d_backward(x.astype(np.float64), wt.astype(np.float64), dy.astype(np.float64),
                              *want, 2, 1)
    for threads in (1, 2):
        got = [np.full_like(x, np.nan), np.zeros_like(wt), np.zeros(128, np.float32)]
        run(_core.conv2d_backward, x, wt, dy, *got, 2, 1, threads=threads, implicit=True)
        for g, w_ in zip(got, want):
            assert_close(g, w_, 1e-4)


@pytest.mark.parametrize("n, cin, cout, h, kernel, stride, padding", [
    (64, 128, 64, 7, 4, 2, 1),  # dcgan-g's 128 -> 64 layer
    (3, 70, 9, 5, 3, 2, 1),
    (2, 64, 20, 6, 3, 1, 1),
])
def test_conv_transpose_weight_gradient(n, cin, cout, h, kernel, stride, padding):
    rng = np.random.default_rng(cin + cout)
    oh = (h - 1) * stride - 2 * padding + kernel
    x, wt = rand(rng, (n, cin, h, h)), rand(rng, (cin, cout, kernel, kernel))
    dy = rand(rng, (n, cout, oh, oh))
    want = [np.zeros(x.shape), np.ones(wt.shape), np.zeros(cout)]
    reference.conv_transpose2d_backward(x.astype(np.float64), wt.astype(np.float64),
                                        dy.astype(np.float64), *want, stride, padding)
    results = {}
    for threads, implicit in itertools.product([1, 2], [True, False]):
        got = [np.full_like(x, np.nan), np.ones_like(wt), np.zeros(cout, np.float32)]
        run(_core.conv_transpose2d_backward, x, wt, dy, *got, stride, padding, threads=threads,
            implicit=implicit)
        for g, w_ in zip(got, want):
            assert_close(g, w_, 1e-4)
        results[threads, implicit] = got[1]
    np.testing.assert_array_equal(results[1, True], results[2, True])


def test_default_rule_and_other_dtypes():
    def dw(x_shape, w_shape, stride, padding, dtype="float32", threads=1):
        return conv_plan.plan_conv2d(x_shape, w_shape, stride, padding, dtype, level="avx512",
                                     threads=threads).dw

    implicit = ("implicit_dw/panels", "implicit_dw/pixels", "direct_s2_dw")
    # dcgan-d conv2, and dcgan-g's 128->64 ConvTranspose2D (dy (64, 64, 14, 14) -> x 7x7),
    # without their Winograd route (test_winograd_s2_dw.py)
    with tuning(conv_winograd_s2_dw=False):
        assert dw((64, 64, 14, 14), (128, 64, 4, 4), 2, 1) in implicit
        assert conv_plan.plan_conv_transpose2d((64, 128, 7, 7), (128, 64, 4, 4), 2, 1,
                                               level="avx512", threads=1).dw in implicit
    assert dw((64, 64, 14, 14), (128, 64, 4, 4), 2, 1, "float64") == "im2col_dw/blas"  # BLAS
    with tuning(conv_dwt_s1=False, conv_winograd_dw=False):  # O = 32: im2col
        assert dw((64, 32, 28, 28), (32, 32, 3, 3), 1, 1) == "im2col_dw/tn"
        # at the AVX2 level G @ col.T at O = 32 too (resnet's 16->32 projection)
        assert conv_plan.plan_conv2d((64, 16, 32, 32), (32, 16, 1, 1), 2, 0, level="avx2",
                                     threads=1).dw == "im2col_dw/nt"
    with tuning(conv_direct_dw=False):  # dcgan-d conv1: 16 columns, the threads split pixels
        assert dw((64, 1, 28, 28), (64, 1, 4, 4), 2, 1, threads=2) == "implicit_dw/pixels"
    rng = np.random.default_rng(3)
    x, wt = rng.standard_normal((2, 8, 9, 8)), rng.standard_normal((64, 8, 3, 3))
    dy = rng.standard_normal((2, 64, 5, 4))
    want, got = np.zeros(wt.shape), np.zeros(wt.shape)
    reference.conv2d_backward(x, wt, dy, None, want, None, 2, 1)
    _core.conv2d_backward(x, wt, dy, None, got, None, 2, 1)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_dx_and_dw_in_one_pool_of_tasks_change_no_bit():
    # tuning conv_side_by_side: on 2 threads a strided conv's sub-pixel dx and implicit dW (+ dbias)
    # share one dynamic pool of tasks; the results are those of each kernel alone, on 1 thread
    rng = np.random.default_rng(21)
    x, wt = rand(rng, (16, 64, 14, 14)), rand(rng, (128, 64, 4, 4))
    dy = rand(rng, (16, 128, 7, 7))
    results = {}
    prev = fastnn.get_num_threads()
    for threads, pooled in [(1, False), (2, False), (2, True)]:
        try:
            fastnn.set_num_threads(threads)
            got = [np.full_like(x, np.nan), rand(rng, wt.shape) * 0 + 0.25, np.full(128, 0.5, np.float32)]
            with tuning(conv_side_by_side=pooled):
                _core.conv2d_backward(x, wt, dy, *got, 2, 1)
        finally:
            fastnn.set_num_threads(prev)
        results[threads, pooled] = got
    want = [np.zeros(x.shape), np.full(wt.shape, 0.25), np.full(128, 0.5)]
    reference.conv2d_backward(x.astype(np.float64), wt.astype(np.float64), dy.astype(np.float64),
                              *want, 2, 1)
    for got, w_ in zip(results[2, True], want):
        assert_close(got, w_, 1e-4)
    for key in [(1, False), (2, False)]:
        for got, other in zip(results[2, True], results[key]):
            np.testing.assert_array_equal(got, other)
