"""float32 strided backward-data passes by sub-pixel phases (tuning conv_subpixel): conv2d's dx
and conv_transpose2d's forward against the NumPy reference and against the GEMM + col2im route."""
import itertools

import numpy as np
import pytest

import fastnn
from fastnn import _core
from fastnn._core import conv_plan, reference
from fastnn._core.tuning import tuning

from conv_route_helpers import assert_close, conv_cases, needs_microkernel, rand

pytestmark = needs_microkernel


class Route:
    """Runs a kernel with the sub-pixel route forced on (every shape), off, or implicit off."""

    def __init__(self, threads):
        self.threads = threads

    def __call__(self, fn, *args, subpixel=True, implicit=True):
        prev_threads = fastnn.get_num_threads()
        try:
            fastnn.set_num_threads(self.threads)
            with tuning(conv_subpixel=subpixel, conv_subpixel_force=subpixel,
                        conv_subpixel_implicit=implicit, conv_winograd_s2_dx=False):
                return fn(*args)
        finally:
            fastnn.set_num_threads(prev_threads)


# odd and non-square images whose phase sub-grids differ in size
CONV_CASES = conv_cases([2, 3], [(7, 9), (10, 5), (2, 11)])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("s, k, p, h, w", CONV_CASES)
def test_conv2d_dx_by_phases_matches_reference_and_col2im(threads, s, k, p, h, w):
    rng = np.random.default_rng(1000 * s + 100 * k + 10 * p + h + w)
    n, c, o = 3, 5, 7
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    x, wt, dy = rand(rng, (n, c, h, w)), rand(rng, (o, c, k, k)), rand(rng, (n, o, oh, ow))
    want = np.empty_like(x)
    reference.conv2d_backward(x, wt, dy, want, None, None, s, p)
    route = Route(threads)
    results = {}
    for mode in [dict(subpixel=True), dict(subpixel=True, implicit=False), dict(subpixel=False)]:
        got = np.full_like(x, np.nan)
        assert route(_core.conv2d_backward, x, wt, dy, got, None, None, s, p, **mode) is got
        assert_close(got, want)
        results[tuple(mode.items())] = got
    old = results[(("subpixel", False),)]
    assert_close(results[(("subpixel", True),)], old)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 3, 64])
@pytest.mark.parametrize("c, o, h, w, kernel, stride, padding", [
    (64, 128, 14, 14, (4, 4), (2, 2), (1, 1)),  # dcgan-d conv2
    (17, 33, 9, 12, (3, 5), (2, 3), (1, 2)),    # ragged channels, rectangular everything
    (20, 9, 13, 7, (5, 2), (3, 2), (4, 0)),
])
def test_conv2d_dx_by_phases_batches_and_channels(threads, n, c, o, h, w, kernel, stride, padding):
    rng = np.random.default_rng(n + c + h)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    x, wt, dy = rand(rng, (n, c, h, w)), rand(rng, (o, c, kh, kw)), rand(rng, (n, o, oh, ow))
    want = np.empty_like(x)
    reference.conv2d_backward(x, wt, dy, want, None, None, stride, padding)
    route = Route(threads)
    got = np.full_like(x, np.nan)
    dw, db = np.zeros_like(wt), np.zeros(o, np.float32)
    route(_core.conv2d_backward, x, wt, dy, got, dw, db, stride, padding)
    assert_close(got, want)
    old = np.full_like(x, np.nan)
    route(_core.conv2d_backward, x, wt, dy, old, None, None, stride, padding, subpixel=False)
    assert_close(got, old)
    want_dw, want_db = np.zeros_like(wt), np.zeros(o, np.float32)
    reference.conv2d_backward(x, wt, dy, None, want_dw, want_db, stride, padding)
    assert_close(dw, want_dw, 1e-4)
    assert_close(db, want_db, 1e-4)


def test_default_route_keeps_measured_shape_classes_and_matches():
    # the unforced rule: dcgan-d's conv2 takes the phases, its 1-channel first conv col2im;
    # either way the result equals the reference
    def dx(x_shape, w_shape, stride, dtype="float32"):
        return conv_plan.plan_conv2d(x_shape, w_shape, stride, 1, dtype, level="avx512",
                                     threads=1).dx

    assert dx((64, 64, 14, 14), (128, 64, 4, 4), 2) == "winograd_s2_dx"  # test_winograd_s2.py
    with tuning(conv_winograd_s2_dx=False):
        assert dx((64, 64, 14, 14), (128, 64, 4, 4), 2) == "subpixel"
    assert dx((64, 1, 28, 28), (64, 1, 4, 4), 2) == "col2im/f32"
    assert dx((64, 64, 14, 14), (128, 64, 4, 4), 2, "float64") == "col2im/f64"
    assert not dx((64, 64, 7, 7), (128, 64, 3, 3), 1).startswith("subpixel")
    rng = np.random.default_rng(5)
    x, wt, dy = rand(rng, (16, 32, 14, 14)), rand(rng, (48, 32, 4, 4)), rand(rng, (16, 48, 7, 7))
    want = np.empty_like(x)
    reference.conv2d_backward(x, wt, dy, want, None, None, 2, 1)
    got = np.full_like(x, np.nan)
    _core.conv2d_backward(x, wt, dy, got, None, None, 2, 1)
    assert_close(got, want)


