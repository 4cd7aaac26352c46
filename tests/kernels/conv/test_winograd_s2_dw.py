"""The stride-2 Winograd weight gradient (winograd_s2_dw: _conv._winograd_s2_dw, F(2x2,4x4) with
the roles swapped over the four stride phases of a 4x4 stride-2 convolution; also
conv_transpose2d's dW, with x and dy exchanged): float32 weight and bias gradients against the
float64 NumPy reference within the documented tolerance (docs/winograd.md) over drawn shapes
(channels off multiples of 16, odd images and outputs off multiples of 4, batch 1, paddings
0..3), accumulation into dW and db, the same bits on 1 and 2 threads, the NaN/inf fallback to
the exact route, the planner's rule, the AVX2 and AVX-512 kernels' bits side by side and the
levels without the kernels."""
import functools
import importlib

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conv_route_helpers import dw_case, rand, reference_dw, relative_error, route_dw
from fastnn import _core
from fastnn._core import _conv, conv_plan, isa, routes
from fastnn._core.tuning import tuning

needs_kernels = pytest.mark.skipif(not _conv._winograd_s2_dw_available(),
                                   reason="the stride-2 Winograd dW kernels need AVX2 or AVX-512")
TOL = 1e-5  # of max(1, max |reference|): the float32 tolerance docs/winograd.md states

case = functools.partial(dw_case, k=4, stride=2)
winograd_s2_dw = functools.partial(route_dw, _conv._winograd_s2_dw, 4)
reference_grads = functools.partial(reference_dw, k=4, stride=2)


@needs_kernels
@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 37), o=st.integers(1, 40), h=st.integers(2, 21),
       w=st.integers(2, 21), padding=st.integers(0, 3), seed=st.integers(0, 2 ** 16))
def test_weight_and_bias_gradients_match_the_reference(n, c, o, h, w, padding, seed):
    assume(h + 2 * padding >= 4 and w + 2 * padding >= 4)  # an output at all
    rng = np.random.default_rng(seed)
    x, dy = case(rng, n, c, o, h, w, padding)
    dw0, db0 = rand(rng, (o, c, 4, 4)), rand(rng, (o,))
    want_dw, want_db = reference_grads(x, dy, padding, dw0, db0)
    dw, db = dw0.copy(), db0.copy()
    assert winograd_s2_dw(x, dy, padding, dw, db) is dw  # accumulated into dw and db
    assert relative_error(dw, want_dw) <= TOL
    assert relative_error(db, want_db) <= TOL


@needs_kernels
def test_error_on_the_dcgan_layer_is_as_documented():
    """dcgan-d's 64->128 14x14 layer (8 samples): about 1e-6 of the largest tap, 3-4x the exact
    route's (docs/winograd.md lists the measured values at batch 64)."""
    rng = np.random.default_rng(2)
    x, dy = case(rng, 8, 64, 128, 14, 14, 1)
    want, _ = reference_grads(x, dy, 1)
    err = float(np.abs(winograd_s2_dw(x, dy, 1) - want).max() / np.abs(want).max())
    assert err < 4e-6


@needs_kernels
def test_same_bits_on_one_and_two_threads():
    # chunks of tiles fixed by the geometry, summed in order; on two threads a chunk's two row
    # parities are separate tasks with the same sums
    rng = np.random.default_rng(4)
    for n, c, o, h, w, p in ((6, 19, 35, 13, 10, 1), (9, 16, 32, 14, 14, 1),
                             (64, 16, 32, 32, 32, 1), (3, 24, 40, 9, 17, 2)):
        x, dy = case(rng, n, c, o, h, w, p)
        db1, db2 = np.zeros(o, np.float32), np.zeros(o, np.float32)
        one = winograd_s2_dw(x, dy, p, db=db1, threads=1)
        two = winograd_s2_dw(x, dy, p, db=db2, threads=2)
        np.testing.assert_array_equal(one, two, err_msg=f"{(n, c, o, h, w, p)}")
        np.testing.assert_array_equal(db1, db2)
    assert conv_plan.winograd_s2_dw_blocks(64, 16, 32, 16, 16)[3] > 1  # the third: 2 chunks


