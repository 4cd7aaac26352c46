"""What the float32 convolution-route tests share (test_conv_strided_implicit, test_conv_subpixel,
test_conv_implicit_dw, the Winograd tests): float32 normals, a tolerance scaled to the result,
the skip for ISA levels without the convolution kernels those routes run on (the baseline), a
thread count for a block, drawn convolutions and weight-gradient cases with their float64
reference."""
import contextlib
import itertools

import numpy as np
import pytest
from hypothesis import assume

import fastnn
from fastnn._core import _conv, reference

needs_microkernel = pytest.mark.skipif(not _conv._conv_kernels_available(),
                                       reason="the route runs on the AVX2/AVX-512 convolution "
                                              "kernels (FASTNN_MAX_ISA=baseline, or the CPU)")


def rand(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def assert_close(actual, expected, tol=2e-5):
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def conv_cases(strides, sizes):
    """(stride, kernel, padding, h, w) for the strides, kernels 1..5 (some below the stride),
    paddings 0..K-1 and images (h, w) (ragged, H != W) where both output sizes are >= 1."""
    out = []
    for s, k in itertools.product(strides, range(1, 6)):
        for p in range(k):
            for h, w in sizes:
                if (h + 2 * p - k) // s + 1 >= 1 and (w + 2 * p - k) // s + 1 >= 1:
                    out.append((s, k, p, h, w))
    return out


def relative_error(got, want):
    """max |got - want| / max(1, max |want|): the Winograd tests' error against the float64
    reference (docs/winograd.md states its bounds in this measure)."""
    return float(np.abs(got - want).max() / max(1.0, np.abs(want).max()))


@contextlib.contextmanager
def num_threads(n):
    """fastnn on ``n`` threads for the block, then the previous count again."""
    prev = fastnn.get_num_threads()
    fastnn.set_num_threads(n)
    try:
        yield
    finally:
        fastnn.set_num_threads(prev)


def drawn_conv(n, c, o, h, w, padding, seed, k=3, with_bias=True):
    """A drawn convolution's float32 normals from ``seed``: x (n, c, h, w), weight (o, c, k, k)
    and bias (o,) (None without ``with_bias``); hypothesis drops the draw when the padded image
    is smaller than the kernel (no output)."""
    assume(h + 2 * padding >= k and w + 2 * padding >= k)
    rng = np.random.default_rng(seed)
    x, wt = rand(rng, (n, c, h, w)), rand(rng, (o, c, k, k))
    return x, wt, rand(rng, (o,)) if with_bias else None


def dw_case(rng, n, c, o, h, w, padding, k, stride):
    """x (n, c, h, w) and dy (n, o, OH, OW) of a k x k convolution at ``stride``: float32
    normals."""
    x = rand(rng, (n, c, h, w))
    dy = rand(rng, (n, o, (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1))
    return x, dy


def route_dw(kernel, k, x, dy, padding, dw=None, db=None, threads=1):
    """A weight-gradient route of _conv, ``kernel(x, dy, dw, db, padding, padding)`` for a
    k x k weight, on ``threads`` threads (dw zeros unless given): its return value."""
    dw = np.zeros((dy.shape[1], x.shape[1], k, k), np.float32) if dw is None else dw
    with num_threads(threads):
        return kernel(x, dy, dw, db, padding, padding)


def reference_dw(x, dy, padding, dw0=None, db0=None, *, k, stride):
    """The float64 weight and bias gradients (reference.conv2d_backward) of a k x k convolution
    at ``stride``, added to dw0 and db0 (zeros when None)."""
    o, c = dy.shape[1], x.shape[1]
    dw = np.zeros((o, c, k, k)) if dw0 is None else dw0.astype(np.float64)
    db = np.zeros(o) if db0 is None else db0.astype(np.float64)
    reference.conv2d_backward(x.astype(np.float64), np.zeros((o, c, k, k)),
                              dy.astype(np.float64), None, dw, db, stride, padding)
    return dw, db
