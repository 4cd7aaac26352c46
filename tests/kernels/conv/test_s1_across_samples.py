"""The stride-1 implicit forward with panels that run on across samples (tuning conv_s1_across_samples):
against the NumPy reference and the per-sample panels, for images of every size against the 32
columns of a panel (one panel spanning up to four samples), with bias, fused activations, the
stride-1 dx that runs as such a forward, and 1 vs 2 threads bitwise."""
import numpy as np
import pytest

import fastnn
from fastnn import _core
from fastnn._core import conv_plan, reference
from fastnn._core.tuning import tuning

from conv_route_helpers import assert_close, needs_microkernel, rand

pytestmark = needs_microkernel


def forward(x, w, b, padding, mode, threads, **act):
    prev = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(threads)
        out = np.full((x.shape[0], w.shape[0], x.shape[2], x.shape[3]), np.nan, np.float32)
        with tuning(conv_s1_across_samples=mode, conv_winograd=False):
            return _core.conv2d_forward(x, w, b, out, 1, padding, **act)
    finally:
        fastnn.set_num_threads(prev)


@pytest.mark.parametrize("n, c, o, h, w, k", [
    (64, 64, 64, 14, 14, 3),  # vgg-bn's 14x14 block: 196 columns a sample
    (7, 5, 13, 3, 3, 3),      # 9 columns: a panel covers parts of four samples
    (3, 30, 70, 5, 7, 5),     # k = 750: three k steps; O = 70: a 6-row tile tail
    (2, 3, 9, 1, 40, 1),      # one-row images, 1x1 kernel
    (5, 8, 16, 6, 6, 3),      # 36 columns: every panel but the first crosses a sample
])
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_matches_reference_and_per_sample_panels(n, c, o, h, w, k, with_bias):
    rng = np.random.default_rng(n + c + o + h + w + k)
    x, wt = rand(rng, (n, c, h, w)), rand(rng, (o, c, k, k))
    b = rand(rng, (o,)) if with_bias else None
    p = (k - 1) // 2
    want = reference.conv2d_forward(x.astype(np.float64), wt.astype(np.float64),
                                    None if b is None else b.astype(np.float64),
                                    np.empty((n, o, h, w)), 1, p)
    across = [forward(x, wt, b, p, 2, threads) for threads in (1, 2)]
    assert_close(across[0], want, 1e-5)
    np.testing.assert_array_equal(across[0], across[1])
    assert_close(forward(x, wt, b, p, 0, 1), across[0], 1e-5)


@pytest.mark.parametrize("act", [{"relu": True}, {"relu": True, "negative_slope": 0.2}])
def test_fused_activation_is_the_activation_of_the_output(act):
    rng = np.random.default_rng(3)
    x, wt, b = rand(rng, (6, 16, 7, 7)), rand(rng, (24, 16, 3, 3)), rand(rng, (24,))
    plain = forward(x, wt, b, 1, 2, 2)
    fused = forward(x, wt, b, 1, 2, 2, **act)
    slope = act.get("negative_slope")
    want = np.empty_like(plain)
    if slope is None:
        _core.relu_forward(plain, want)
    else:
        _core.leaky_relu_forward(plain, slope, want)
    np.testing.assert_array_equal(fused, want)


def test_stride_one_dx_runs_across_samples_too():
    rng = np.random.default_rng(4)
    x, wt = rand(rng, (9, 12, 14, 14)), rand(rng, (20, 12, 3, 3))
    dy = rand(rng, (9, 20, 14, 14))
    want = np.zeros(x.shape)
    reference.conv2d_backward(x.astype(np.float64), wt.astype(np.float64), dy.astype(np.float64),
                              want, None, None, 1, 1)
    with tuning(conv_s1_across_samples=2):
        got = np.full_like(x, np.nan)
        _core.conv2d_backward(x, wt, dy, got, None, None, 1, 1)
    assert_close(got, want, 1e-5)


def test_default_rule_takes_images_with_a_ragged_last_panel():
    # 14x14: 28 of a sample's 224 computed columns idle, 7x7: 15 of 64; 28x28: 16 of 800 (2%)
    def across(p):
        return conv_plan.s1_layout(p) == "s1_across_samples"

    assert [across(p) for p in (196, 49, 100, 784, 256, 900)] == [
        True, True, True, False, False, False]
    for mode, want in ((0, False), (2, True)):
        with tuning(conv_s1_across_samples=mode):
            assert across(196) is want and across(256) is want


def tuned(knob, value, fn, *args):
    with tuning(**{knob: value}):
        return fn(*args)


@pytest.mark.parametrize("n, c, o, h, w, kernel, padding", [
    (64, 16, 6, 10, 10, (5, 5), (4, 4)),  # LeNet's second conv's dx: 10x10 -> 14x14
    (3, 5, 9, 4, 7, (3, 3), (2, 2)),
    (2, 7, 4, 6, 5, (3, 2), (1, 3)),      # wider only: padding 3 >= KW - 1 = 1
])
@pytest.mark.parametrize("threads", [1, 2])
def test_wider_output_runs_on_a_widened_copy(n, c, o, h, w, kernel, padding, threads):
    rng = np.random.default_rng(n + c + o + h + w)
    x, wt, b = rand(rng, (n, c, h, w)), rand(rng, (o, c) + kernel), rand(rng, (o,))
    oh, ow = h + 2 * padding[0] - kernel[0] + 1, w + 2 * padding[1] - kernel[1] + 1
    assert ow > w
    want = reference.conv2d_forward(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64),
                                    np.empty((n, o, oh, ow)), 1, padding)
    prev = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(threads)
        got = [tuned("conv_s1_widen", on, _core.conv2d_forward, x, wt, b,
                      np.full((n, o, oh, ow), np.nan, np.float32), 1, padding) for on in (True, False)]
    finally:
        fastnn.set_num_threads(prev)
    assert_close(got[0], want, 1e-5)
    assert_close(got[1], got[0], 1e-5)


@pytest.mark.parametrize("o", [1, 3, 6, 8, 9])
def test_few_rows_multiply_straight_from_the_loads(o):
    # up to 8 output channels the cross-sample panels skip packing (conv_panel_direct): the same
    # bits as the packed panels, for the stride-1 forward and the sub-pixel one (conv-transpose)
    rng = np.random.default_rng(o)
    x, wt, b = rand(rng, (5, 12, 7, 7)), rand(rng, (o, 12, 3, 3)), rand(rng, (o,))
    xt, wtt = rand(rng, (4, 10, 6, 6)), rand(rng, (10, o, 4, 4))
    runs = []
    for on in (True, False):
        fwd = tuned("conv_panel_direct", on, forward, x, wt, b, 1, 2, 2)
        convt = np.full((4, o, 12, 12), np.nan, np.float32)
        tuned("conv_panel_direct", on, _core.conv_transpose2d_forward, xt, wtt, b, convt, 2, 1)
        runs.append((fwd, convt))
    for a, b_ in zip(*runs):
        np.testing.assert_array_equal(a, b_)
    want = reference.conv_transpose2d_forward(xt.astype(np.float64), wtt.astype(np.float64),
                                              b.astype(np.float64), np.empty((4, o, 12, 12)), 2, 1)
    assert_close(runs[0][1], want, 1e-5)
