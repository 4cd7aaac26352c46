"""The Winograd weight gradient (winograd_dw: _conv._winograd_dw, F(2x2,3x3) with the roles
swapped): 3x3 stride-1 float32 weight and bias gradients against the float64 NumPy reference
within the documented float32 tolerance (docs/winograd.md: 1e-5 of the gradient's scale) over
drawn shapes (channels off multiples of 16, odd images, batch 1, paddings 0..2, images whose
rows of tiles take the contiguous-run loads), accumulation into dW and db, the same bits on 1
and 2 threads, the AVX2 level's bits against the AVX-512 level's, the planner's rule and the
NaN/inf fallback to the exact route."""
import functools
import importlib

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conv_route_helpers import (dw_case, num_threads, rand, reference_dw, relative_error,
                                route_dw)
from fastnn import _core
from fastnn._core import _conv, conv_plan, isa, routes
from fastnn._core.tuning import tuning

pytestmark = pytest.mark.skipif(not _conv._winograd_available(),
                                reason="the Winograd kernels need the AVX2 or AVX-512 level")
TOL = 1e-5  # of max(1, max |reference|): the float32 tolerance docs/winograd.md states

case = functools.partial(dw_case, k=3, stride=1)
winograd_dw = functools.partial(route_dw, _conv._winograd_dw, 3)
reference_grads = functools.partial(reference_dw, k=3, stride=1)


@pytest.fixture
def one_thread():
    """Small problems have one chunk of tiles: the planner takes winograd_dw for them on one
    thread only (on two, dwt_s1 splits them)."""
    with num_threads(1):
        yield


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 37), o=st.integers(1, 37), h=st.integers(1, 12),
       w=st.sampled_from([1, 2, 3, 5, 8, 11, 14, 16, 17, 30, 32]), padding=st.integers(0, 2),
       seed=st.integers(0, 2 ** 16))
def test_weight_and_bias_gradients_match_the_reference(n, c, o, h, w, padding, seed):
    # widths 14 (+ padding 1) and 30, 32: rows of 8 or 16 tiles, the contiguous-run loads
    assume(h + 2 * padding >= 3 and w + 2 * padding >= 3)
    rng = np.random.default_rng(seed)
    x, dy = case(rng, n, c, o, h, w, padding)
    dw0, db0 = rand(rng, (o, c, 3, 3)), rand(rng, (o,))
    want_dw, want_db = reference_grads(x, dy, padding, dw0, db0)
    dw, db = dw0.copy(), db0.copy()
    assert winograd_dw(x, dy, padding, dw, db) is dw  # accumulated into dw and db
    assert relative_error(dw, want_dw) <= TOL
    assert relative_error(db, want_db) <= TOL


def test_error_on_resnet_and_vgg_layers_is_as_documented():
    """resnet's 16->16 32x32 and vgg-bn's 64->64 14x14 (8 samples): about 3e-7..6e-7 of the
    largest tap, as the exact routes (docs/winograd.md lists the measured values)."""
    rng = np.random.default_rng(2)
    for n, c, o, h in ((8, 16, 16, 32), (8, 64, 64, 14)):
        x, dy = case(rng, n, c, o, h, h, 1)
        want, _ = reference_grads(x, dy, 1)
        err = float(np.abs(winograd_dw(x, dy, 1) - want).max() / np.abs(want).max())
        assert err < 2e-6, (n, c, o, h, err)


def test_same_bits_on_one_and_two_threads():
    # chunks of tiles fixed by the geometry, summed in chunk order: no thread count in the sums
    rng = np.random.default_rng(4)
    for n, c, o, h, w in ((6, 19, 35, 13, 10), (16, 16, 16, 16, 16), (9, 24, 40, 8, 8)):
        x, dy = case(rng, n, c, o, h, w, 1)
        one, two = winograd_dw(x, dy, 1, threads=1), winograd_dw(x, dy, 1, threads=2)
        assert conv_plan.winograd_dw_blocks(n, c, o, h, w)[3] > 1
        np.testing.assert_array_equal(one, two, err_msg=f"{(n, c, o, h, w)}")


@pytest.mark.skipif(not {"avx2", "avx512"} <= set(isa.compiled_levels())
                    or isa.cpu_level() != "avx512",
                    reason="needs both levels' kernels and a CPU with AVX-512")
@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 20), o=st.integers(1, 40), h=st.integers(1, 12),
       w=st.sampled_from([1, 3, 5, 8, 9, 14, 16, 17, 18]), padding=st.integers(0, 2),
       seed=st.integers(0, 2 ** 16))
