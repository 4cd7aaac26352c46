"""The general convolution kernels (dilation, groups, asymmetric padding; fastnn._core.conv_general)
against their NumPy reference, on both routes (depthwise, im2col), their parallel and serial
variants, float32 and float64; their validation; and the Conv2D layer's choice between them and
the dense kernels of _conv.pyx."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastnn import _core as K
from fastnn import layers as L
from fastnn._core import reference as R

from thread_counts import forced


def tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-11)


@st.composite
def geometries(draw, depthwise=None):
    """(x shape, weight shape, stride, padding (top, bottom, left, right), dilation, groups):
    a valid grouped, dilated, strided, asymmetrically padded convolution."""
    groups = draw(st.integers(1, 4))
    if depthwise is None:
        depthwise = draw(st.booleans())
    cg = 1 if depthwise else draw(st.integers(1, 3))
    og = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    h = draw(st.integers(max(1, eh - pads[0] - pads[1]), eh + 6))
    w = draw(st.integers(max(1, ew - pads[2] - pads[3]), ew + 6))
    n = draw(st.integers(1, 3))
    return (n, groups * cg, h, w), (groups * og, cg, kh, kw), (sh, sw), pads, (dh, dw), groups


def out_shape(x_shape, w_shape, stride, pads, dilation):
    n, _, h, w = x_shape
    o, _, kh, kw = w_shape
    oh = (h + pads[0] + pads[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + pads[2] + pads[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return (n, o, oh, ow)


def run_both(geometry, dtype, route, seed, bias=True):
    """(ours, reference) for out, dx, dweight, dbias of one forward and backward."""
    x_shape, w_shape, stride, pads, dilation, groups = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    y_shape = out_shape(x_shape, w_shape, stride, pads, dilation)
    dy = rng.standard_normal(y_shape).astype(dtype)
    results = []
    for impl in (K, R):
        out = np.full(y_shape, np.nan, dtype)
        impl.conv2d_general_forward(x, weight, b, out, stride, pads, dilation, groups, route=route)
        dx = np.full(x_shape, np.nan, dtype)
        dweight = np.full(w_shape, 0.5, dtype)   # accumulates
        dbias = np.full(w_shape[0], 0.25, dtype) if bias else None
        impl.conv2d_general_backward(x, weight, dy, dx, dweight, dbias, stride, pads, dilation,
                                     groups, route=route)
        results.append((out, dx, dweight, dbias))
    return results


@given(geometry=geometries(), dtype=st.sampled_from([np.float32, np.float64]),
       path=st.sampled_from(["serial", "parallel"]), seed=st.integers(0, 2**16), bias=st.booleans())
def test_im2col_route_matches_reference(geometry, dtype, path, seed, bias):
    with forced(path):
        ours, ref = run_both(geometry, dtype, "im2col", seed, bias)
    for name, a, e in zip(("out", "dx", "dweight", "dbias"), ours, ref):
        if e is not None:
            np.testing.assert_allclose(a, e, **tol(dtype), err_msg=f"{name} {geometry}")


@given(geometry=geometries(depthwise=True), dtype=st.sampled_from([np.float32, np.float64]),
       path=st.sampled_from(["serial", "parallel"]), seed=st.integers(0, 2**16), bias=st.booleans())
def test_depthwise_route_matches_reference(geometry, dtype, path, seed, bias):
    assert K.conv2d_route(geometry[0][1], geometry[1][0], geometry[5]) == "depthwise"
    with forced(path):
        ours, ref = run_both(geometry, dtype, "depthwise", seed, bias)
    for name, a, e in zip(("out", "dx", "dweight", "dbias"), ours, ref):
        if e is not None:
            np.testing.assert_allclose(a, e, **tol(dtype), err_msg=f"{name} {geometry}")


@pytest.mark.parametrize("route", ["depthwise", "im2col"])
def test_skipped_gradients_leave_the_others_alone(route):
    """dx None computes dW only (and the reverse), with the same values as both together."""
    geometry = ((3, 4, 6, 5), (8, 1, 3, 2), (1, 2), (1, 0, 2, 1), (2, 1), 4)
    (_, dx, dweight, _), _ = run_both(geometry, np.float64, route, 3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(geometry[0])
    weight = rng.standard_normal(geometry[1])
    rng.standard_normal(8)
    dy = rng.standard_normal(out_shape(*geometry[:4], geometry[4]))
    only_w = np.full(geometry[1], 0.5)
    K.conv2d_general_backward(x, weight, dy, None, only_w, None, *geometry[2:], route=route)
    only_x = np.empty(geometry[0])
    K.conv2d_general_backward(x, weight, dy, only_x, None, None, *geometry[2:], route=route)
    np.testing.assert_allclose(only_w, dweight, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(only_x, dx, rtol=1e-12, atol=1e-12)


def test_routes_agree_on_a_depthwise_convolution_with_a_multiplier():
    geometry = ((2, 3, 9, 8), (6, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 3)
    depthwise, _ = run_both(geometry, np.float64, "depthwise", 0)
    im2col, _ = run_both(geometry, np.float64, "im2col", 0)
    for a, b in zip(depthwise, im2col):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_validation_names_the_kernel_and_the_shapes():
    x = np.zeros((2, 6, 5, 5), np.float32)
    out = np.zeros((2, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"conv2d_general_forward: .*6.*4.*groups=4"):
        K.conv2d_general_forward(x, np.zeros((4, 1, 3, 3), np.float32), None, out, 1, 0, 1, 4)
    with pytest.raises(ValueError, match=r"conv2d_general_forward: weight \(4, 2, 3, 3\) needs 4 "
                                         r"input channels"):
        K.conv2d_general_forward(x, np.zeros((4, 2, 3, 3), np.float32), None, out, 1, 0, 1, 2)
    with pytest.raises(ValueError, match=r"conv2d_general_forward: out must have shape "
                                         r"\(2, 4, 1, 1\)"):
        K.conv2d_general_forward(x, np.zeros((4, 3, 3, 3), np.float32), None, out, 1, 0, 2, 2)
    with pytest.raises(ValueError, match=r"smaller than the dilated kernel \(7, 7\)"):
        K.conv2d_general_forward(x, np.zeros((4, 6, 3, 3), np.float32), None, out, 1, 0, 3, 1)
    with pytest.raises(TypeError, match=r"conv2d_general_forward: weight has dtype float64"):
        K.conv2d_general_forward(x, np.zeros((4, 6, 3, 3)), None, out, 1, 1, 1, 1)
    with pytest.raises(ValueError, match=r"the depthwise route needs groups == input channels"):
        K.conv2d_general_forward(x, np.zeros((4, 3, 3, 3), np.float32), None, out, 1, 0, 1, 2,
                                 route="depthwise")
    with pytest.raises(ValueError, match=r"conv2d_general_backward: dy must have shape "
                                         r"\(2, 4, 5, 5\)"):
        K.conv2d_general_backward(x, np.zeros((4, 6, 3, 3), np.float32), out, None, None, None,
                                  1, 1, 1, 1)
    with pytest.raises(ValueError, match=r"conv2d_general_forward: padding must be >= 0"):
        K.conv2d_general_forward(x, np.zeros((4, 6, 3, 3), np.float32), None, out, 1,
                                 (0, -1, 0, 0), 1, 1)


def test_dense_convolution_stays_on_the_tuned_kernels_bitwise():
    """A Conv2D without dilation, groups or asymmetric padding (padding="same" with an odd
    kernel included) gives exactly what _core.conv2d_forward/backward give."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 12, 11)).astype(np.float32)
    for padding, pair in ((1, (1, 1)), ("same", (1, 1)), ("valid", (0, 0)), ((2, 0), (2, 0))):
        conv = L.Conv2D(8, 16, 3, padding=padding)
        y = conv.forward(x)
        expected = np.empty_like(y)
        K.conv2d_forward(x, conv.weight.data, conv.bias.data, expected, (1, 1), pair)
        np.testing.assert_array_equal(y, expected)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = conv.backward(dy)
        edx, edw, edb = np.empty_like(x), np.zeros_like(conv.weight.data), np.zeros(16, np.float32)
        K.conv2d_backward(x, conv.weight.data, dy, edx, edw, edb, (1, 1), pair)
        np.testing.assert_array_equal(dx, edx)
        np.testing.assert_array_equal(conv.weight.grad, edw)
        np.testing.assert_array_equal(conv.bias.grad, edb)


