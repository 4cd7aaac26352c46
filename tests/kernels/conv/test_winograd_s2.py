"""The stride-2 Winograd routes (winograd_s2: _conv._winograd_s2_forward, F(4x4,2x2) over the
four stride phases of a 4x4 stride-2 convolution; winograd_s2_dx: _conv._winograd_s2_dx, its
backward-data pass phase by phase, also conv_transpose2d's forward): float32 against the
float64 NumPy reference within the documented tolerance (docs/winograd.md) over drawn shapes
(channels off multiples of 16, odd images, batch 1, paddings 0..2), the fused bias and
activations, the same bits on 1 and 2 threads and for any tile block, the NaN fallback and the
planner's choice."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import _core
from fastnn._core import _conv, conv_plan, reference, routes
from fastnn._core.tuning import tuning

needs_s2 = pytest.mark.skipif(not _conv._winograd_s2_available(),
                              reason="the stride-2 Winograd kernels need the AVX2 level or above")
TOL = 2e-5  # of max(1, max |reference|): the float32 tolerance docs/winograd.md states


def rand(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def grid(x, padding):
    return (x.shape[2] + 2 * padding - 4) // 2 + 1, (x.shape[3] + 2 * padding - 4) // 2 + 1


def winograd_s2(x, w, b, padding, threads=1, block=0, act=0, slope=0.0):
    prev = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(threads)
        out = np.full((x.shape[0], w.shape[0]) + grid(x, padding), np.nan, np.float32)
        return _conv._winograd_s2_forward(x, w, b, out, padding, padding, act, slope, block)
    finally:
        fastnn.set_num_threads(prev)


def reference_forward(x, w, b, padding):
    out = np.empty((x.shape[0], w.shape[0]) + grid(x, padding))
    return reference.conv2d_forward(x.astype(np.float64), w.astype(np.float64),
                                    None if b is None else b.astype(np.float64), out, 2, padding)


def relative_error(got, want):
    return float(np.abs(got - want).max() / max(1.0, np.abs(want).max()))


@needs_s2
@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 37), o=st.integers(1, 40), h=st.integers(2, 17),
       w=st.integers(2, 17), padding=st.integers(0, 2), with_bias=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_forward_matches_reference(n, c, o, h, w, padding, with_bias, seed):
    assume(h + 2 * padding >= 4 and w + 2 * padding >= 4)  # an output at all
    rng = np.random.default_rng(seed)
    x, wt = rand(rng, (n, c, h, w)), rand(rng, (o, c, 4, 4))
    b = rand(rng, (o,)) if with_bias else None
    assert relative_error(winograd_s2(x, wt, b, padding), reference_forward(x, wt, b, padding)) \
        <= TOL


@needs_s2
def test_error_on_the_dcgan_discriminator_layer_is_as_documented():
    """dcgan-d's 64->128 14x14 layer (8 samples, weights at the 1/sqrt(fan-in) scale): about
    3e-6 of the largest output (docs/winograd.md lists the measured values)."""
    rng = np.random.default_rng(2)
    x, wt, b = rand(rng, (8, 64, 14, 14)), rand(rng, (128, 64, 4, 4)) / np.float32(32), \
        rand(rng, (128,))
    want = reference_forward(x, wt, b, 1)
    err = float(np.abs(winograd_s2(x, wt, b, 1) - want).max() / np.abs(want).max())
    assert err < 1e-5


@needs_s2
@pytest.mark.parametrize("act,slope", [(1, 0.0), (2, 0.2)])
def test_fused_activation_is_the_activation_of_the_output(act, slope):
    rng = np.random.default_rng(3)
    x, wt, b = rand(rng, (5, 16, 9, 11)), rand(rng, (21, 16, 4, 4)), rand(rng, (21,))
    plain = winograd_s2(x, wt, b, 1)
    fused = winograd_s2(x, wt, b, 1, act=act, slope=slope)
    want = np.empty_like(plain)
    if act == 2:
        _core.leaky_relu_forward(plain, slope, want)
    else:
        _core.relu_forward(plain, want)
    np.testing.assert_array_equal(fused, want)


@needs_s2
def test_same_bits_on_one_and_two_threads_and_any_block():
    rng = np.random.default_rng(4)
    x, wt, b = rand(rng, (9, 19, 13, 10)), rand(rng, (35, 19, 4, 4)), rand(rng, (35,))
    one = winograd_s2(x, wt, b, 1, threads=1)
    for threads, block in ((2, 0), (2, 16), (1, 48), (2, 3)):
        got = winograd_s2(x, wt, b, 1, threads=threads, block=block)
        np.testing.assert_array_equal(got, one, err_msg=f"{threads} threads, block {block}")


@needs_s2
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_output_is_reported_for_an_exact_route(bad):
    """A NaN or inf in x would reach every output of its tiles: the route returns None instead
    of out, so the caller recomputes where it reaches only its windows."""
    rng = np.random.default_rng(5)
    x, wt = rand(rng, (2, 16, 9, 9)), rand(rng, (32, 16, 4, 4))
    assert winograd_s2(x, wt, None, 1) is not None
    x[1, 3, 4, 7] = bad
    assert winograd_s2(x, wt, None, 1) is None
    assert winograd_s2(x, wt, None, 1, act=1) is None  # checked before the ReLU


@needs_s2
def test_a_nan_reaches_exactly_the_outputs_of_its_windows():
    """Through the planner: the non-finite outputs send the call to the exact route."""
    rng = np.random.default_rng(7)
    x, wt = rand(rng, (2, 16, 14, 14)), rand(rng, (32, 16, 4, 4))
    x[0, 2, 5, 8] = np.nan  # padded row 6, column 9: outputs rows 2-3, columns 3-4
    out = np.empty((2, 32, 7, 7), np.float32)
    with routes.traced() as taken:
        _core.conv2d_forward(x, wt, None, out, 2, 1)
    assert "winograd_s2" in taken and len(taken) == 2  # then the exact route
    want = np.zeros(out.shape, bool)
    want[0, :, 2:4, 3:5] = True
    np.testing.assert_array_equal(np.isnan(out), want)


@pytest.mark.skipif(_conv._winograd_s2_available(), reason="the level has the kernels")
def test_levels_without_the_kernels_refuse_the_route():
    x, wt = np.zeros((1, 2, 6, 6), np.float32), np.zeros((3, 2, 4, 4), np.float32)
    with pytest.raises(RuntimeError, match="ISA level"):
        _conv._winograd_s2_forward(x, wt, None, np.empty((1, 3, 3, 3), np.float32), 1, 1)


@pytest.mark.parametrize("level", ["avx2", "avx512"])
def test_the_planner_takes_it_for_the_dcgan_layers(level):
    d = ((64, 64, 14, 14), (128, 64, 4, 4), 2, 1)
    assert conv_plan.plan_conv2d(*d, level=level, threads=2).forward == "winograd_s2"
    assert conv_plan.plan_conv2d(*d, level=level, threads=1).forward == "winograd_s2"
    assert conv_plan.plan_conv2d(*d, level="baseline", threads=2).forward != "winograd_s2"
    assert conv_plan.plan_conv2d(*d, dtype="float64", level=level).forward != "winograd_s2"
    # dcgan-d's first layer (one input channel) and narrow outputs keep the direct route
    assert conv_plan.plan_conv2d((64, 1, 28, 28), (64, 1, 4, 4), 2, 1,
                                 level=level).forward != "winograd_s2"
    assert conv_plan.plan_conv2d((64, 64, 14, 14), (16, 64, 4, 4), 2, 1,
                                 level=level).forward != "winograd_s2"
    assert conv_plan.plan_conv2d(*d, level=level, threads=2).dx == "winograd_s2_dx"
    assert conv_plan.plan_conv2d(*d, level="baseline", threads=2).dx != "winograd_s2_dx"
    # dcgan-g's 128->64 transposed conv: its dx is that forward, its forward that dx
    g = conv_plan.plan_conv_transpose2d((64, 128, 7, 7), (128, 64, 4, 4), 2, 1, level=level,
                                        threads=2)
    assert (g.forward, g.dx) == ("winograd_s2_dx", "winograd_s2")


# ---- the backward-data pass (winograd_s2_dx) ----------------------------------------------------

def winograd_s2_dx(dy, w, x_shape, padding, threads=1, block=0, bias=None):
    prev = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(threads)
        dx = np.full(x_shape, np.nan, np.float32)
        return _conv._winograd_s2_dx(dy, w, bias, dx, padding, padding, block)
    finally:
        fastnn.set_num_threads(prev)


def reference_dx(dy, w, x_shape, padding):
    dx = np.empty(x_shape)
    reference.conv2d_backward(np.zeros(x_shape), w.astype(np.float64), dy.astype(np.float64),
                              dx, None, None, 2, padding)
    return dx


@needs_s2
@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 37), o=st.integers(1, 40), h=st.integers(2, 17),
       w=st.integers(2, 17), padding=st.integers(0, 2), seed=st.integers(0, 2 ** 16))
def test_dx_matches_reference(n, c, o, h, w, padding, seed):
    assume(h + 2 * padding >= 4 and w + 2 * padding >= 4)
    rng = np.random.default_rng(seed)
    x_shape = (n, c, h, w)
    wt = rand(rng, (o, c, 4, 4))
    dy = rand(rng, (n, o) + grid(np.empty(x_shape), padding))
    assert relative_error(winograd_s2_dx(dy, wt, x_shape, padding),
                          reference_dx(dy, wt, x_shape, padding)) <= TOL


@needs_s2
def test_dx_same_bits_on_one_and_two_threads_and_any_block():
    rng = np.random.default_rng(8)
    x_shape, wt = (9, 19, 13, 10), rand(rng, (35, 19, 4, 4))
    dy = rand(rng, (9, 35) + grid(np.empty(x_shape), 1))
    one = winograd_s2_dx(dy, wt, x_shape, 1, threads=1)
    for threads, block in ((2, 0), (2, 16), (1, 48), (2, 3)):
        got = winograd_s2_dx(dy, wt, x_shape, 1, threads=threads, block=block)
        np.testing.assert_array_equal(got, one, err_msg=f"{threads} threads, block {block}")


@needs_s2
def test_conv_transpose_forward_with_bias_takes_the_dx_route():
    rng = np.random.default_rng(9)
    x, wt, b = rand(rng, (3, 40, 5, 6)), rand(rng, (40, 17, 4, 4)), rand(rng, (17,))
    out = np.empty((3, 17, 10, 12), np.float32)
    with routes.traced() as taken:
        _core.conv_transpose2d_forward(x, wt, b, out, 2, 1)
    assert set(taken) == {"winograd_s2_dx"}
    want = np.empty(out.shape)
    reference.conv_transpose2d_forward(x.astype(np.float64), wt.astype(np.float64),
                                       b.astype(np.float64), want, 2, 1)
    assert relative_error(out, want) <= TOL


@needs_s2
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_dy_reaches_exactly_the_dx_of_its_windows(bad):
    """Through the planner: a non-finite dx sends the pass to the exact sub-pixel route."""
    rng = np.random.default_rng(10)
    x, wt = rand(rng, (2, 16, 14, 14)), rand(rng, (32, 16, 4, 4))
    dy = rand(rng, (2, 32, 7, 7))
    dy[1, 4, 3, 2] = bad
    dx = np.empty_like(x)
    with routes.traced() as taken:
        _core.conv2d_backward(x, wt, dy, dx, None, None, 2, 1)
    assert "winograd_s2_dx" in taken and "subpixel" in taken
    want = np.zeros(x.shape, bool)
    want[1, :, 5:9, 3:7] = True  # padded rows 6..9 (2*3 + 0..3), columns 4..7
    np.testing.assert_array_equal(~np.isfinite(dx), want)


# ---- dx through the activation before the convolution (conv2d_backward's relu=) -------------

def _activation_input(rng, shape, slope):
    """x as a (leaky) ReLU's output, with exact zeros (-0.0 too) where the mask must drop dx."""
    x = rand(rng, shape)
    x[x < 0] = 0.0 if slope is None else np.float32(slope) * x[x < 0]
    x.reshape(-1)[::7] = 0.0
    x.reshape(-1)[3::11] = -0.0
    return x


