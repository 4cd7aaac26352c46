"""The Winograd routes (winograd and winograd/f4: _conv._winograd_forward with tile 2,
F(2x2,3x3), or 4, F(4x4,3x3)): 3x3 stride-1 float32 convolutions against the float64 NumPy
reference within the documented float32 tolerance (docs/winograd.md: 1e-5 of the output's scale)
over drawn shapes (channels off multiples of 16, odd images, batch 1, paddings 0..2), the
backward-data pass it serves (dy with the flipped, transposed weight), the fused bias and
activations, the same bits on 1 and 2 threads and for any tile block, the same bits at the AVX2
and AVX-512 levels, the planner's choice and the NaN fallback."""
import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conv_route_helpers import drawn_conv, num_threads, rand, relative_error
from fastnn import _core
from fastnn._core import _conv, reference, routes
from fastnn._core.tuning import tuning

needs_winograd = pytest.mark.skipif(not _conv._winograd_available(),
                                    reason="the Winograd kernels need the AVX2 or AVX-512 level")
TILES = [2, 4]
TOL = 1e-5  # of max(1, max |reference|): the float32 tolerance docs/winograd.md states


def _run(kernel, x, w, padding, threads, act):
    """kernel(out, code, slope) on ``threads`` threads, out NaN-filled for x (N, C, H, W) and w's
    output channels at stride 1; act: {} (none), {"relu": True} or {"negative_slope": s}."""
    n, _, h, wd = x.shape
    out = np.full((n, w.shape[0], h + 2 * padding - 2, wd + 2 * padding - 2), np.nan, np.float32)
    code, slope = {(): (0, 0.0), ("relu",): (1, 0.0)}.get(tuple(act), (2, None))
    if code == 2:
        slope = act["negative_slope"]
    with num_threads(threads):
        return kernel(out, code, slope or 0.0)


def winograd(x, w, b, padding, threads=1, block=0, tile=2, **act):
    return _run(lambda out, code, slope: _conv._winograd_forward(
        x, w, b, out, padding, padding, code, slope, block, tile), x, w, padding, threads, act)


def small(x, w, b, padding, threads=1, **act):
    """winograd/small (_conv._winograd_small_forward) as ``winograd`` above."""
    return _run(lambda out, code, slope: _conv._winograd_small_forward(
        x, w, b, out, padding, padding, code, slope), x, w, padding, threads, act)


needs_small4 = pytest.mark.skipif(not _conv._winograd_small_available(4),
                                  reason="winograd/small4 needs the AVX2 or AVX-512 level")


def small4(x, w, b, padding, threads=1, **act):
    """winograd/small4 (_conv._winograd_small_forward, tile 4) as ``winograd`` above."""
    return _run(lambda out, code, slope: _conv._winograd_small_forward(
        x, w, b, out, padding, padding, code, slope, 4), x, w, padding, threads, act)


def reference_forward(x, w, b, padding):
    n, _, h, wd = x.shape
    out = np.empty((n, w.shape[0], h + 2 * padding - 2, wd + 2 * padding - 2))
    return reference.conv2d_forward(x.astype(np.float64), w.astype(np.float64),
                                    None if b is None else b.astype(np.float64), out, 1, padding)


