"""Stride-1 same-width float32 weight gradients on fnn_mk_conv_dwt_s1 (tuning conv_dwt_s1): against
the NumPy reference, against the routes it replaced (gathers, im2col chunks), identical for 1 and 2
threads, with the bias gradient and dx beside it."""
import itertools

import numpy as np
import pytest

import fastnn
from fastnn import _core
from fastnn._core import conv_plan, reference
from fastnn._core.tuning import tuning

from conv_route_helpers import assert_close, needs_microkernel, rand

pytestmark = needs_microkernel


@pytest.fixture(autouse=True)
def without_winograd_dw():
    """The 3x3 shapes here would take winograd_dw (test_winograd_dw.py): dwt_s1 is under test."""
    with tuning(conv_winograd_dw=False):
        yield


def backward(x, wt, dy, padding, dx, dw, db, threads, on, route=None):
    prev = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(threads)
        with tuning(conv_dwt_s1=on, conv_dw=route):
            _core.conv2d_backward(x, wt, dy, dx, dw, db, 1, padding)
    finally:
        fastnn.set_num_threads(prev)


def check(n, c, o, h, w, k, with_db=True):
    p = (k - 1) // 2  # same width
    rng = np.random.default_rng(n * 1000 + c * 100 + o * 10 + h + w + k)
    x, wt, dy = rand(rng, (n, c, h, w)), rand(rng, (o, c, k, k)), rand(rng, (n, o, h, w))
    assert conv_plan.plan_conv2d(x.shape, wt.shape, 1, p).dw.startswith("dwt_s1/")
    start = rand(rng, wt.shape)
    want, want_db = start.astype(np.float64), np.full(o, 0.5)
    reference.conv2d_backward(x.astype(np.float64), wt.astype(np.float64), dy.astype(np.float64),
                              None, want, want_db, 1, p)
    got = {}
    for threads, on in itertools.product([1, 2], [True, False]):
        dw, db = start.copy(), np.full(o, 0.5, np.float32) if with_db else None
        backward(x, wt, dy, p, None, dw, db, threads, on)
        assert_close(dw, want, 1e-4)
        if with_db:
            assert_close(db, want_db, 1e-5)
        got[threads, on] = dw, db
    # threads on dW's rows (each owns a block of them over all pixels): the bits of 1 thread
    dw, db = start.copy(), np.full(o, 0.5, np.float32) if with_db else None
    backward(x, wt, dy, p, None, dw, db, 2, True, "dwt_s1/rows")
    for a, b in zip(got[1, True], (dw, db)):
        np.testing.assert_array_equal(a, b)
    # the planner's 2-thread route (on samples where the batch gives each thread one: partial
    # sums added after)
    assert_close(got[2, True][0], got[1, True][0], 1e-5)
    assert_close(got[1, True][0], got[1, False][0], 1e-4)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("h, w", [(7, 9), (2, 11), (16, 16), (17, 17), (30, 30)])
def test_images_and_kernels(k, h, w):
    # P = 256: one full step; 289: two steps of 145; 900: four of 225; 2x11 with a 5x5 kernel:
    # every pixel sees the padding
    check(3, 20, 19, h, w, k)


@pytest.mark.parametrize("c, o", [(2, 32), (32, 32), (64, 64), (3, 70), (7, 40), (5, 17)])
def test_channels(c, o):
    # O = 32, 64: whole panels; 70, 40, 17: a part panel. C*9 = 18, 27, 63, 45: row tails of 2,
    # 3, 7 and 5 below the 8-row tiles, and the threads' row blocks uneven
    check(4, c, o, 14, 14, 3)


@pytest.mark.parametrize("n, c, o", [(64, 1, 32), (7, 3, 32), (5, 1, 70), (1, 1, 16), (3, 2, 40)])
def test_few_rows_split_the_samples_between_threads(n, c, o):
    # vgg-bn's first conv (9 im2col rows) and an RGB one (27): two threads take half the batch
    # each, into a dW of its own (and dbias sums), added after; one sample: one thread
    check(n, c, o, 28 if n > 10 else 9, 28 if n > 10 else 9, 3)


def test_without_dbias_and_with_dx():
    check(2, 16, 24, 9, 9, 3, with_db=False)
    rng = np.random.default_rng(7)
    x, wt, dy = rand(rng, (5, 32, 28, 28)), rand(rng, (32, 32, 3, 3)), rand(rng, (5, 32, 28, 28))
    want = [np.zeros(x.shape), np.zeros(wt.shape), np.zeros(32)]
    reference.conv2d_backward(x.astype(np.float64), wt.astype(np.float64), dy.astype(np.float64),
                              *want, 1, 1)
    for threads in (1, 2):
        got = [np.full_like(x, np.nan), np.zeros_like(wt), np.zeros(32, np.float32)]
        backward(x, wt, dy, 1, *got, threads, True)
        for g, w_ in zip(got, want):
            assert_close(g, w_, 1e-4)


def test_route_rule():
    def dw(x_shape, w_shape, stride=1, padding=1, dtype="float32"):
        return conv_plan.plan_conv2d(x_shape, w_shape, stride, padding, dtype, level="avx512",
                                     threads=1).dw

    assert dw((8, 32, 28, 28), (32, 32, 3, 3)) == "dwt_s1/rows"  # vgg-bn's convolutions
    assert dw((8, 32, 28, 28), (32, 32, 3, 3), dtype="float64") == "im2col_dw/blas"  # BLAS
    assert dw((8, 1, 28, 28), (32, 1, 3, 3)) == "dwt_s1/rows"  # 9 im2col rows: vgg-bn's first
    assert not dw((8, 4, 28, 28), (32, 4, 1, 1), padding=0).startswith("dwt_s1")  # 4 rows
    assert not dw((8, 1, 28, 28), (6, 1, 5, 5), padding=2).startswith("dwt_s1")  # LeNet's first
    assert not dw((8, 6, 14, 14), (16, 6, 5, 5), padding=0).startswith("dwt_s1")  # narrower out
    assert not dw((8, 64, 14, 14), (128, 64, 4, 4), 2).startswith("dwt_s1")  # strided


@pytest.mark.parametrize("o", [16, 17, 48, 70])
def test_narrow_panels_on_sixteen_lanes_change_no_bit(o):
    # panels of at most 16 channels (all of O = 16, the last of 17, 48, 70) run on 16-lane tiles
    # (tuning conv_dwt_narrow): the same sums in the same order as the 32-lane tiles
    rng = np.random.default_rng(o)
    x, wt, dy = rand(rng, (6, 24, 10, 10)), rand(rng, (o, 24, 3, 3)), rand(rng, (6, o, 10, 10))
    got = []
    for on in (True, False):
        with tuning(conv_dwt_narrow=on):
            dw, db = np.zeros_like(wt), np.zeros(o, np.float32)
            _core.conv2d_backward(x, wt, dy, None, dw, db, 1, 1)
        got.append(dw)
    np.testing.assert_array_equal(got[0], got[1])
    want = np.zeros(wt.shape)
    reference.conv2d_backward(x.astype(np.float64), wt.astype(np.float64), dy.astype(np.float64),
                              None, want, None, 1, 1)
    assert_close(got[0], want, 1e-4)