@needs_s2
@pytest.mark.parametrize("slope", [None, 0.2])
@pytest.mark.parametrize("route", ["winograd_s2_dx", "winograd_s2_dx/3x3", "subpixel", "nan"])
def test_dx_through_an_activation_is_dx_then_its_backward_bitwise(slope, route):
    """The mask applied as winograd_s2_dx stores dx (4x4 and 3x3 weights, odd images, 1 and 2
    threads), after the route otherwise (a forced exact route, a NaN's fallback): the bits of
    conv2d_backward then relu_backward / leaky_relu_backward."""
    rng = np.random.default_rng(11)
    k = 3 if route.endswith("3x3") else 4
    x = _activation_input(rng, (3, 17, 13, 12), slope)
    wt = rand(rng, (33, 17, k, k))
    oh, ow = (13 + 2 - k) // 2 + 1, (12 + 2 - k) // 2 + 1
    dy = rand(rng, (3, 33, oh, ow))
    if route == "nan":
        dy[2, 5, 1, 1] = np.nan
    forced = {"conv_dx": "winograd_s2_dx" if route == "nan" else route}
    prev = fastnn.get_num_threads()
    try:
        for threads in (1, 2):
            fastnn.set_num_threads(threads)
            with tuning(**forced):
                plain, fused = np.empty_like(x), np.empty_like(x)
                _core.conv2d_backward(x, wt, dy, plain, None, None, 2, 1)
                want = np.empty_like(x)
                if slope is None:
                    _core.relu_backward(x, plain, want)
                else:
                    _core.leaky_relu_backward(x, plain, slope, want)
                with routes.traced() as taken:
                    _core.conv2d_backward(x, wt, dy, fused, None, None, 2, 1, relu=True,
                                          negative_slope=slope)
            assert (route.replace("nan", "winograd_s2_dx")) in taken
            np.testing.assert_array_equal(fused, want, err_msg=f"{threads} threads")
    finally:
        fastnn.set_num_threads(prev)
    assert (x > 0).any() and (fused != plain).any()  # the mask kept some values, changed others