@needs_kernels
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_tap_falls_back_to_the_exact_route(bad):
    """A NaN or inf in x reaches every tap of its channel's phase here (every transformed
    element of its patches): the route returns None and leaves dw and db alone, and
    conv2d_backward then runs the exact route, where it reaches only the taps whose windows
    hold it."""
    rng = np.random.default_rng(5)
    x, dy = case(rng, 2, 16, 32, 10, 10, 1)
    x[1, 3, 0, 0] = bad  # padded (1, 1): phase (1, 1), reached by tap (1, 1) only
    dw, db = np.ones((32, 16, 4, 4), np.float32), np.ones(32, np.float32)
    assert winograd_s2_dw(x, dy, 1, dw, db) is None
    assert (dw == 1).all() and (db == 1).all()
    w = np.zeros((32, 16, 4, 4), np.float32)
    got, want = np.zeros_like(w), np.zeros_like(w)
    with routes.traced() as taken:
        _core.conv2d_backward(x, w, dy, None, got, None, 2, 1)
    assert taken["winograd_s2_dw"] == 1 and len(taken) == 2
    with tuning(conv_winograd_s2_dw=False):
        _core.conv2d_backward(x, w, dy, None, want, None, 2, 1)
    np.testing.assert_array_equal(got, want)
    assert (~np.isfinite(got[:, 3])).sum() == 32 and np.isfinite(got[:, :3]).all()


@needs_kernels
def test_conv_transpose_dw_is_the_conv_dw_with_x_and_dy_exchanged():
    """dcgan-g's 128->64 transposed conv: its dW on winograd_s2_dw (the conv2d dW of dy -> x),
    the same bits as the route called with the roles exchanged; a non-finite dy falls back to
    the exact route."""
    rng = np.random.default_rng(6)
    x, dy = rand(rng, (3, 40, 5, 6)), rand(rng, (3, 16, 10, 12))  # x (N, Cin, H, W)
    w = np.zeros((40, 16, 4, 4), np.float32)
    got, db = np.zeros_like(w), np.zeros(16, np.float32)
    with routes.traced() as taken:
        _core.conv_transpose2d_backward(x, w, dy, None, got, db, 2, 1)
    assert taken["winograd_s2_dw"] == 1
    np.testing.assert_array_equal(got, winograd_s2_dw(dy, x, 1))
    want, want_db = reference_grads(dy, x, 1)
    assert relative_error(got, want) <= TOL
    np.testing.assert_allclose(db, dy.astype(np.float64).sum((0, 2, 3)), rtol=1e-5, atol=1e-5)
    dy[0, 2, 3, 3] = np.nan
    got, want = np.zeros_like(w), np.zeros_like(w)
    with routes.traced() as taken:
        _core.conv_transpose2d_backward(x, w, dy, None, got, None, 2, 1)
    assert taken["winograd_s2_dw"] == 1 and len(taken) == 2
    with tuning(conv_winograd_s2_dw=False):
        _core.conv_transpose2d_backward(x, w, dy, None, want, None, 2, 1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not {"avx2", "avx512"} <= set(isa.compiled_levels())
                    or isa.cpu_level() != "avx512",
                    reason="needs both levels' kernels and a CPU with AVX-512")
@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 37), o=st.integers(1, 40), h=st.integers(2, 21),
       w=st.integers(2, 21), padding=st.integers(0, 3), seed=st.integers(0, 2 ** 16))
def test_avx2_gives_the_avx512_bits(n, c, o, h, w, padding, seed):
    """Both levels side by side (dW and db): 8 tiles a vector (AVX2) or 16 (AVX-512), the same
    float32 operations per sum (kernels/winograd_s2_dw.h)."""
    assume(h + 2 * padding >= 4 and w + 2 * padding >= 4)
    rng = np.random.default_rng(seed)
    x, dy = case(rng, n, c, o, h, w, padding)
    got = []
    for level in ("avx2", "avx512"):
        conv = importlib.import_module(f"fastnn._core._{level}._conv")
        dw, db = np.zeros((o, c, 4, 4), np.float32), np.zeros(o, np.float32)
        assert conv._winograd_s2_dw(x, dy, dw, db, padding, padding) is dw
        got.append((dw, db))
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_array_equal(got[0][1], got[1][1])