@pytest.mark.parametrize("kwargs, pads", [
    (dict(kernel_size=4, padding="same"), (1, 2, 1, 2)),
    (dict(kernel_size=(2, 3), padding="same", dilation=(3, 2)), (1, 2, 2, 2)),
    (dict(kernel_size=3, padding="same", dilation=2), (2, 2, 2, 2)),
    (dict(kernel_size=3, padding="valid", groups=2), (0, 0, 0, 0)),
])
def test_same_padding_follows_pytorchs_rule(kwargs, pads):
    """Total d*(k - 1), the odd one on the bottom/right; the output has the input's size."""
    conv = L.Conv2D(4, 4, **kwargs)
    assert conv._pads == pads
    x = np.random.default_rng(1).standard_normal((2, 4, 7, 9)).astype(np.float32)
    y = conv.forward(x)
    if kwargs["padding"] == "same":
        assert y.shape == x.shape
    expected = np.empty_like(y)
    R.conv2d_general_forward(x, conv.weight.data, conv.bias.data, expected, conv.stride, pads,
                             conv.dilation, conv.groups)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_layer_arguments_are_checked():
    with pytest.raises(ValueError, match=r"Conv2D: padding='same' needs stride 1"):
        L.Conv2D(2, 2, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"Conv2D: in_channels 4 and out_channels 6 must both "
                                         r"be divisible by groups=4"):
        L.Conv2D(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match=r"Conv2D: padding must be an int, a pair, 'same' or "
                                         r"'valid'"):
        L.Conv2D(2, 2, 3, padding="full")
    with pytest.raises(ValueError, match=r"Conv1D: dilation must be a positive int"):
        L.Conv1D(2, 2, 3, dilation=0)
    with pytest.raises(ValueError, match=r"Conv1D\(2->2, k=5.*\): input \(1, 2, 3\) is too small"):
        L.Conv1D(2, 2, 5).forward(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"expected input \(N, 2, L\), got \(1, 2, 3, 3\)"):
        L.Conv1D(2, 2, 1).forward(np.zeros((1, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"MaxPool1D: padding 2 must be at most half"):
        L.MaxPool1D(3, padding=2)


@pytest.mark.parametrize("route, geometry", [
    ("depthwise", ((5, 6, 9, 8), (12, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6)),
    ("depthwise", ((5, 3, 9, 8), (3, 1, 3, 2), (2, 1), (1, 0, 1, 2), (1, 2), 3)),
    ("im2col", ((9, 4, 7, 6), (6, 2, 3, 3), (1, 2), (1, 1, 0, 1), (2, 1), 2)),
])
def test_results_do_not_depend_on_the_thread_count(route, geometry):
    """Every output entry is summed by one thread in a fixed order (dW of the im2col route by a
    fixed number of sample blocks), and the per-sample GEMMs have the same shapes: 1 and 2
    threads give the same bits."""
    import fastnn as fnn

    before = fnn.get_num_threads()
    try:
        with forced("parallel"):
            fnn.set_num_threads(1)
            one, _ = run_both(geometry, np.float32, route, 5)
            fnn.set_num_threads(2)
            two, _ = run_both(geometry, np.float32, route, 5)
    finally:
        fnn.set_num_threads(before)
    for name, a, b in zip(("out", "dx", "dweight", "dbias"), one, two):
        np.testing.assert_array_equal(a, b, err_msg=name)
