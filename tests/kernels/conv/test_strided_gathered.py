"""float32 strided conv2d forwards as an implicit GEMM (tuning conv_strided_implicit): against
the NumPy reference, against im2col + GEMM + scatter, and identical for 1 and 2 threads."""
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
    """fn(*args) on ``threads`` threads with the implicit strided route forced (every shape it
    can run) or off."""
    prev_threads = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(threads)
        with tuning(conv_strided_implicit=implicit, conv_strided_force=implicit):
            return fn(*args)
    finally:
        fastnn.set_num_threads(prev_threads)


def forward_all(x, wt, b, stride, padding):
    """{(threads, implicit): out}, every result checked against the reference."""
    n, o = x.shape[0], wt.shape[0]
    kh, kw = wt.shape[2:]
    (sh, sw), (ph, pw) = (stride if isinstance(stride, tuple) else (stride, stride),
                          padding if isinstance(padding, tuple) else (padding, padding))
    oh, ow = (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1
    want = np.empty((n, o, oh, ow), np.float32)
    reference.conv2d_forward(x, wt, b, want, stride, padding)
    results = {}
    for threads, implicit in itertools.product([1, 2], [True, False]):
        got = np.full((n, o, oh, ow), np.nan, np.float32)
        assert run(_core.conv2d_forward, x, wt, b, got, stride, padding, threads=threads,
                   implicit=implicit) is got
        assert_close(got, want)
        results[threads, implicit] = got
    # the thread split does not change a single bit; the old route agrees to rounding
    np.testing.assert_array_equal(results[1, True], results[2, True])
    assert_close(results[1, True], results[1, False])
    return results


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("s, k, p, h, w", conv_cases([2, 3], [(7, 9), (10, 5), (2, 11)]))
def test_strided_forward_matches_reference_and_im2col(bias, s, k, p, h, w):
    rng = np.random.default_rng(1000 * s + 100 * k + 10 * p + h + w)
    n, c, o = 3, 5, 7
    x, wt = rand(rng, (n, c, h, w)), rand(rng, (o, c, k, k))
    b = rand(rng, (o,)) if bias else None
    forward_all(x, wt, b, s, p)


@pytest.mark.parametrize("n", [1, 3, 64])
@pytest.mark.parametrize("c, o, h, w, kernel, stride, padding", [
    (64, 128, 14, 14, (4, 4), (2, 2), (1, 1)),  # dcgan-d conv2
    (1, 64, 28, 28, (4, 4), (2, 2), (1, 1)),    # dcgan-d conv1
    (17, 33, 9, 12, (3, 5), (2, 3), (1, 2)),    # ragged channels, rectangular everything
    (20, 9, 13, 7, (5, 2), (3, 2), (4, 0)),
    (3, 1, 11, 6, (2, 3), (3, 3), (1, 2)),      # one output channel
])
def test_strided_forward_batches_and_channels(n, c, o, h, w, kernel, stride, padding):
    rng = np.random.default_rng(n + c + h)
    (kh, kw) = kernel
    x, wt, b = rand(rng, (n, c, h, w)), rand(rng, (o, c, kh, kw)), rand(rng, (o,))
    forward_all(x, wt, b, stride, padding)


@pytest.mark.parametrize("threads", [1, 2])
def test_conv_transpose2d_backward_dx_unchanged(threads):
    # conv_transpose2d_backward's dx is a strided conv2d forward of dy (dcgan-g shapes, small)
    rng = np.random.default_rng(7)
    x, wt = rand(rng, (3, 12, 7, 7)), rand(rng, (12, 6, 4, 4))
    dy = rand(rng, (3, 6, 14, 14))
    want_dx, want_dw, want_db = np.empty_like(x), np.zeros_like(wt), np.zeros(6, np.float32)
    reference.conv_transpose2d_backward(x, wt, dy, want_dx, want_dw, want_db, 2, 1)
    for implicit in [True, False]:
        dx, dw, db = np.full_like(x, np.nan), np.zeros_like(wt), np.zeros(6, np.float32)
        run(_core.conv_transpose2d_backward, x, wt, dy, dx, dw, db, 2, 1, threads=threads,
            implicit=implicit)
        assert_close(dx, want_dx)
        assert_close(dw, want_dw, 1e-4)
        assert_close(db, want_db, 1e-4)


def test_default_rule_and_other_dtypes():
    def forward(x_shape, w_shape, stride, padding, dtype="float32"):
        return conv_plan.plan_conv2d(x_shape, w_shape, stride, padding, dtype, level="avx512",
                                     threads=1).forward

    implicit = ("strided_gathered", "direct_s2_forward/per_sample", "direct_s2_forward/batch",
                "winograd_s2")
    # dcgan-d conv2 takes an implicit route by default (winograd_s2 at AVX-512); float64 and
    # stride 1 never do
    assert forward((64, 64, 14, 14), (128, 64, 4, 4), 2, 1) in implicit
    assert forward((64, 64, 14, 14), (128, 64, 4, 4), 2, 1, "float64") == "im2col_forward/f64"
    # dcgan-d conv1 (C*KH*KW = 16): the direct stride-2 kernel, not the gathered panels
    assert forward((64, 1, 28, 28), (64, 1, 4, 4), 2, 1) == "direct_s2_forward/per_sample"
    assert forward((64, 1, 28, 28), (16, 1, 4, 4), 2, 1) == "im2col_forward/f32"  # < 32 outputs
    assert forward((64, 64, 14, 14), (128, 64, 3, 3), 1, 1) not in implicit
    rng = np.random.default_rng(3)
    x, wt, b = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3)), None
    want, got = np.empty((2, 4, 5, 4)), np.empty((2, 4, 5, 4))
    reference.conv2d_forward(x, wt, b, want, 2, 1)
    _core.conv2d_forward(x, wt, b, got, 2, 1)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("route", ["strided forward", "stride-1 forward", "sub-pixel dx"])
def test_dynamic_and_static_thread_schedules_agree_bitwise(route):
    # tuning conv_dynamic_schedule: each output is computed whole inside one task, whichever thread runs it
    rng = np.random.default_rng(11)
    stride, k = (1, 3) if route == "stride-1 forward" else (2, 4)
    x, wt = rand(rng, (9, 16, 14, 14)), rand(rng, (24, 16, k, k))
    oh = (14 + 2 - k) // stride + 1
    dy = rand(rng, (9, 24, oh, oh))
    results = []
    prev = fastnn.get_num_threads()
    for dynamic in (True, False):
        try:
            fastnn.set_num_threads(2)
            with tuning(conv_dynamic_schedule=dynamic):
                if route == "sub-pixel dx":
                    got = np.full_like(x, np.nan)
                    _core.conv2d_backward(x, wt, dy, got, None, None, stride, 1)
                else:
                    got = np.full((9, 24, oh, oh), np.nan, np.float32)
                    _core.conv2d_forward(x, wt, None, got, stride, 1)
        finally:
            fastnn.set_num_threads(prev)
        results.append(got)
    assert not np.isnan(results[0]).any()
    np.testing.assert_array_equal(results[0], results[1])