def convt_cases():
    out = []
    for s, k in itertools.product([2, 3], range(1, 6)):
        for p in range(k):
            for h, w in [(4, 5), (3, 1)]:
                for op in range(s):
                    oh, ow = (h - 1) * s - 2 * p + k + op, (w - 1) * s - 2 * p + k + op
                    if oh >= 1 and ow >= 1:
                        out.append((s, k, p, h, w, op))
    return out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("s, k, p, h, w, op", convt_cases())
def test_conv_transpose2d_forward_by_phases(threads, s, k, p, h, w, op):
    rng = np.random.default_rng(1000 * s + 100 * k + 10 * p + h + op)
    n, cin, cout = 3, 6, 5
    oh, ow = (h - 1) * s - 2 * p + k + op, (w - 1) * s - 2 * p + k + op
    x, wt, b = rand(rng, (n, cin, h, w)), rand(rng, (cin, cout, k, k)), rand(rng, (cout,))
    route = Route(threads)
    for bias in (b, None):
        want = reference.conv_transpose2d_forward(x, wt, bias, np.empty((n, cout, oh, ow), np.float32), s, p)
        outs = []
        for mode in [dict(subpixel=True), dict(subpixel=True, implicit=False), dict(subpixel=False)]:
            out = np.full((n, cout, oh, ow), np.nan, np.float32)
            assert route(_core.conv_transpose2d_forward, x, wt, bias, out, s, p, **mode) is out
            assert_close(out, want)
            outs.append(out)
        assert_close(outs[0], outs[2])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 3, 64])
@pytest.mark.parametrize("cin, cout, h, w, k, s, p, op", [
    (128, 64, 7, 7, 4, 2, 1, 0),   # dcgan-g
    (64, 1, 14, 14, 4, 2, 1, 0),   # dcgan-g's last layer
    (33, 19, 5, 8, 3, 2, 1, 1),    # output padding, ragged channels
])
def test_conv_transpose2d_forward_by_phases_dcgan_shapes(threads, n, cin, cout, h, w, k, s, p, op):
    rng = np.random.default_rng(n + cin)
    oh, ow = (h - 1) * s - 2 * p + k + op, (w - 1) * s - 2 * p + k + op
    x, wt, b = rand(rng, (n, cin, h, w)), rand(rng, (cin, cout, k, k)), rand(rng, (cout,))
    want = reference.conv_transpose2d_forward(x, wt, b, np.empty((n, cout, oh, ow), np.float32), s, p)
    route = Route(threads)
    out = np.full((n, cout, oh, ow), np.nan, np.float32)
    route(_core.conv_transpose2d_forward, x, wt, b, out, s, p)
    assert_close(out, want)
    # and through the measured (unforced) rule
    old = np.full_like(out, np.nan)
    _core.conv_transpose2d_forward(x, wt, b, old, s, p)
    assert_close(old, want)


def test_results_do_not_depend_on_thread_count():
    rng = np.random.default_rng(9)
    x, wt, dy = rand(rng, (9, 24, 11, 13)), rand(rng, (40, 24, 4, 3)), None
    oh, ow = (11 + 2 - 4) // 2 + 1, (13 + 2 - 3) // 2 + 1
    dy = rand(rng, (9, 40, oh, ow))
    outs = []
    for threads in (1, 2):
        got = np.empty_like(x)
        Route(threads)(_core.conv2d_backward, x, wt, dy, got, None, None, 2, 1)
        outs.append(got)
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("layer", ["conv", "convt"])
def test_gradcheck_float64_layers_with_the_route_on(layer):
    # the phase route is float32 only: float64 layers keep col2im and still pass gradcheck with
    # it forced on; their float32 copies' input gradients match the float64 ones
    from fastnn import layers as L

    rng = np.random.default_rng(3)
    if layer == "conv":
        mod, x = L.Conv2D(3, 4, 3, stride=2, padding=1), rng.standard_normal((2, 3, 7, 6))
    else:
        mod = L.ConvTranspose2D(3, 4, 3, stride=2, padding=1, output_padding=1)
        x = rng.standard_normal((2, 3, 4, 5))
    with tuning(conv_subpixel=True, conv_subpixel_force=True):
        fastnn.assert_gradcheck(mod.astype(np.float64), x, max_entries=40)
        y = mod.astype(np.float64).forward(x)  # astype casts in place
        dy = rng.standard_normal(y.shape)
        dx64 = mod.backward(dy).copy()
        mod.astype(np.float32).forward(x.astype(np.float32))
        dx32 = mod.backward(dy.astype(np.float32))
        assert dx32.dtype == np.float32
    assert_close(dx32, dx64, 1e-5)
