"""float32 stride-2 conv2d forwards on the direct kernel (tuning conv_direct_s2, fnn_d2_block):
against the float64 NumPy reference, bit for bit against the gathered implicit GEMM it
replaces (the same sums in the same order), and identical for 1 and 2 threads."""
import numpy as np
import pytest

import fastnn
from fastnn import _core
from fastnn._core import conv_plan, reference, routes
from fastnn._core.tuning import tuning

from conv_route_helpers import assert_close, needs_microkernel, rand

pytestmark = needs_microkernel


def forward(x, wt, b, padding, threads, direct):
    n, o = x.shape[0], wt.shape[0]
    kh, kw = wt.shape[2:]
    ph, pw = padding
    oh, ow = (x.shape[2] + 2 * ph - kh) // 2 + 1, (x.shape[3] + 2 * pw - kw) // 2 + 1
    out = np.full((n, o, oh, ow), np.nan, np.float32)
    prev = fastnn.get_num_threads()
    # the planner gives a kernel smaller than the stride to im2col: the direct kernel forced
    forced = {"conv_forward": "direct_s2_forward/per_sample"} if direct and min(kh, kw) < 2 else {}
    try:
        fastnn.set_num_threads(threads)
        with tuning(conv_direct_s2=direct, conv_winograd_s2=False, **forced):  # 4x4: not winograd_s2
            assert _core.conv2d_forward(x, wt, b, out, 2, padding) is out
    finally:
        fastnn.set_num_threads(prev)
    return out


def check(x, wt, b, padding):
    n, c, h, w = x.shape
    o, _, kh, kw = wt.shape
    oh, ow = (h + 2 * padding[0] - kh) // 2 + 1, (w + 2 * padding[1] - kw) // 2 + 1
    # the route under test (the planner's where the kernel covers the stride)
    with tuning(conv_winograd_s2=False):
        assert conv_plan.plan_conv2d(x.shape, wt.shape, 2, padding, threads=1).forward.startswith(
            "direct_s2_forward/") == (min(kh, kw) >= 2)
    want = np.empty(forward(x, wt, b, padding, 1, False).shape)
    reference.conv2d_forward(x.astype(np.float64), wt.astype(np.float64),
                             None if b is None else b.astype(np.float64), want, 2, padding)
    got = forward(x, wt, b, padding, 1, True)
    assert_close(got, want)
    np.testing.assert_array_equal(got, forward(x, wt, b, padding, 2, True))
    np.testing.assert_array_equal(got, forward(x, wt, b, padding, 1, False))


# output widths 1..15 cover every tile width (7-pixel tiles and the tails 1..6 after them)
@pytest.mark.parametrize("w", [1, 2, 4, 7, 9, 12, 13, 14, 16, 21, 28, 29])
def test_every_row_tile_width(w):
    rng = np.random.default_rng(w)
    x, wt, b = rand(rng, (2, 6, 5, w)), rand(rng, (32, 6, 3, 3)), rand(rng, (32,))
    check(x, wt, b, (1, 1))


@pytest.mark.parametrize("o", [32, 33, 47, 64, 100, 128])
@pytest.mark.parametrize("bias", [True, False])
def test_channel_blocks_and_bias(o, bias):
    rng = np.random.default_rng(o)
    x, wt = rand(rng, (3, 9, 10, 11)), rand(rng, (o, 9, 4, 4))
    check(x, wt, rand(rng, (o,)) if bias else None, (1, 1))


@pytest.mark.parametrize("kernel, padding, h, w", [
    ((1, 1), (0, 0), 6, 7), ((2, 2), (0, 0), 8, 8), ((3, 5), (1, 2), 9, 12),
    ((5, 2), (2, 0), 13, 7), ((4, 4), (3, 3), 5, 5), ((5, 5), (0, 0), 5, 6),
])
def test_kernels_and_paddings(kernel, padding, h, w):
    rng = np.random.default_rng(h * w)
    x, wt, b = rand(rng, (2, 40, h, w)), rand(rng, (40, 40) + kernel), rand(rng, (40,))
    check(x, wt, b, padding)


@pytest.mark.parametrize("n", [1, 5, 64])
def test_dcgan_d_conv2(n):
    rng = np.random.default_rng(n)
    x, wt, b = rand(rng, (n, 64, 14, 14)), rand(rng, (128, 64, 4, 4)) * 0.05, rand(rng, (128,))
    check(x, wt, b, (1, 1))