def test_avx2_gives_the_avx512_bits(n, c, o, h, w, padding, seed):
    """Both levels side by side (dW and db): dy's transform takes pieces of 8 tiles (AVX-512;
    images 8 wide or less one load for both rows) or 4 (AVX2) of a row of tiles, every entry
    the same float32 sum (kernels/winograd.h)."""
    assume(h + 2 * padding >= 3 and w + 2 * padding >= 3)
    rng = np.random.default_rng(seed)
    x, dy = case(rng, n, c, o, h, w, padding)
    got = []
    for level in ("avx2", "avx512"):
        conv = importlib.import_module(f"fastnn._core._{level}._conv")
        dw, db = np.zeros((o, c, 3, 3), np.float32), np.zeros(o, np.float32)
        assert conv._winograd_dw(x, dy, dw, db, padding, padding) is dw
        got.append((dw, db))
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_array_equal(got[0][1], got[1][1])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_tap_falls_back_to_the_exact_route(bad, one_thread):
    """A NaN or inf in x reaches all 9 taps of its channel here (every transformed element of
    its patches): the route returns None and leaves dw and db alone, and conv2d_backward then
    runs the exact route, where it reaches only the taps whose windows hold it."""
    rng = np.random.default_rng(5)
    x, dy = case(rng, 2, 16, 16, 9, 9, 1)
    x[1, 3, 0, 0] = bad  # a corner: 4 of the 9 taps see it on the exact routes
    dw, db = np.ones((16, 16, 3, 3), np.float32), np.ones(16, np.float32)
    assert winograd_dw(x, dy, 1, dw, db) is None
    assert (dw == 1).all() and (db == 1).all()
    w = np.zeros((16, 16, 3, 3), np.float32)
    got, want = np.zeros_like(w), np.zeros_like(w)
    with routes.traced() as taken:
        _core.conv2d_backward(x, w, dy, None, got, None, 1, 1)
    assert taken["winograd_dw"] == 1 and len(taken) == 2
    with tuning(conv_winograd_dw=False):
        _core.conv2d_backward(x, w, dy, None, want, None, 1, 1)
    np.testing.assert_array_equal(got, want)
    assert (~np.isfinite(got[:, 3])).sum() == 16 * 4 and np.isfinite(got[:, :3]).all()


def test_the_planner_takes_it_for_three_by_three_stride_one_float32(one_thread):
    def dw(x_shape, w_shape, padding=1, dtype="float32", level="avx512"):
        return conv_plan.plan_conv2d(x_shape, w_shape, 1, padding, dtype, level=level,
                                     threads=2).dw

    assert dw((64, 16, 32, 32), (16, 16, 3, 3)) == "winograd_dw"  # resnet's
    assert dw((64, 64, 8, 8), (64, 64, 3, 3), level="avx2") == "winograd_dw"
    assert dw((64, 3, 32, 32), (16, 3, 3, 3)) != "winograd_dw"  # 3 input channels
    assert dw((64, 32, 28, 28), (32, 32, 3, 3), dtype="float64") == "im2col_dw/blas"
    assert dw((64, 32, 28, 28), (32, 32, 3, 3), level="baseline") == "im2col_dw/blas"
    assert "winograd_dw" in conv_plan.eligible("conv2d", "dw", (2, 3, 9, 9), (5, 3, 3, 3), 1, 0)
    assert "winograd_dw" not in conv_plan.eligible("conv2d", "dw", (2, 16, 9, 9),
                                                   (16, 16, 3, 3), 2, 1)
    assert "winograd_dw" not in conv_plan.eligible("conv_transpose2d", "dw", (2, 16, 9, 9),
                                                   (16, 16, 3, 3), 1, 1)
    with tuning(conv_winograd_dw=False):
        assert dw((64, 16, 32, 32), (16, 16, 3, 3)).startswith("dwt_s1/")
    # one chunk of tiles for 256x256 channels (their sums are 4 MB): dwt_s1 splits it
    assert dw((64, 256, 8, 8), (256, 256, 3, 3)).startswith("dwt_s1/")
    assert conv_plan.plan_conv2d((64, 256, 8, 8), (256, 256, 3, 3), 1, 1, level="avx512",
                                 threads=1).dw == "winograd_dw"
    rng = np.random.default_rng(6)
    x, dy = case(rng, 3, 16, 20, 10, 10, 1)
    got = np.zeros((20, 16, 3, 3), np.float32)
    with routes.traced() as taken:
        _core.conv2d_backward(x, np.zeros_like(got), dy, None, got, None, 1, 1)
    assert set(taken) == {"winograd_dw"}
    np.testing.assert_array_equal(got, winograd_dw(x, dy, 1))