# ---- 3x3 stride-2 convolutions as 4x4 ones (winograd_s2/3x3, winograd_s2_dx/3x3) ----------------

def grid3(shape, padding):
    return (shape[2] + 2 * padding - 3) // 2 + 1, (shape[3] + 2 * padding - 3) // 2 + 1


def reference_forward3(x, w, b, padding):
    out = np.empty((x.shape[0], w.shape[0]) + grid3(x.shape, padding))
    return reference.conv2d_forward(x.astype(np.float64), w.astype(np.float64),
                                    None if b is None else b.astype(np.float64), out, 2, padding)


def winograd_s2_3x3(x, w, b, padding, threads=1):
    """winograd_s2 on a 3x3 weight: the output grid is the 3x3 convolution's."""
    prev = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(threads)
        out = np.full((x.shape[0], w.shape[0]) + grid3(x.shape, padding), np.nan, np.float32)
        return _conv._winograd_s2_forward(x, w, b, out, padding, padding)
    finally:
        fastnn.set_num_threads(prev)


@needs_s2
@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 37), o=st.integers(1, 40), h=st.integers(1, 19),
       w=st.integers(1, 19), padding=st.integers(0, 2), with_bias=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_3x3_forward_and_dx_match_reference(n, c, o, h, w, padding, with_bias, seed):
    """A 3x3 weight runs as a 4x4 one with a zero row and column (first for an odd padding,
    then one more row of it): odd and even sizes keep the 3x3 convolution's grid."""
    assume(h + 2 * padding >= 3 and w + 2 * padding >= 3)
    rng = np.random.default_rng(seed)
    x, wt = rand(rng, (n, c, h, w)), rand(rng, (o, c, 3, 3))
    b = rand(rng, (o,)) if with_bias else None
    assert relative_error(winograd_s2_3x3(x, wt, b, padding),
                          reference_forward3(x, wt, b, padding)) <= TOL
    dy = rand(rng, (n, o) + grid3(x.shape, padding))
    assert relative_error(winograd_s2_dx(dy, wt, x.shape, padding),
                          reference_dx(dy, wt, x.shape, padding)) <= TOL