@needs_winograd
@settings(max_examples=40, deadline=None)
@given(tile=st.sampled_from(TILES),
       n=st.integers(1, 3), c=st.integers(1, 37), o=st.integers(1, 37), h=st.integers(1, 11),
       w=st.integers(1, 11), padding=st.integers(0, 2), with_bias=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_forward_matches_reference(tile, n, c, o, h, w, padding, with_bias, seed):
    x, wt, b = drawn_conv(n, c, o, h, w, padding, seed, with_bias=with_bias)
    got = winograd(x, wt, b, padding, tile=tile)
    assert relative_error(got, reference_forward(x, wt, b, padding)) <= TOL


@needs_winograd
@pytest.mark.parametrize("tile", TILES)
def test_backward_data_as_the_forward_of_dy_with_the_flipped_weight(tile):
    rng = np.random.default_rng(1)
    x, wt, dy = rand(rng, (3, 20, 9, 14)), rand(rng, (24, 20, 3, 3)), rand(rng, (3, 24, 9, 14))
    want = np.zeros(x.shape)
    reference.conv2d_backward(x.astype(np.float64), wt.astype(np.float64), dy.astype(np.float64),
                              want, None, None, 1, 1)
    flipped = np.ascontiguousarray(wt.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    assert relative_error(winograd(dy, flipped, None, 1, tile=tile), want) <= TOL


@needs_winograd
@pytest.mark.parametrize("tile, bound", [(2, 1e-6), (4, 2e-5)])
def test_error_on_a_vgg_layer_is_as_documented(tile, bound):
    """vgg-bn's 64->64 14x14 layer (8 samples): F(2x2,3x3) is as accurate as the direct routes
    (about 3e-7), F(4x4,3x3) about 20 times less (docs/winograd.md lists the measured values)."""
    rng = np.random.default_rng(2)
    x, wt = rand(rng, (8, 64, 14, 14)), rand(rng, (64, 64, 3, 3)) / np.float32(24)
    b = rand(rng, (64,))
    want = reference_forward(x, wt, b, 1)
    err = float(np.abs(winograd(x, wt, b, 1, tile=tile) - want).max() / np.abs(want).max())
    assert err < bound


@needs_winograd
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("act", [{"relu": True}, {"relu": True, "negative_slope": 0.2}])
def test_fused_activation_is_the_activation_of_the_output(act, tile):
    rng = np.random.default_rng(3)
    x, wt, b = rand(rng, (5, 16, 7, 9)), rand(rng, (21, 16, 3, 3)), rand(rng, (21,))
    plain = winograd(x, wt, b, 1, tile=tile)
    fused = winograd(x, wt, b, 1, tile=tile, **act)
    want = np.empty_like(plain)
    if "negative_slope" in act:
        _core.leaky_relu_forward(plain, act["negative_slope"], want)
    else:
        _core.relu_forward(plain, want)
    np.testing.assert_array_equal(fused, want)


@needs_winograd
@pytest.mark.parametrize("tile", TILES)
def test_same_bits_on_one_and_two_threads_and_any_block(tile):
    rng = np.random.default_rng(4)
    x, wt, b = rand(rng, (6, 19, 13, 10)), rand(rng, (35, 19, 3, 3)), rand(rng, (35,))
    one = winograd(x, wt, b, 1, threads=1, tile=tile)
    for threads, block in ((2, 0), (2, 32), (1, 17), (2, 3)):
        got = winograd(x, wt, b, 1, threads=threads, block=block, tile=tile)
        np.testing.assert_array_equal(got, one, err_msg=f"{threads} threads, block {block}")


@needs_winograd
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_output_is_reported_for_an_exact_route(tile, bad):
    """A NaN or inf in x would reach every output of its tiles (NaN - NaN, inf - inf): the route
    returns None instead of out, so the caller recomputes where it reaches only its windows."""
    rng = np.random.default_rng(5)
    x, wt = rand(rng, (2, 16, 9, 9)), rand(rng, (16, 16, 3, 3))
    assert winograd(x, wt, None, 1, tile=tile) is not None
    x[1, 3, 4, 7] = bad
    assert winograd(x, wt, None, 1, tile=tile) is None
    assert winograd(x, wt, None, 1, tile=tile, relu=True) is None  # checked before the ReLU


@pytest.mark.skipif(_conv._winograd_available(4), reason="the level has every Winograd kernel")
def test_levels_without_the_kernels_refuse_the_route():
    x, wt = np.zeros((1, 2, 4, 4), np.float32), np.zeros((3, 2, 3, 3), np.float32)
    for tile in (2, 4):
        if not _conv._winograd_available(tile):
            with pytest.raises(RuntimeError, match="ISA level"):
                _conv._winograd_forward(x, wt, None, np.empty((1, 3, 4, 4), np.float32), 1, 1,
                                        0, 0.0, 0, tile)


@needs_winograd
def test_the_planner_takes_it_for_vgg_layers_and_the_tile_knob_forces_the_tile():
    rng = np.random.default_rng(6)
    x, wt, b = rand(rng, (3, 24, 10, 10)), rand(rng, (20, 24, 3, 3)), rand(rng, (20,))
    for tile, route in ((None, "winograd"), (2, "winograd"), (4, "winograd/f4")):
        out = np.empty((3, 20, 10, 10), np.float32)
        with tuning(conv_winograd_tile=tile, conv_winograd_small=False), \
                routes.traced() as taken:
            _core.conv2d_forward(x, wt, b, out, 1, 1, relu=True)
        assert set(taken) == {route}  # 10x10: F(2x2,3x3) unless forced
        np.testing.assert_array_equal(out, winograd(x, wt, b, 1, tile=tile or 2, relu=True))
    with pytest.raises(ValueError, match="conv_winograd_tile"):
        with tuning(conv_winograd_tile=3):
            pass


@needs_winograd
@pytest.mark.parametrize("route", ["winograd", "winograd/small"])
def test_a_nan_reaches_exactly_the_outputs_of_its_windows(route):
    """Through the planner: the non-finite outputs send the call to the exact route."""
    rng = np.random.default_rng(7)
    x, wt = rand(rng, (2, 16, 8, 8)), rand(rng, (16, 16, 3, 3))
    x[0, 2, 3, 5] = np.nan
    out = np.empty((2, 16, 8, 8), np.float32)
    with tuning(conv_forward=route), routes.traced() as taken:
        _core.conv2d_forward(x, wt, None, out, 1, 1)
    assert route in taken and len(taken) == 2  # then the exact route
    want = np.zeros(out.shape, bool)
    want[0, :, 2:5, 4:7] = True
    np.testing.assert_array_equal(np.isnan(out), want)


# ---- winograd/small: the same F(2x2,3x3) with the channel products in registers ---------------

@needs_winograd
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 37), o=st.integers(1, 37), h=st.integers(1, 19),
       w=st.sampled_from([1, 2, 3, 5, 8, 11, 14, 16, 17, 32]), padding=st.integers(0, 2),
       with_bias=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_small_forward_matches_reference(n, c, o, h, w, padding, with_bias, seed):
    """Odd planes go tile by tile, planes 16 and 32 wide (after padding) by runs of 8 tiles."""
    x, wt, b = drawn_conv(n, c, o, h, w, padding, seed, with_bias=with_bias)
    assert relative_error(small(x, wt, b, padding), reference_forward(x, wt, b, padding)) <= TOL


@needs_winograd
@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 70), o=st.integers(1, 70), h=st.integers(3, 17),
       w=st.sampled_from([3, 7, 14, 16, 32]), relu=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_small_is_bitwise_the_general_route(n, c, o, h, w, relu, seed):
    """The same transforms and, per output, the same sum over the channels (a product, then
    FMAs in channel order) as the microkernel's GEMM: the same bits, at both levels."""
    x, wt, b = drawn_conv(n, c, o, h, w, 1, seed)
    act = {"relu": True} if relu else {}
    np.testing.assert_array_equal(small(x, wt, b, 1, **act), winograd(x, wt, b, 1, **act))