def test_fused_leaky_relu_and_the_transposed_convolutions_dx():
    rng = np.random.default_rng(5)
    x, wt, b = rand(rng, (4, 16, 14, 14)), rand(rng, (64, 16, 4, 4)), rand(rng, (64,))
    out = np.empty((4, 64, 7, 7), np.float32)
    plain = forward(x, wt, b, (1, 1), 1, True)
    # per_sample applies the activation to each sample's output in its task, /batch after
    for route in ("direct_s2_forward/per_sample", "direct_s2_forward/batch"):
        for slope in (None, 0.2):
            with tuning(conv_forward=route), routes.traced() as taken:
                _core.conv2d_forward(x, wt, b, out, 2, 1, relu=True, negative_slope=slope)
            assert route in taken
            neg = 0 if slope is None else plain * np.float32(slope)
            np.testing.assert_array_equal(out, np.where(plain > 0, plain, neg), err_msg=route)
    # conv_transpose2d's dx is the same strided forward of dy (dcgan-g's 128->64 layer, small)
    xt, wtt, dy = rand(rng, (3, 48, 7, 7)), rand(rng, (48, 16, 4, 4)), rand(rng, (3, 16, 14, 14))
    want = np.empty(xt.shape)
    reference.conv_transpose2d_backward(xt.astype(np.float64), wtt.astype(np.float64),
                                        dy.astype(np.float64), want, None, None, 2, 1)
    for direct in (True, False):
        dx = np.full_like(xt, np.nan)
        with tuning(conv_direct_s2=direct, conv_winograd_s2=False):
            _core.conv_transpose2d_backward(xt, wtt, dy, dx, None, None, 2, 1)
        assert_close(dx, want)


def test_route_rule():
    def route(o, stride, **knobs):
        with tuning(**knobs):
            return conv_plan.plan_conv2d((64, 64, 14, 14), (o, 64, 4, 4), stride, 1,
                                         level="avx512", threads=1).forward

    assert route(128, 2) == "winograd_s2"  # dcgan-d conv2 (test_winograd_s2.py)
    assert route(128, 2, conv_winograd_s2=False) == "direct_s2_forward/per_sample"
    assert route(16, 2) == "strided_gathered"                # 16 channels: half a tile
    assert route(128, 3) == "strided_gathered"               # stride 3
    assert route(128, (2, 1)) == "strided_gathered"


def weight_grads(x, wt, dy, padding, threads, direct, dw0):
    dw, db = dw0.copy(), np.full(wt.shape[0], 0.5, np.float32)
    prev = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(threads)
        # every shape on the implicit route
        with tuning(conv_direct_dw=direct, conv_implicit_dw=True, conv_implicit_dw_force=True):
            _core.conv2d_backward(x, wt, dy, None, dw, db, 2, padding)
    finally:
        fastnn.set_num_threads(prev)
    return dw, db


@pytest.mark.parametrize("n, c, h, w, o, kernel, padding", [
    (64, 64, 14, 14, 128, (4, 4), (1, 1)),  # dcgan-d conv2
    (3, 5, 9, 11, 40, (3, 3), (1, 1)),      # 45 taps: tiles of 8 and a tail of 5
    (2, 64, 15, 15, 33, (4, 4), (0, 0)),    # a channel block with one channel
    (2, 8, 30, 29, 64, (5, 2), (2, 0)),
    (5, 3, 11, 6, 100, (3, 5), (1, 2)),
])
def test_direct_weight_gradient(n, c, h, w, o, kernel, padding):
    # dw and db are accumulated into: the sums of fnn_mk_conv_dw, added to what was there
    rng = np.random.default_rng(n * c + o)
    kh, kw = kernel
    oh, ow = (h + 2 * padding[0] - kh) // 2 + 1, (w + 2 * padding[1] - kw) // 2 + 1
    x, wt, dy = rand(rng, (n, c, h, w)), rand(rng, (o, c, kh, kw)), rand(rng, (n, o, oh, ow))
    dw0 = rand(rng, wt.shape)
    want_dw, want_db = np.zeros(wt.shape), np.zeros(o)
    reference.conv2d_backward(x.astype(np.float64), wt.astype(np.float64), dy.astype(np.float64),
                              None, want_dw, want_db, 2, padding)
    dw, db = weight_grads(x, wt, dy, padding, 1, True, dw0)
    assert_close(dw - dw0, want_dw, 1e-4)
    assert_close(db - np.float32(0.5), want_db, 1e-4)
    for got in (weight_grads(x, wt, dy, padding, 1, False, dw0),
                weight_grads(x, wt, dy, padding, 2, True, dw0)):
        np.testing.assert_array_equal(got[0], dw)
        np.testing.assert_array_equal(got[1], db)


@pytest.mark.parametrize("threads", [1, 2])
def test_direct_weight_gradient_beside_the_subpixel_dx(threads):
    # dcgan-d's conv2 backward: dW's tasks share one pool with the sub-pixel dx
    rng = np.random.default_rng(threads)
    x, wt, dy = rand(rng, (16, 64, 14, 14)), rand(rng, (128, 64, 4, 4)), rand(rng, (16, 128, 7, 7))
    got = []
    for direct in (True, False):
        dx, dw, db = np.full_like(x, np.nan), np.zeros_like(wt), np.zeros(128, np.float32)
        prev = fastnn.get_num_threads()
        try:
            fastnn.set_num_threads(threads)
            with tuning(conv_direct_dw=direct):
                _core.conv2d_backward(x, wt, dy, dx, dw, db, 2, 1)
        finally:
            fastnn.set_num_threads(prev)
        got.append((dx, dw, db))
    for a, b in zip(*got):
        np.testing.assert_array_equal(a, b)
    want = np.zeros(wt.shape)
    reference.conv2d_backward(x.astype(np.float64), wt.astype(np.float64), dy.astype(np.float64),
                              None, want, None, 2, 1)
    assert_close(got[0][1], want, 1e-4)