@needs_s2
@pytest.mark.parametrize("c,o,side", [(16, 32, 32), (16, 32, 31), (32, 64, 16), (32, 64, 15)])
def test_3x3_error_on_the_resnet_layers_is_as_documented(c, o, side):
    """resnet's stride-2 3x3 layers (4 samples, weights at the 1/sqrt(fan-in) scale), both
    sizes that give their output grid: about 3e-6 of the largest output and dx (docs/winograd.md
    lists the measured values)."""
    rng = np.random.default_rng(11)
    x, wt = rand(rng, (4, c, side, side)), rand(rng, (o, c, 3, 3)) / np.float32(np.sqrt(9 * c))
    want = reference_forward3(x, wt, None, 1)
    assert want.shape[2] == (side + 1) // 2
    assert float(np.abs(winograd_s2_3x3(x, wt, None, 1) - want).max() / np.abs(want).max()) < 1e-5
    dy = rand(rng, want.shape)
    want_dx = reference_dx(dy, wt, x.shape, 1)
    assert float(np.abs(winograd_s2_dx(dy, wt, x.shape, 1) - want_dx).max()
                 / np.abs(want_dx).max()) < 1e-5


@needs_s2
def test_3x3_same_bits_on_one_and_two_threads():
    rng = np.random.default_rng(12)
    x, wt, b = rand(rng, (9, 19, 15, 16)), rand(rng, (35, 19, 3, 3)), rand(rng, (35,))
    np.testing.assert_array_equal(winograd_s2_3x3(x, wt, b, 1, threads=2),
                                  winograd_s2_3x3(x, wt, b, 1, threads=1))
    dy = rand(rng, (9, 35) + grid3(x.shape, 1))
    np.testing.assert_array_equal(winograd_s2_dx(dy, wt, x.shape, 1, threads=2),
                                  winograd_s2_dx(dy, wt, x.shape, 1, threads=1))