def test_the_route_is_at_the_avx2_and_avx512_levels():
    assert routes.available("winograd_s2_dw") == (isa.LEVEL in ("avx2", "avx512"))
    assert _conv._winograd_s2_dw_available() == (isa.LEVEL in ("avx2", "avx512"))
    if not _conv._winograd_s2_dw_available():
        x, dy = np.zeros((1, 2, 6, 6), np.float32), np.zeros((1, 3, 3, 3), np.float32)
        with pytest.raises(RuntimeError, match="ISA level"):
            _conv._winograd_s2_dw(x, dy, np.zeros((3, 2, 4, 4), np.float32), None, 1, 1)


def test_the_planner_takes_it_for_the_dcgan_layers_at_avx512_and_avx2():
    d = ((64, 64, 14, 14), (128, 64, 4, 4), 2, 1)
    for level in ("avx512", "avx2"):
        for threads in (1, 2):
            assert conv_plan.plan_conv2d(*d, level=level, threads=threads).dw == "winograd_s2_dw"
            g = conv_plan.plan_conv_transpose2d((64, 128, 7, 7), (128, 64, 4, 4), 2, 1,
                                                level=level, threads=threads)
            assert g.dw == "winograd_s2_dw"
    assert conv_plan.plan_conv2d(*d, level="baseline", threads=2).dw == "im2col_dw/blas"
    assert conv_plan.plan_conv2d(*d, dtype="float64", level="avx512").dw == "im2col_dw/blas"
    # few channels, other kernels and strides keep their routes
    assert conv_plan.plan_conv2d((64, 1, 28, 28), (64, 1, 4, 4), 2, 1,
                                 level="avx512").dw != "winograd_s2_dw"
    assert conv_plan.plan_conv2d((64, 64, 14, 14), (16, 64, 4, 4), 2, 1,
                                 level="avx512").dw != "winograd_s2_dw"
    assert conv_plan.plan_conv2d((64, 64, 14, 14), (128, 64, 3, 3), 2, 1,
                                 level="avx512").dw == "direct_s2_dw"
    assert "winograd_s2_dw" in conv_plan.eligible("conv2d", "dw", (2, 3, 9, 9), (5, 3, 4, 4), 2,
                                                  0, level="avx512")
    assert "winograd_s2_dw" in conv_plan.eligible("conv_transpose2d", "dw", (2, 5, 4, 4),
                                                  (5, 3, 4, 4), 2, 1, level="avx512")
    assert "winograd_s2_dw" not in conv_plan.eligible("conv2d", "dw", (2, 16, 9, 9),
                                                      (32, 16, 4, 4), 1, 1, level="avx512")
    with tuning(conv_winograd_s2_dw=False):
        assert conv_plan.plan_conv2d(*d, level="avx512", threads=2).dw == "direct_s2_dw"
        assert conv_plan.plan_conv2d(*d, level="avx2", threads=2).dw == "direct_s2_dw"
    with tuning(conv_dw="winograd_s2_dw"):
        with pytest.raises(ValueError, match="not eligible"):
            conv_plan.plan_conv2d(*d, level="baseline", threads=2)
    # more threads than tasks (two per chunk of tiles): the direct route splits it
    assert conv_plan.plan_conv2d(*d, level="avx512", threads=4).dw == "direct_s2_dw"
    # wide layers (their 25*4C*O partial sums over 8 MB): not measured, the direct route
    assert conv_plan.plan_conv2d((64, 256, 14, 14), (256, 256, 4, 4), 2, 1, level="avx512",
                                 threads=1).dw == "direct_s2_dw"
