"""Max pooling: the 2x2 stride-2 kernel (kernels/pool.h for float32, vectorised per ISA level:
CI runs this file at every level) against the general window loop and the reference."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastnn import _core as K
from fastnn._core import pool
from fastnn._core import reference as R

from thread_counts import forced

dtypes = st.sampled_from((np.float32, np.float64))
paths = st.sampled_from(["serial", "parallel"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", ["serial", "parallel"])
def test_maxpool_ties_padding_and_argmax_by_hand(path, dtype):
    x = np.array([[[[1, 3, 3, 0],
                    [3, 2, 0, 3],
                    [5, 5, 1, 1],
                    [5, 5, 1, 1]]]], dtype)
    out = np.empty((1, 1, 2, 2), dtype)
    argmax = np.empty((1, 1, 2, 2), np.int64)
    with forced(path):
        K.maxpool2d_forward(x, 2, 2, 0, out, argmax)
        np.testing.assert_array_equal(out[0, 0], [[3, 3], [5, 1]])
        np.testing.assert_array_equal(argmax[0, 0], [[1, 2], [8, 10]])  # first maximum, row-major
        dx = np.empty_like(x)
        K.maxpool2d_backward(np.ones((1, 1, 2, 2), dtype), argmax, dx)
        assert dx.sum() == 4 and dx[0, 0, 0, 1] == dx[0, 0, 2, 0] == 1
        # padding is -inf: an all-negative corner window picks the real element
        neg = -np.ones((1, 1, 3, 3), dtype)
        out3 = np.empty((1, 1, 2, 2), dtype)
        arg3 = np.empty((1, 1, 2, 2), np.int64)
        K.maxpool2d_forward(neg, 3, 2, 1, out3, arg3)
        np.testing.assert_array_equal(out3[0, 0], -1)
        np.testing.assert_array_equal(arg3[0, 0], [[0, 1], [3, 4]])


@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(2, 9), w=st.integers(2, 41),
       dtype=dtypes, path=paths, seed=st.integers(0, 2**16), nans=st.booleans())
def test_maxpool_2x2_fast_path_matches_general_kernel(n, c, h, w, dtype, path, seed, nans):
    """The 2x2/stride-2 kernel (float32: kernels/pool.h's vector rows, 16 or 8 outputs a step
    and a masked or scalar tail) picks the same values and argmax (ties, NaN) as the general
    window loop and the reference."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 2, (n, c, h, w)).astype(dtype)  # many ties
    if nans:
        x[rng.random(x.shape) < 0.2] = np.nan
    oshape = (n, c, h // 2, w // 2)
    out, arg = np.empty(oshape, dtype), np.empty(oshape, np.int64)
    with forced(path):
        K.maxpool2d_forward(x, 2, 2, 0, out, arg)
    general, general_arg = np.empty(oshape, dtype), np.empty(oshape, np.int64)
    pool._maxpool2d_forward_serial(x.reshape(n * c, h, w), 2, 2, 2, 2, 0, 0,
                                   general.reshape(n * c, h // 2, w // 2),
                                   general_arg.reshape(n * c, h // 2, w // 2))
    np.testing.assert_array_equal(out, general)
    np.testing.assert_array_equal(arg, general_arg)
    if not nans:
        ref_out = np.empty(oshape, dtype)
        ref_arg = np.empty(oshape, np.int64)
        R.maxpool2d_forward(x, 2, 2, 0, ref_out, ref_arg)
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(arg, ref_arg)


@pytest.mark.parametrize("ow", [5, 8, 14, 16, 23, 32])
def test_maxpool_2x2_float32_nan_in_every_lane_and_inf(ow):
    """float32, across a full vector and its tail: a NaN at each window position of each lane
    propagates (value and index, as the general loop picks them); +inf wins over -inf."""
    x = np.zeros((1, 5, 2, 2 * ow), np.float32)
    for p in range(4):  # plane p: a NaN at window position p of every output
        x[0, p, p // 2, p % 2::2] = np.nan
    x[0, 4] = -np.inf
    x[0, 4, 1, 1::2] = np.inf
    out = np.empty((1, 5, 1, ow), np.float32)
    arg = np.empty(out.shape, np.int64)
    K.maxpool2d_forward(x, 2, 2, 0, out, arg)
    general, general_arg = np.empty_like(out), np.empty_like(arg)
    pool._maxpool2d_forward_serial(x[0], 2, 2, 2, 2, 0, 0, general[0], general_arg[0])
    np.testing.assert_array_equal(out, general)
    np.testing.assert_array_equal(arg, general_arg)
    assert np.isnan(out[0, :4]).all()
    for p in range(4):
        np.testing.assert_array_equal(arg[0, p, 0], (p // 2) * 2 * ow + 2 * np.arange(ow) + p % 2)
    assert np.all(out[0, 4] == np.inf)
    np.testing.assert_array_equal(arg[0, 4, 0], 2 * ow + 2 * np.arange(ow) + 1)