@needs_s2
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_3x3_a_non_finite_value_falls_back_to_the_exact_routes(bad):
    """Through the planner (resnet's 32->64 layer geometry; the forward's route forced, the
    AVX2 level's planner keeps it on direct_s2_forward): a non-finite x sends the forward to
    direct_s2_forward, a non-finite dy the dx to the sub-pixel route, each then reaching
    exactly the outputs of its windows."""
    rng = np.random.default_rng(13)
    x, wt = rand(rng, (2, 32, 16, 16)), rand(rng, (64, 32, 3, 3))
    x[1, 5, 6, 9] = bad
    out = np.empty((2, 64, 8, 8), np.float32)
    with routes.traced() as taken, tuning(conv_forward="winograd_s2/3x3"):
        _core.conv2d_forward(x, wt, None, out, 2, 1)
    assert "winograd_s2/3x3" in taken and len(taken) == 2  # then direct_s2_forward
    assert any(r.startswith("direct_s2_forward/") for r in taken)
    reach = reference_forward3((~np.isfinite(x)).astype(np.float32), np.abs(wt), None, 1) > 0
    assert reach.sum() == 2 * 64  # output row 3, columns 4 and 5
    np.testing.assert_array_equal(~np.isfinite(out), reach)
    dy = rand(rng, (2, 64, 8, 8))
    dy[0, 7, 2, 5] = bad
    dx = np.empty_like(x)
    with routes.traced() as taken:
        _core.conv2d_backward(x, wt, dy, dx, None, None, 2, 1)
    assert "winograd_s2_dx/3x3" in taken and "subpixel" in taken
    reach = reference_dx((~np.isfinite(dy)).astype(np.float32), np.abs(wt), x.shape, 1) > 0
    assert reach.sum() == 32 * 9  # dx rows 3..5, columns 9..11
    np.testing.assert_array_equal(~np.isfinite(dx), reach)