@needs_winograd
@pytest.mark.parametrize("route, seed, c, h, scale, forward_tol", [
    pytest.param(small, 8, 16, 32, 12, 1e-6, id="small-16ch32"),
    pytest.param(small4, 14, 32, 16, 17, TOL, id="small4-32ch16", marks=needs_small4),
])
def test_small_routes_backward_data_and_resnet_shapes(route, seed, c, h, scale, forward_tol):
    """resnet's 16->16 32x32 (winograd/small) and 32->32 16x16 (winograd/small4) layers (4
    samples) and their dx against float64, within the float32 tolerance (winograd/small4:
    F(4x4,3x3)'s bound of docs/winograd.md)."""
    rng = np.random.default_rng(seed)
    x, wt, b = rand(rng, (4, c, h, h)), rand(rng, (c, c, 3, 3)) / np.float32(scale), \
        rand(rng, (c,))
    assert relative_error(route(x, wt, b, 1), reference_forward(x, wt, b, 1)) <= forward_tol
    dy = rand(rng, (4, c, h, h))
    ref_dx = np.zeros(x.shape)
    reference.conv2d_backward(x.astype(np.float64), wt.astype(np.float64),
                              dy.astype(np.float64), ref_dx, None, None, 1, 1)
    flipped = np.ascontiguousarray(wt.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    assert relative_error(route(dy, flipped, None, 1), ref_dx) <= TOL


@needs_winograd
@pytest.mark.parametrize("act", [{"relu": True}, {"relu": True, "negative_slope": 0.2}])
def test_small_fused_activation_is_the_activation_of_the_output(act):
    rng = np.random.default_rng(9)
    x, wt, b = rand(rng, (3, 13, 16, 9)), rand(rng, (21, 13, 3, 3)), rand(rng, (21,))
    plain = small(x, wt, b, 1)
    want = np.empty_like(plain)
    if "negative_slope" in act:
        _core.leaky_relu_forward(plain, act["negative_slope"], want)
    else:
        _core.relu_forward(plain, want)
    np.testing.assert_array_equal(small(x, wt, b, 1, **act), want)


@needs_winograd
@pytest.mark.parametrize("route, seed, o, shape", [
    pytest.param(small, 10, 27, (9, 19, 13, 10), id="small-9x19x13x10"),
    pytest.param(small, 10, 27, (7, 16, 16, 16), id="small-7x16x16x16"),
    pytest.param(small4, 15, 19, (9, 7, 21, 18), id="small4-9x7x21x18", marks=needs_small4),
    pytest.param(small4, 15, 19, (5, 16, 32, 32), id="small4-5x16x32x32", marks=needs_small4),
])
def test_small_routes_same_bits_on_one_and_two_threads(route, seed, o, shape):
    rng = np.random.default_rng(seed)
    x, wt, b = rand(rng, shape), rand(rng, (o, shape[1], 3, 3)), rand(rng, (o,))
    np.testing.assert_array_equal(route(x, wt, b, 1, threads=2), route(x, wt, b, 1, threads=1))


@needs_winograd
@pytest.mark.parametrize("route, seed", [pytest.param(small, 11, id="small"),
                                         pytest.param(small4, 16, id="small4", marks=needs_small4)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("width", [9, 16])
def test_small_routes_report_a_non_finite_output(route, seed, bad, width):
    rng = np.random.default_rng(seed)
    x, wt = rand(rng, (2, 16, 9, width)), rand(rng, (16, 16, 3, 3))
    assert route(x, wt, None, 1) is not None
    x[1, 3, 4, 7] = bad
    assert route(x, wt, None, 1) is None
    assert route(x, wt, None, 1, relu=True) is None  # checked before the ReLU


@needs_winograd
def test_the_planner_takes_small_up_to_64_channels_forward_and_dx():
    rng = np.random.default_rng(12)
    for (c, o), route in (((16, 64), "winograd/small"), ((64, 65), "winograd")):
        # 6x6 outputs: below winograd/small4's smallest at every level
        x, wt, dy = rand(rng, (2, c, 6, 6)), rand(rng, (o, c, 3, 3)), rand(rng, (2, o, 6, 6))
        out, dx = np.empty((2, o, 6, 6), np.float32), np.empty_like(x)
        with routes.traced() as taken:
            _core.conv2d_forward(x, wt, None, out, 1, 1)
            _core.conv2d_backward(x, wt, dy, dx, None, None, 1, 1)
        assert set(taken) == {route}, (c, o, taken)
        if route == "winograd/small":
            np.testing.assert_array_equal(out, small(x, wt, None, 1))
            with tuning(conv_winograd_small=False), routes.traced() as taken:
                _core.conv2d_forward(x, wt, None, out, 1, 1)
            assert set(taken) == {"winograd"}


# ---- winograd/small4: winograd/f4's F(4x4,3x3) with the channel products in registers ----------

ACTS = [{}, {"relu": True}, {"relu": True, "negative_slope": 0.2}]


@needs_small4
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 37), o=st.integers(1, 37), h=st.integers(1, 19),
       w=st.sampled_from([1, 2, 5, 11, 14, 16, 17, 30, 32]), padding=st.integers(0, 2),
       with_bias=st.booleans(), act=st.sampled_from(ACTS), seed=st.integers(0, 2 ** 16))
def test_small4_is_bitwise_winograd_f4(n, c, o, h, w, padding, with_bias, act, seed):
    """The same transforms and, per output, the same sum over the channels (a product, then
    FMAs in channel order) as winograd/f4's GEMMs: the same bits (so F(4x4,3x3)'s documented
    accuracy), with bias and activation. Ragged outputs (not multiples of 4), partial groups,
    and planes whose rows of tiles are runs of 8 (outputs 32 wide) or 4 (16 wide)."""
    x, wt, b = drawn_conv(n, c, o, h, w, padding, seed, with_bias=with_bias)
    np.testing.assert_array_equal(small4(x, wt, b, padding, **act),
                                  winograd(x, wt, b, padding, tile=4, **act))


@needs_small4
@pytest.mark.parametrize("n, c, o, h, w, padding", [
    (2, 16, 16, 32, 32, 1),   # runs of 8 tiles, resnet's 16->16 layer
    (3, 16, 20, 12, 16, 1),   # runs of 4, vectors across samples (12 tiles a sample)
    (2, 5, 17, 32, 32, 0),    # runs of 8 with a ragged last tile column (30 outputs)
    (1, 32, 9, 16, 64, 1),    # runs of 8, two vectors a row of tiles
    (2, 72, 24, 16, 16, 1),   # more channels than winograd/small takes (small4 at AVX2)
    (1, 128, 96, 8, 8, 1),
])
@pytest.mark.parametrize("act", ACTS)
def test_small4_runs_of_tiles_are_bitwise_winograd_f4(n, c, o, h, w, padding, act):
    rng = np.random.default_rng(13)
    x, wt, b = rand(rng, (n, c, h, w)), rand(rng, (o, c, 3, 3)), rand(rng, (o,))
    np.testing.assert_array_equal(small4(x, wt, b, padding, **act),
                                  winograd(x, wt, b, padding, tile=4, **act))


@needs_small4
def test_the_planner_takes_small4_forward_and_dx_and_falls_back_on_a_nan():
    """From 16 input channels on outputs of 12x12 and more (the knob off:
    winograd/small); a NaN sends the call to the exact route, which confines it to its
    windows."""
    rng = np.random.default_rng(17)
    x, wt, dy = rand(rng, (2, 16, 12, 12)), rand(rng, (24, 16, 3, 3)), rand(rng, (2, 24, 12, 12))
    out, dx = np.empty((2, 24, 12, 12), np.float32), np.empty_like(x)
    for on, route in ((True, "winograd/small4"), (False, "winograd/small")):
        with tuning(conv_winograd_small4=on), routes.traced() as taken:
            _core.conv2d_forward(x, wt, None, out, 1, 1)
            _core.conv2d_backward(x, wt, dy, dx, None, None, 1, 1)
        assert set(taken) - {"winograd_dw", "dwt_s1/rows", "dwt_s1/samples"} == {route}, taken
    with routes.traced() as taken:
        _core.conv2d_forward(x, wt, None, out, 1, 1)
    np.testing.assert_array_equal(out, small4(x, wt, None, 1))
    x[0, 2, 3, 5] = np.nan
    with routes.traced() as taken:
        _core.conv2d_forward(x, wt, None, out, 1, 1)
    assert "winograd/small4" in taken and len(taken) == 2  # then the exact route
    want = np.zeros(out.shape, bool)
    want[0, :, 2:5, 4:7] = True
    np.testing.assert_array_equal(np.isnan(out), want)


@pytest.mark.skipif(_conv._winograd_small_available(4), reason="the level has winograd/small4")
def test_levels_without_small4_refuse_it_and_the_planner_never_takes_it():
    x, wt = np.zeros((1, 16, 16, 16), np.float32), np.zeros((16, 16, 3, 3), np.float32)
    with pytest.raises(RuntimeError, match="ISA level"):
        _conv._winograd_small_forward(x, wt, None, np.empty((1, 16, 16, 16), np.float32), 1, 1,
                                      0, 0.0, 4)
    with routes.traced() as taken:
        _core.conv2d_forward(x, wt, None, np.empty((1, 16, 16, 16), np.float32), 1, 1)
    assert "winograd/small4" not in taken


def _level_module(level):
    from fastnn._core import isa

    if level not in isa.compiled_levels() or isa.LEVELS.index(level) > isa.LEVELS.index(
            isa.cpu_level()):
        pytest.skip(f"the {level} level is not compiled or does not run on this CPU")
    return importlib.import_module(f"fastnn._core._{level}._conv")


def _same_bits_at_both_levels(run, seed, cases):
    """run(module, x, w, b, out, p, code) on the AVX2 and the AVX-512 level's module: equal bits"""
    mods = [_level_module(level) for level in ("avx2", "avx512")]
    rng = np.random.default_rng(seed)
    for n, c, o, h, w, p, code in cases:
        x, wt, b = rand(rng, (n, c, h, w)), rand(rng, (o, c, 3, 3)), rand(rng, (o,))
        outs = []
        for mod in mods:
            out = np.full((n, o, h + 2 * p - 2, w + 2 * p - 2), np.nan, np.float32)
            outs.append(run(mod, x, wt, b, out, p, code))
        np.testing.assert_array_equal(outs[0], outs[1], err_msg=f"{(n, c, o, h, w, p, code)}")


@pytest.mark.parametrize("tile", TILES)
def test_the_avx2_and_avx512_levels_give_the_same_bits(tile):
    """The same float32 operations per output at both levels (8 or 16 tiles a vector), the
    kernel transforms by explicit fma in double (no contraction left to the compiler)."""
    _same_bits_at_both_levels(
        lambda mod, x, wt, b, out, p, code: mod._winograd_forward(x, wt, b, out, p, p, code, 0.1,
                                                                  0, tile),
        9, ((2, 19, 23, 13, 11, 1, 1), (1, 5, 3, 6, 17, 0, 2), (3, 33, 9, 9, 7, 2, 0)))


def test_small4_gives_the_same_bits_at_the_avx2_and_avx512_levels():
    """winograd/small4's groups (24 tiles of 8 lanes at AVX2, 32 of 16 at AVX-512) and blocks
    of output channels (4, 8) change nothing per output: runs of tiles, ragged edges, partial
    blocks."""
    _same_bits_at_both_levels(
        lambda mod, x, wt, b, out, p, code: mod._winograd_small_forward(x, wt, b, out, p, p,
                                                                        code, 0.1, 4),
        19, ((2, 16, 18, 32, 32, 1, 1), (1, 19, 5, 13, 17, 0, 2), (3, 17, 9, 12, 16, 1, 0)))


@needs_winograd
@pytest.mark.parametrize("tile", TILES)
def test_stale_scratch_past_the_last_tile_is_not_a_non_finite_output(tile):
    """The GEMMs write only the block's tiles: the lanes past them hold whatever the scratch
    held (here NaN), which neither the outputs nor the non-finite check may see."""
    rng = np.random.default_rng(10)
    x, wt, b = rand(rng, (3, 16, 1, 4)), rand(rng, (9, 16, 3, 3)), rand(rng, (9,))
    winograd(x, wt, b, 1, tile=tile)  # the cached scratch exists: fill it with NaN
    for arr in _conv._workspace_cache.arrays.values():
        if arr.dtype.kind == "f":  # (integer scratch of other routes stays)
            arr.fill(np.nan)
    got = winograd(x, wt, b, 1, tile=tile)
    assert got is not None
    assert relative_error(got, reference_forward(x, wt, b, 1)) <= TOL


@needs_small4
def test_small4_stale_scratch_past_the_last_tile_is_not_a_non_finite_output():
    rng = np.random.default_rng(18)
    x, wt, b = rand(rng, (3, 16, 1, 4)), rand(rng, (9, 16, 3, 3)), rand(rng, (9,))
    small4(x, wt, b, 1)  # the cached scratch exists: fill it with NaN
    for arr in _conv._workspace_cache.arrays.values():
        if arr.dtype.kind == "f":
            arr.fill(np.nan)
    got = small4(x, wt, b, 1)
    assert got is not None
    np.testing.assert_array_equal(got, winograd(x, wt, b, 1, tile=4))