@needs_s2
@pytest.mark.parametrize("output_padding", [0, 1])
def test_3x3_conv_transpose_takes_both_routes(output_padding):
    """ConvTranspose2D 3x3 stride 2 (8x8 -> 15x15 or 16x16): its forward is the dx route, its
    dx the forward route (forced: the AVX2 level's planner keeps the direct route)."""
    rng = np.random.default_rng(14)
    x, wt, b = rand(rng, (2, 64, 8, 8)), rand(rng, (64, 32, 3, 3)), rand(rng, (32,))
    side = 15 + output_padding
    out = np.empty((2, 32, side, side), np.float32)
    with routes.traced() as taken:
        _core.conv_transpose2d_forward(x, wt, b, out, 2, 1)
    assert set(taken) == {"winograd_s2_dx/3x3"}
    want = np.empty(out.shape)
    reference.conv_transpose2d_forward(x.astype(np.float64), wt.astype(np.float64),
                                       b.astype(np.float64), want, 2, 1)
    assert relative_error(out, want) <= TOL
    dy = rand(rng, out.shape)
    dx = np.empty_like(x)
    with routes.traced() as taken, tuning(convt_dx="winograd_s2/3x3"):
        _core.conv_transpose2d_backward(x, wt, dy, dx, None, None, 2, 1)
    assert set(taken) == {"winograd_s2/3x3"}
    want_dx = np.empty(x.shape)
    reference.conv_transpose2d_backward(x.astype(np.float64), wt.astype(np.float64),
                                        dy.astype(np.float64), want_dx, None, None, 2, 1)
    assert relative_error(dx, want_dx) <= TOL


def test_3x3_planner_choice_and_levels():
    """The forward at AVX-512 only, dx at AVX2 too (the baseline keeps its routes), float32
    only, the knob, resnet's layers (tests/kernels/conv/test_planner.py), and the partial-tile
    sizes left alone."""
    d = ((64, 32, 16, 16), (64, 32, 3, 3), 2, 1)
    assert conv_plan.plan_conv2d(*d, level="avx512", threads=1)[:2] == ("winograd_s2/3x3",
                                                                        "winograd_s2_dx/3x3")
    assert conv_plan.plan_conv2d(*d, level="avx2", threads=1)[:2] == (
        "direct_s2_forward/per_sample", "winograd_s2_dx/3x3")
    assert "winograd_s2/3x3" in conv_plan.eligible("conv2d", "forward", *d[:2], 2, 1,
                                                   level="avx2")
    p = conv_plan.plan_conv2d(*d, level="baseline", threads=1)
    assert "winograd_s2" not in p.forward + p.dx, p
    assert not any(r.startswith("winograd_s2") for r in conv_plan.eligible(
        "conv2d", "forward", *d[:2], 2, 1, level="baseline"))
    p = conv_plan.plan_conv2d(*d, dtype="float64", level="avx512")
    assert "winograd_s2" not in p.forward + p.dx
    with tuning(conv_winograd_s2_3x3=False):
        p = conv_plan.plan_conv2d(*d, level="avx512", threads=1)
    assert p[:2] == ("direct_s2_forward/per_sample", "subpixel")
    # 12x12 images (6x6 outputs): the tiles a third empty
    p = conv_plan.plan_conv2d((64, 32, 12, 12), (64, 32, 3, 3), 2, 1, level="avx512")
    assert "winograd_s2" not in p.forward + p.dx
    with tuning(conv_forward="winograd_s2/3x3", conv_dx="winograd_s2_dx/3x3"):
        forced = conv_plan.plan_conv2d((64, 32, 12, 12), (64, 32, 3, 3), 2, 1, level="avx512")
        assert forced[:2] == ("winograd_s2/3x3", "winograd_s2_dx/3x3")
        with pytest.raises(ValueError, match="not eligible"):
            conv_plan.plan_conv2d(*d, level="baseline")
