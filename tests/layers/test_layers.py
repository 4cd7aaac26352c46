"""Layer classes: shapes, dtypes, gradients (float64 gradcheck in both modes), state dicts,
errors, buffer reuse, and the behaviour of each family (batch-norm statistics, dropout masks,
initialisation)."""
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn as fnn
from fastnn import init
from fastnn import layers as L
from fastnn.testing.ulp import assert_ulp
from fastnn.layers.base import layer_from_spec, layer_to_spec

from conftest import scaled_examples  # max_examples that follow the hypothesis profile

FLOATS = (np.float32, np.float64)
FEW = settings(max_examples=scaled_examples(12))


def randn(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def gradcheck_both_modes(layer, x, max_entries=60):
    for training in (True, False):
        fnn.assert_gradcheck(layer, x, training=training, max_entries=max_entries)


# --- shapes and dtypes -----------------------------------------------------------------------------
SHAPE_CASES = [
    (lambda: L.Dense(5, 3), (4, 5), (4, 3)),
    (lambda: L.Dense(5, 3), (2, 3, 5), (2, 3, 3)),
    (lambda: L.Dense(5, 3, bias=False), (5,), (3,)),
    (lambda: L.Conv2D(3, 8, 3), (2, 3, 8, 8), (2, 8, 6, 6)),
    (lambda: L.Conv2D(1, 6, 5, padding=2), (2, 1, 28, 28), (2, 6, 28, 28)),
    (lambda: L.Conv2D(2, 4, (3, 1), stride=(2, 1), padding=(1, 0)), (1, 2, 7, 5), (1, 4, 4, 5)),
    (lambda: L.ConvTranspose2D(4, 2, 7), (2, 4, 1, 1), (2, 2, 7, 7)),
    (lambda: L.ConvTranspose2D(4, 2, 4, stride=2, padding=1), (2, 4, 7, 7), (2, 2, 14, 14)),
    (lambda: L.ConvTranspose2D(2, 3, 3, stride=2, padding=1, output_padding=1), (1, 2, 4, 5), (1, 3, 8, 10)),
    (lambda: L.MaxPool2D(2), (2, 3, 8, 7), (2, 3, 4, 3)),
    (lambda: L.MaxPool2D(3, stride=2, padding=1), (1, 2, 7, 7), (1, 2, 4, 4)),
    (lambda: L.AvgPool2D(2, stride=1), (2, 3, 4, 4), (2, 3, 3, 3)),
    (lambda: L.Upsample2D(3), (2, 3, 2, 4), (2, 3, 6, 12)),
    (lambda: L.BatchNorm1D(4), (6, 4), (6, 4)),
    (lambda: L.BatchNorm1D(4), (6, 4, 3), (6, 4, 3)),
    (lambda: L.BatchNorm2D(3), (2, 3, 4, 5), (2, 3, 4, 5)),
    (lambda: L.LocalResponseNorm(3), (2, 5, 4, 3), (2, 5, 4, 3)),
    (lambda: L.LocalResponseNorm(2, alpha=0.5, k=2.0), (2, 4, 6), (2, 4, 6)),
    (lambda: L.ReLU(), (2, 3, 4), (2, 3, 4)),
    (lambda: L.LeakyReLU(0.2), (7,), (7,)),
    (lambda: L.Sigmoid(), (2, 3), (2, 3)),
    (lambda: L.Tanh(), (2, 3), (2, 3)),
    (lambda: L.Softmax(axis=1), (2, 3, 4), (2, 3, 4)),
    (lambda: L.Identity(), (2, 3), (2, 3)),
    (lambda: L.Dropout(0.5), (4, 6), (4, 6)),
    (lambda: L.Flatten(), (2, 3, 4, 5), (2, 60)),
    (lambda: L.Reshape((4, -1)), (2, 12), (2, 4, 3)),
    (lambda: L.Reshape((3, 2, 2)), (5, 12), (5, 3, 2, 2)),
    (lambda: L.Residual(L.Dense(6, 6)), (3, 6), (3, 6)),
    (lambda: L.Residual(L.Conv2D(2, 2, 3, padding=1)), (2, 2, 5, 5), (2, 2, 5, 5)),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("make, in_shape, out_shape", SHAPE_CASES)
def test_output_and_gradient_shapes_and_dtypes(make, in_shape, out_shape, dtype):
    layer = make().astype(dtype)
    x = randn(*in_shape, dtype=dtype)
    y = layer.forward(x, training=True)
    assert y.shape == out_shape and y.dtype == dtype
    dx = layer.backward(np.ones_like(y))
    assert dx.shape == in_shape and dx.dtype == dtype
    for p in layer.parameters():
        assert p.data.dtype == dtype and p.grad.dtype == dtype and p.grad.shape == p.data.shape
    assert layer.forward(x, training=False).shape == out_shape


@pytest.mark.parametrize("make, in_shape, out_shape", SHAPE_CASES)
def test_input_is_cast_to_the_layer_dtype_once(make, in_shape, out_shape):
    """A layer with parameters casts its input to their dtype; one without state never rounds
    float64 data to float32 (it becomes float64, as a PyTorch module without parameters)."""
    layer = make()                                   # float32 by default
    y = layer.forward(randn(*in_shape), training=False)   # float64 input
    stateless = not layer.state_dict()
    assert y.dtype == (np.float64 if stateless else np.float32)
    if stateless:
        assert layer.dtype == np.float64
        assert layer.backward(np.ones_like(y)).dtype == np.float64
    layer64 = make().astype(np.float64)
    assert layer64.forward(randn(*in_shape, dtype=np.float32), training=False).dtype == np.float64


@pytest.mark.parametrize("make, in_shape, out_shape", [c for c in SHAPE_CASES if len(c[1]) > 1])
def test_an_empty_batch_passes_through(make, in_shape, out_shape):
    layer = make()
    y = layer.forward(np.zeros((0, *in_shape[1:]), np.float32), training=False)
    assert y.shape == (0, *out_shape[1:])
    assert layer.backward(np.zeros_like(y)).shape == (0, *in_shape[1:])


@pytest.mark.parametrize("bad", [np.arange(12).reshape(3, 4), np.ones((3, 4), complex),
                                 np.array([[None] * 4] * 3), [[1.0] * 4] * 3])
def test_non_float_input_is_rejected_naming_the_layer(bad):
    with pytest.raises(TypeError, match=r"ReLU\(\)"):
        L.ReLU().forward(bad)


# --- gradients: float64 gradcheck over hypothesis-drawn configurations, both modes ---------------
@FEW
@given(in_f=st.integers(1, 5), out_f=st.integers(1, 5), lead=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       bias=st.booleans(), seed=st.integers(0, 99))
def test_dense_gradcheck(in_f, out_f, lead, bias, seed):
    layer = L.Dense(in_f, out_f, bias=bias).astype(np.float64)
    gradcheck_both_modes(layer, randn(*lead, in_f, seed=seed))


@st.composite
def conv_configs(draw, transposed=False):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, k[0] - 1)), draw(st.integers(0, k[1] - 1)))
    cin, cout, n = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    if transposed:
        op = (draw(st.integers(0, s[0] - 1)), draw(st.integers(0, s[1] - 1)))
        h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        # keep the output non-empty: (h - 1)*s - 2p + k + op >= 1
        p = tuple(min(pi, ((hi - 1) * si + ki + opi - 1) // 2) for pi, hi, si, ki, opi in zip(p, (h, w), s, k, op))
        layer = L.ConvTranspose2D(cin, cout, k, stride=s, padding=p, output_padding=op, bias=draw(st.booleans()))
    else:
        h = draw(st.integers(max(1, k[0] - 2 * p[0]), 6))
        w = draw(st.integers(max(1, k[1] - 2 * p[1]), 6))
        layer = L.Conv2D(cin, cout, k, stride=s, padding=p, bias=draw(st.booleans()))
    return layer.astype(np.float64), randn(n, cin, h, w, seed=draw(st.integers(0, 99)))


@settings(max_examples=scaled_examples(8))
@given(case=conv_configs())
def test_conv2d_gradcheck(case):
    gradcheck_both_modes(*case, max_entries=30)


@settings(max_examples=scaled_examples(8))
@given(case=conv_configs(transposed=True))
def test_conv_transpose2d_gradcheck(case):
    gradcheck_both_modes(*case, max_entries=30)


@st.composite
def pool_configs(draw, cls):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    h = draw(st.integers(max(1, k[0] - 2 * p[0]), 6))
    w = draw(st.integers(max(1, k[1] - 2 * p[1]), 6))
    layer = cls(k, stride=s, padding=p).astype(np.float64)
    return layer, randn(draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w, seed=draw(st.integers(0, 99)))


@FEW
@given(case=pool_configs(L.MaxPool2D))
def test_maxpool2d_gradcheck(case):
    gradcheck_both_modes(*case)


@FEW
@given(case=pool_configs(L.AvgPool2D))
def test_avgpool2d_gradcheck(case):
    gradcheck_both_modes(*case)


@FEW
@given(s=st.integers(1, 3), shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)))
def test_upsample2d_gradcheck(s, shape):
    gradcheck_both_modes(L.Upsample2D(s).astype(np.float64), randn(*shape))


@FEW
@given(c=st.integers(1, 4), n=st.integers(2, 5), length=st.sampled_from([None, 1, 3]), momentum=st.floats(0, 1),
       seed=st.integers(0, 99))
def test_batchnorm1d_gradcheck(c, n, length, momentum, seed):
    layer = L.BatchNorm1D(c, momentum=momentum).astype(np.float64)
    r = np.random.default_rng(seed)
    layer.load_state_dict({"weight": r.uniform(0.5, 1.5, c), "bias": r.normal(size=c),
                           "running_mean": r.normal(size=c), "running_var": r.uniform(0.5, 2, c)})
    shape = (n, c) if length is None else (n, c, length)
    gradcheck_both_modes(layer, randn(*shape, seed=seed))


@FEW
@given(c=st.integers(1, 3), shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(2, 3)),
       seed=st.integers(0, 99))
def test_batchnorm2d_gradcheck(c, shape, seed):
    layer = L.BatchNorm2D(c, eps=1e-3).astype(np.float64)
    r = np.random.default_rng(seed)
    layer.load_state_dict({"weight": r.uniform(0.5, 1.5, c), "bias": r.normal(size=c),
                           "running_mean": r.normal(size=c), "running_var": r.uniform(0.5, 2, c)})
    n, h, w = shape
    gradcheck_both_modes(layer, randn(n, c, h, w, seed=seed))


ACTIVATIONS = [L.ReLU, lambda: L.LeakyReLU(0.3), L.Sigmoid, L.Tanh, L.Identity, L.Softmax,
               lambda: L.Softmax(axis=0), lambda: L.Softmax(axis=1)]


@FEW
@given(which=st.integers(0, len(ACTIVATIONS) - 1),
       shape=st.lists(st.integers(1, 4), min_size=2, max_size=3), seed=st.integers(0, 99))
def test_activation_gradcheck(which, shape, seed):
    gradcheck_both_modes(ACTIVATIONS[which]().astype(np.float64), 3 * randn(*shape, seed=seed))


@FEW
@given(p=st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), shape=st.lists(st.integers(1, 4), min_size=1, max_size=3))
def test_dropout_gradcheck(p, shape):
    gradcheck_both_modes(L.Dropout(p).astype(np.float64), randn(*shape))


@FEW
@given(shape=st.lists(st.integers(1, 3), min_size=2, max_size=4), seed=st.integers(0, 99))
def test_flatten_and_reshape_gradcheck(shape, seed):
    x = randn(*shape, seed=seed)
    gradcheck_both_modes(L.Flatten().astype(np.float64), x)
    gradcheck_both_modes(L.Reshape((-1,)).astype(np.float64), x)
    gradcheck_both_modes(L.Reshape(tuple(reversed(shape[1:]))).astype(np.float64), x)


def test_residual_gradcheck_with_nested_state():
    gradcheck_both_modes(L.Residual(L.Dense(4, 4)).astype(np.float64), randn(3, 4))
    gradcheck_both_modes(L.Residual(L.Conv2D(2, 2, 3, padding=1)).astype(np.float64), randn(1, 2, 3, 3), max_entries=20)
    gradcheck_both_modes(L.Residual(L.BatchNorm2D(2)).astype(np.float64), randn(3, 2, 2, 2))
    gradcheck_both_modes(L.Residual(L.Residual(L.Tanh())).astype(np.float64), randn(3, 2))


def test_parameter_gradients_accumulate():
    for layer, x in [(L.Dense(3, 2), randn(4, 3)), (L.Conv2D(2, 3, 2), randn(2, 2, 4, 4)),
                     (L.ConvTranspose2D(2, 3, 2, stride=2), randn(2, 2, 3, 3)), (L.BatchNorm2D(2), randn(3, 2, 2, 2))]:
        layer.astype(np.float64)
        y = layer.forward(x)
        dy = randn(*y.shape, seed=1)
        layer.backward(dy)
        first = [p.grad.copy() for p in layer.parameters()]
        assert all(np.any(g != 0) for g in first)
        layer.forward(x)
        layer.backward(dy)
        for p, g in zip(layer.parameters(), first):
            np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-12, atol=1e-12)
        layer.zero_grad()
        assert all(not p.grad.any() for p in layer.parameters())


@pytest.mark.parametrize("make", [lambda: L.Dense(3, 2), lambda: L.Dense(3, 2, bias=False),
                                  lambda: L.Conv2D(2, 3, 2), lambda: L.BatchNorm1D(3)],
                         ids=["Dense", "Dense-no-bias", "Conv2D", "BatchNorm1D"])
def test_zero_grad_then_backward_gives_the_gradient_of_that_backward_alone(make):
    # zero_grad only marks the gradients; a backward then writes them (Dense overwrites, the
    # others zero and add): old values, even NaN, never leak into the new gradient
    layer = make().astype(np.float64)
    x = randn(4, 3) if not isinstance(layer, L.Conv2D) else randn(2, 2, 4, 4)
    dy = randn(*layer.forward(x).shape, seed=1)
    layer.backward(dy)
    expected = [p.grad.copy() for p in layer.parameters()]
    for p in layer.parameters():
        p.grad[...] = np.nan
    layer.zero_grad()
    assert all(not p.grad.any() for p in layer.parameters())  # reading gives the zeros
    for p in layer.parameters():
        p.grad[...] = np.nan
    layer.zero_grad()
    layer.forward(x)
    layer.backward(dy)  # without reading .grad first
    for p, g in zip(layer.parameters(), expected):
        np.testing.assert_array_equal(p.grad, g)
    # zeroed by the optimizer too, and a layer called twice adds its second call
    opt = fnn.optim.SGD(layer.parameters(), lr=0.1)
    opt.zero_grad()
    for _ in range(2):
        layer.forward(x)
        layer.backward(dy)
    for p, g in zip(layer.parameters(), expected):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-12, atol=1e-12)


def test_a_gradient_array_taken_before_zero_grad_keeps_its_values_until_read_again():
    # as PyTorch's zero_grad(set_to_none=True): zero_grad writes nothing itself
    layer = L.Dense(3, 2).astype(np.float64)
    layer.forward(randn(4, 3))
    layer.backward(randn(4, 2, seed=1))
    taken = layer.weight.grad
    before = taken.copy()
    layer.zero_grad()
    np.testing.assert_array_equal(taken, before)
    assert layer.weight.grad is taken and not taken.any()


# --- values of the simple layers against plain NumPy -----------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
def test_values_against_numpy(dtype):
    tol = dict(rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6 if dtype == np.float32 else 1e-12)
    x = randn(2, 3, 4, 4, dtype=dtype)
    dense = L.Dense(4, 5).astype(dtype)
    np.testing.assert_allclose(dense.forward(x), x @ dense.weight.data.T + dense.bias.data, **tol)
    np.testing.assert_allclose(L.ReLU().astype(dtype).forward(x), np.maximum(x, 0), **tol)
    np.testing.assert_allclose(L.LeakyReLU(0.1).astype(dtype).forward(x), np.where(x > 0, x, 0.1 * x), **tol)
    # elementwise functions per element (float32: in ulps of the float64 value), never with a
    # tolerance relative to the largest element
    x64 = x.astype(np.float64)
    elementwise = (lambda got, want: assert_ulp(got, want, 3)) if dtype == np.float32 else \
        (lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-13, atol=0))
    elementwise(L.Sigmoid().astype(dtype).forward(x), 1 / (1 + np.exp(-x64)))
    elementwise(L.Tanh().astype(dtype).forward(x), np.tanh(x64))
    for axis in (-1, 1, 0):
        e = np.exp(x64 - x64.max(axis, keepdims=True))
        elementwise(L.Softmax(axis).astype(dtype).forward(x), e / e.sum(axis, keepdims=True))
    np.testing.assert_allclose(L.Upsample2D(2).astype(dtype).forward(x), x.repeat(2, 2).repeat(2, 3), **tol)
    np.testing.assert_allclose(L.MaxPool2D(2).astype(dtype).forward(x), x.reshape(2, 3, 2, 2, 2, 2).max((3, 5)), **tol)
    np.testing.assert_allclose(L.AvgPool2D(2).astype(dtype).forward(x), x.reshape(2, 3, 2, 2, 2, 2).mean((3, 5)), **tol)
    np.testing.assert_array_equal(L.Flatten().astype(dtype).forward(x), x.reshape(2, 48))
    inner = L.Dense(4, 4).astype(dtype)
    np.testing.assert_allclose(L.Residual(inner).forward(x), x + inner.forward(x), **tol)


def test_conv2d_matches_a_direct_cross_correlation():
    conv = L.Conv2D(2, 3, (3, 2), stride=(2, 1), padding=(1, 0)).astype(np.float64)
    x = randn(2, 2, 5, 4)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    want = np.zeros((2, 3, 3, 3))
    for i in range(3):
        for j in range(3):
            patch = xp[:, :, 2 * i:2 * i + 3, j:j + 2]
            want[:, :, i, j] = np.einsum("nchw,ochw->no", patch, conv.weight.data) + conv.bias.data
    np.testing.assert_allclose(conv.forward(x), want, rtol=1e-12, atol=1e-12)


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    # <convT(x), y> = <x, conv(y)> for the same weight and no bias
    convt = L.ConvTranspose2D(3, 2, 3, stride=2, padding=1, output_padding=1, bias=False).astype(np.float64)
    conv = L.Conv2D(2, 3, 3, stride=2, padding=1, bias=False).astype(np.float64)
    conv.weight.data[...] = convt.weight.data
    x = randn(2, 3, 4, 4)
    y = randn(2, 2, 8, 8, seed=1)
    assert convt.forward(x).shape == y.shape
    np.testing.assert_allclose(np.vdot(convt.forward(x), y), np.vdot(x, conv.forward(y)), rtol=1e-10)


# --- batch norm ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
def test_batchnorm_training_statistics_and_running_update(dtype):
    bn = L.BatchNorm2D(3, momentum=0.2).astype(dtype)
    x = 2 + 3 * randn(4, 3, 2, 5, dtype=dtype)
    y = bn.forward(x, training=True)
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
    want = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(y, want, rtol=tol, atol=tol)
    n = 4 * 2 * 5
    np.testing.assert_allclose(bn.running_mean, 0.2 * mean, rtol=tol)
    np.testing.assert_allclose(bn.running_var, 0.8 + 0.2 * var * n / (n - 1), rtol=tol)
    assert bn.state_dict()["running_mean"].dtype == dtype


def test_batchnorm_inference_uses_running_statistics_and_leaves_them():
    bn = L.BatchNorm1D(2).astype(np.float64)
    bn.load_state_dict({"weight": np.array([2.0, 0.5]), "bias": np.array([1.0, -1.0]),
                        "running_mean": np.array([0.5, -0.5]), "running_var": np.array([4.0, 0.25])})
    x = randn(5, 2, 3)
    y = bn.forward(x, training=False)
    want = (x - np.array([0.5, -0.5])[:, None]) / np.sqrt(np.array([4.0, 0.25]) + 1e-5)[:, None]
    want = want * np.array([2.0, 0.5])[:, None] + np.array([1.0, -1.0])[:, None]
    np.testing.assert_allclose(y, want, rtol=1e-12)
    np.testing.assert_array_equal(bn.running_mean, [0.5, -0.5])
    np.testing.assert_array_equal(bn.running_var, [4.0, 0.25])


def test_batchnorm_training_needs_more_than_one_value_per_channel():
    with pytest.raises(ValueError, match=r"BatchNorm1D\(3.*more than one value.*\(1, 3\)"):
        L.BatchNorm1D(3).forward(np.ones((1, 3), np.float32))
    assert L.BatchNorm1D(3).forward(np.ones((1, 3), np.float32), training=False).shape == (1, 3)


# --- dropout -------------------------------------------------------------------------------------
def test_dropout_masks_scales_and_reproduces_with_seed():
    x = np.ones((200, 100), np.float32)
    drop = L.Dropout(0.3)
    fnn.seed(7)
    y = drop.forward(x)
    kept = y != 0
    assert abs(1 - kept.mean() - 0.3) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    dx = drop.backward(np.full_like(x, 2.0))
    np.testing.assert_allclose(dx, np.where(kept, 2 / 0.7, 0), rtol=1e-6)
    fnn.seed(7)
    np.testing.assert_array_equal(L.Dropout(0.3).forward(x), y)
    assert not np.array_equal(drop.forward(x), y)          # a new mask every step


def test_dropout_edge_probabilities_and_inference():
    x = randn(3, 4, dtype=np.float32)
    np.testing.assert_array_equal(L.Dropout(0.0).forward(x), x)
    np.testing.assert_array_equal(L.Dropout(0.9).forward(x, training=False), x)
    one = L.Dropout(1.0)
    assert not one.forward(x).any() and not one.backward(np.ones_like(x)).any()
    for p in (-0.1, 1.5, "a"):
        with pytest.raises(ValueError, match="Dropout"):
            L.Dropout(p)


# --- state dicts ---------------------------------------------------------------------------------
STATE_CASES = [
    (lambda: L.Dense(5, 3), {"weight": (3, 5), "bias": (3,)}),
    (lambda: L.Dense(5, 3, bias=False), {"weight": (3, 5)}),
    (lambda: L.Conv2D(3, 8, (3, 2)), {"weight": (8, 3, 3, 2), "bias": (8,)}),
    (lambda: L.ConvTranspose2D(3, 8, 4), {"weight": (3, 8, 4, 4), "bias": (8,)}),
    (lambda: L.BatchNorm2D(6), {"weight": (6,), "bias": (6,), "running_mean": (6,), "running_var": (6,)}),
    (lambda: L.Residual(L.Dense(4, 4)), {"inner.weight": (4, 4), "inner.bias": (4,)}),
    (lambda: L.Residual(L.BatchNorm1D(2)), {"inner.weight": (2,), "inner.bias": (2,),
                                            "inner.running_mean": (2,), "inner.running_var": (2,)}),
    (lambda: L.MaxPool2D(2), {}),
    (lambda: L.Dropout(), {}),
]


@pytest.mark.parametrize("make, shapes", STATE_CASES)
def test_state_dict_keys_shapes_and_round_trip(make, shapes):
    a, b = make(), make()
    sd = a.state_dict()
    assert list(sd) == list(shapes)
    assert {k: v.shape for k, v in sd.items()} == shapes
    assert [name for name, _ in a.named_parameters()] == [k for k in shapes if "running" not in k]
    b.load_state_dict(sd)
    for key, value in b.state_dict().items():
        np.testing.assert_array_equal(value, sd[key])
    for key in sd:                               # state_dict() hands out copies
        sd[key][...] = 123
        assert not np.any(a.state_dict()[key] == 123)


def test_loaded_weights_give_identical_outputs():
    a, b = L.Conv2D(2, 3, 3, padding=1), L.Conv2D(2, 3, 3, padding=1)
    x = randn(2, 2, 5, 5, dtype=np.float32)
    assert not np.allclose(a.forward(x), b.forward(x))
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.forward(x), b.forward(x))


def test_strict_load_state_dict_errors():
    bn = L.BatchNorm2D(3)
    sd = bn.state_dict()
    with pytest.raises(KeyError, match="running_var"):
        bn.load_state_dict({k: v for k, v in sd.items() if k != "running_var"})
    with pytest.raises(KeyError, match="extra"):
        bn.load_state_dict({**sd, "extra": np.zeros(3)})
    with pytest.raises(ValueError, match=r"'weight'.*\(4,\).*\(3,\)"):
        bn.load_state_dict({**sd, "weight": np.zeros(4)})
    bn.load_state_dict({**sd, "num_batches_tracked": np.array(5)})    # PyTorch's counter is ignored
    res = L.Residual(L.Dense(2, 2))
    with pytest.raises(KeyError, match="inner.bias"):
        res.load_state_dict({"inner.weight": np.zeros((2, 2))})


def test_load_state_dict_casts_to_the_layer_dtype():
    dense = L.Dense(3, 2).astype(np.float64)
    dense.load_state_dict({"weight": np.ones((2, 3), np.float32), "bias": np.zeros(2, np.float32)})
    assert dense.weight.data.dtype == np.float64 and dense.weight.data.sum() == 6


# --- config: save/load can rebuild every layer ---------------------------------------------------
CONFIG_CASES = [
    L.Dense(5, 3, bias=False, weight_init="xavier_uniform"), L.Conv2D(3, 8, (3, 2), stride=2, padding=(1, 0)),
    L.ConvTranspose2D(8, 4, 4, stride=2, padding=1, output_padding=1), L.MaxPool2D(3, 2, 1), L.AvgPool2D(2),
    L.Upsample2D(3), L.BatchNorm1D(4, eps=1e-3, momentum=0.05), L.BatchNorm2D(2), L.ReLU(), L.LeakyReLU(0.2),
    L.LocalResponseNorm(5, alpha=2e-4, beta=0.5, k=2.0), L.Step(),
    L.Sigmoid(), L.Tanh(), L.Softmax(axis=1), L.Identity(), L.Dropout(0.25), L.Flatten(), L.Reshape((2, -1)),
    L.Residual(L.Residual(L.Conv2D(2, 2, 3, padding=1))),
]


@pytest.mark.parametrize("layer", CONFIG_CASES, ids=repr)
def test_config_rebuilds_the_layer(layer):
    import json
    spec = json.loads(json.dumps(layer_to_spec(layer)))   # what a checkpoint stores
    rebuilt = layer_from_spec(spec, L.get)
    assert type(rebuilt) is type(layer)
    assert repr(rebuilt) == repr(layer)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in layer.state_dict().items()}


def test_extra_repr_is_pytorch_like():
    assert repr(L.Dense(784, 256)) == "Dense(in_features=784, out_features=256, bias=True)"
    assert repr(L.Conv2D(3, 8, 3)) == "Conv2D(3->8, k=3, s=1, p=0)"
    assert repr(L.Conv2D(3, 8, (3, 5), stride=2, bias=False)) == "Conv2D(3->8, k=(3, 5), s=2, p=0, bias=False)"
    assert repr(L.MaxPool2D(2)) == "MaxPool2D(kernel_size=2, stride=2, padding=0)"
    assert repr(L.BatchNorm2D(16)) == "BatchNorm2D(16, eps=1e-05, momentum=0.1)"
    assert repr(L.Residual(L.ReLU())) == "Residual(ReLU())"


# --- errors name the layer and the shapes --------------------------------------------------------
def test_bad_input_shapes_name_the_layer_and_both_shapes():
    x = np.zeros((2, 4, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"^Conv2D\(3->8, k=3, s=1, p=0\): expected input \(N, 3, H, W\), got \(2, 4, 8, 8\)$"):
        L.Conv2D(3, 8, 3).forward(x)
    checks = [
        (L.Conv2D(4, 8, 5), np.zeros((2, 4, 3, 8)), r"Conv2D\(4->8.*\(2, 4, 3, 8\).*too small.*\(5, 5\)"),
        (L.Conv2D(4, 8, 3), np.zeros((4, 8, 8)), r"Conv2D\(4->8.*\(N, 4, H, W\).*\(4, 8, 8\)"),
        (L.ConvTranspose2D(4, 2, 3), np.zeros((1, 3, 4, 4)), r"ConvTranspose2D\(4->2.*\(N, 4, H, W\).*\(1, 3, 4, 4\)"),
        (L.ConvTranspose2D(4, 2, 3, padding=2), np.zeros((1, 4, 1, 1)), r"ConvTranspose2D.*\(1, 4, 1, 1\).*empty"),
        (L.Dense(5, 3), np.zeros((2, 4)), r"Dense\(in_features=5.*\(\*, 5\).*\(2, 4\)"),
        (L.MaxPool2D(3), np.zeros((1, 1, 2, 5)), r"MaxPool2D\(kernel_size=3.*\(1, 1, 2, 5\).*too small"),
        (L.AvgPool2D(2), np.zeros((2, 8, 8)), r"AvgPool2D.*\(N, C, H, W\).*\(2, 8, 8\)"),
        (L.Upsample2D(), np.zeros((2, 8)), r"Upsample2D.*\(N, C, H, W\).*\(2, 8\)"),
        (L.BatchNorm2D(3), np.zeros((2, 4, 5, 5)), r"BatchNorm2D\(3.*\(N, 3, H, W\).*\(2, 4, 5, 5\)"),
        (L.BatchNorm1D(3), np.zeros((2, 4)), r"BatchNorm1D\(3.*\(N, 3\) or \(N, 3, L\).*\(2, 4\)"),
        (L.Reshape((3, 3)), np.zeros((2, 10)), r"Reshape\(shape=\(3, 3\)\).*9 elements.*\(2, 10\)"),
        (L.Reshape((3, -1)), np.zeros((2, 10)), r"Reshape.*divisible by 3.*\(2, 10\)"),
        (L.Flatten(), np.zeros(5), r"Flatten.*\(5,\)"),
        (L.Softmax(axis=2), np.zeros((2, 3)), r"Softmax\(axis=2\).*\(2, 3\)"),
        (L.Residual(L.Dense(4, 3)), np.zeros((2, 4)), r"Residual\(Dense.*\(2, 4\).*\(2, 3\)"),
    ]
    for layer, bad, pattern in checks:
        with pytest.raises(ValueError, match=pattern):
            layer.forward(bad.astype(np.float32))


def test_backward_checks_dy_shape_and_order():
    for layer, x in [(L.Dense(3, 2), randn(4, 3)), (L.Conv2D(1, 2, 3), randn(1, 1, 5, 5)),
                     (L.MaxPool2D(2), randn(1, 1, 4, 4)), (L.BatchNorm1D(3), randn(4, 3)),
                     (L.ReLU(), randn(2, 2)), (L.Softmax(), randn(2, 2)), (L.Dropout(), randn(2, 2)),
                     (L.Flatten(), randn(2, 2, 2)), (L.Upsample2D(), randn(1, 1, 2, 2)),
                     (L.LocalResponseNorm(2), randn(1, 3, 2, 2))]:
        with pytest.raises(RuntimeError, match="before forward"):
            layer.backward(np.ones(1))
        y = layer.forward(x)
        bad = np.ones(y.shape + (1,), y.dtype)
        with pytest.raises(ValueError, match=rf"{type(layer).__name__}.*expected dy.*got {re.escape(str(bad.shape))}"):
            layer.backward(bad)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="Dense: in_features"):
        L.Dense(0, 3)
    with pytest.raises(ValueError, match="MaxPool2D: padding .*half"):
        L.MaxPool2D(2, padding=2)
    with pytest.raises(ValueError, match="ConvTranspose2D: output_padding"):
        L.ConvTranspose2D(2, 2, 3, stride=2, output_padding=2)
    with pytest.raises(TypeError, match="Conv2D: kernel_size"):
        L.Conv2D(2, 2, 2.5)
    with pytest.raises(ValueError, match="Upsample2D: scale_factor"):
        L.Upsample2D(1.5)
    with pytest.raises(ValueError, match="Reshape"):
        L.Reshape((-1, -1))
    with pytest.raises(ValueError, match="BatchNorm2D: momentum"):
        L.BatchNorm2D(3, momentum=2)
    with pytest.raises(TypeError, match="Residual"):
        L.Residual(lambda x: x)
    with pytest.raises(ValueError, match="Dense: weight_init.*unknown initialiser 'nope'"):
        L.Dense(2, 2, weight_init="nope")


# --- buffers: reused across steps, never handed out ----------------------------------------------
def test_workspaces_are_reused_for_the_same_shape_and_reallocated_for_a_new_one():
    pool = L.MaxPool2D(2)
    x = randn(2, 3, 4, 4, dtype=np.float32)
    pool.forward(x)
    argmax = pool.argmax
    pool.forward(x + 1)
    assert pool.argmax is argmax
    pool.forward(randn(1, 3, 6, 6, dtype=np.float32))
    assert pool.argmax is not argmax and pool.argmax.shape == (1, 3, 3, 3)

    bn = L.BatchNorm2D(3)
    bn.forward(x)
    mean, invstd = bn.mean, bn.invstd
    bn.forward(2 * x)
    bn.forward(x, training=False)
    assert bn.mean is mean and bn.invstd is invstd

    drop = L.Dropout(0.5)
    drop.forward(x)
    keep = drop.keep
    drop.forward(x)
    assert drop.keep is keep


def test_batchnorm_reuses_a_gradient_nobody_holds():
    """A batch norm's dx comes back from the last backward once let go (the same memory, no
    new pages); one still held, directly or through a view, is never written."""
    bn = L.BatchNorm2D(3)
    x = randn(4, 3, 5, 5, dtype=np.float32)
    bn.forward(x)
    dy = np.ones((4, 3, 5, 5), np.float32)
    first = bn.backward(dy)
    addr = first.__array_interface__["data"][0]
    del first
    second = bn.backward(2 * dy)
    assert second.__array_interface__["data"][0] == addr   # let go: reused
    view, kept = second[1:], second[1:].copy()
    del second
    third = bn.backward(3 * dy)
    assert not np.shares_memory(third, view)               # held through a view: a new one
    np.testing.assert_array_equal(view, kept)
    third_kept = third.copy()
    fourth = bn.backward(4 * dy)
    assert not np.shares_memory(fourth, third)             # held directly
    np.testing.assert_array_equal(third, third_kept)
    np.testing.assert_array_equal(view, kept)


@pytest.mark.parametrize("make, in_shape, out_shape", SHAPE_CASES)
def test_outputs_held_by_the_caller_survive_the_next_step(make, in_shape, out_shape):
    layer = make()
    x1, x2 = randn(*in_shape, dtype=np.float32), randn(*in_shape, seed=1, dtype=np.float32)
    y1 = layer.forward(x1, training=False)
    kept = y1.copy()
    dx1 = layer.backward(np.ones_like(y1))
    kept_dx = dx1.copy()
    layer.forward(x2, training=False)
    layer.backward(np.full_like(y1, 2.0))
    np.testing.assert_array_equal(y1, kept)
    np.testing.assert_array_equal(dx1, kept_dx)


def test_astype_drops_caches_and_keeps_working():
    for layer, x in [(L.MaxPool2D(2), randn(1, 2, 4, 4)), (L.BatchNorm2D(2), randn(2, 2, 2, 2)),
                     (L.Dropout(0.5), randn(3, 3)), (L.Dense(3, 2), randn(2, 3)), (L.Sigmoid(), randn(2, 2))]:
        layer.forward(x.astype(np.float32))
        layer.astype(np.float64)
        with pytest.raises(RuntimeError, match="before forward"):
            layer.backward(np.ones(1))
        y = layer.forward(x)
        assert y.dtype == np.float64 and layer.backward(np.ones_like(y)).dtype == np.float64
        assert all(p.data.dtype == np.float64 for p in layer.parameters())


# --- initialisation ------------------------------------------------------------------------------
def test_fans_follow_pytorch():
    assert init.fan_in_and_fan_out((256, 784)) == (784, 256)
    assert init.fan_in_and_fan_out((8, 3, 5, 5)) == (75, 200)            # Conv2D (out, in, kh, kw)
    assert init.fan_in_and_fan_out((64, 128, 4, 4)) == (128 * 16, 64 * 16)   # ConvTranspose2D (in, out, ...)


@pytest.mark.parametrize("name, std", [
    ("he_normal", math.sqrt(2 / 400)), ("he_uniform", math.sqrt(6 / 400) / math.sqrt(3)),
    ("xavier_normal", math.sqrt(2 / 600)), ("xavier_uniform", math.sqrt(6 / 600) / math.sqrt(3)),
    ("torch_default", 1 / math.sqrt(400) / math.sqrt(3))])
def test_initialisers_have_the_documented_spread(name, std):
    fnn.seed(0)
    w = getattr(init, name)((200, 400), dtype=np.float64)
    assert w.shape == (200, 400) and w.dtype == np.float64
    assert abs(w.mean()) < 0.05 * std
    assert abs(w.std() - std) < 0.02 * std
    if "uniform" in name or name == "torch_default":
        assert np.abs(w).max() <= std * math.sqrt(3)


def test_layers_use_the_pytorch_default_and_accept_other_initialisers():
    fnn.seed(1)
    conv = L.Conv2D(4, 8, 3)
    bound = 1 / math.sqrt(4 * 9)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.bias.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.8 * bound
    convt = L.ConvTranspose2D(8, 2, 4)          # PyTorch's fan_in of (in, out, kh, kw): out * kh * kw
    assert 0.8 / math.sqrt(32) < np.abs(convt.weight.data).max() <= 1 / math.sqrt(32)
    dense = L.Dense(10, 4, weight_init="zeros", bias_init=init.ones)
    assert not dense.weight.data.any() and (dense.bias.data == 1).all()
    called = []

    def custom(shape, fan_in=None, fan_out=None, dtype=np.float32):
        called.append((shape, fan_in, fan_out))
        return np.full(shape, 0.5, dtype)

    dense = L.Dense(10, 4, weight_init=custom, bias_init="zeros")
    assert called == [((4, 10), 10, 4)] and (dense.weight.data == 0.5).all() and not dense.bias.data.any()
    fnn.seed(3)
    a = L.Dense(6, 5).weight.data
    fnn.seed(3)
    np.testing.assert_array_equal(L.Dense(6, 5).weight.data, a)
    assert L.BatchNorm1D(3).weight.data.tolist() == [1, 1, 1]


@pytest.mark.parametrize("make, shape", [
    (lambda: L.Conv2D(2, 3, 3, stride=2, padding=1), (2, 2, 5, 5)),
    (lambda: L.ConvTranspose2D(2, 3, 4, stride=2, padding=1), (2, 2, 3, 3)),
    (lambda: L.Dense(4, 3), (2, 5, 4)),
])
def test_backward_without_input_grad_only_accumulates_parameter_grads(make, shape):
    rng = np.random.default_rng(0)
    layer = make().astype(np.float64)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(layer.forward(x).shape)
    dx = layer.backward(dy)
    once = [p.grad.copy() for p in layer.parameters()]
    assert dx.shape == x.shape
    assert layer.backward(dy, input_grad=False) is None
    for g, p in zip(once, layer.parameters()):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-12, atol=1e-12)


# --- lecture-note layers: LocalResponseNorm, Step ---------------------------------------------------
@FEW
@given(size=st.integers(1, 6), c=st.integers(1, 6), spatial=st.lists(st.integers(1, 3), min_size=1, max_size=2),
       alpha=st.sampled_from([1e-4, 0.5, 2.0]), beta=st.sampled_from([0.75, 0.25, 1.5]), seed=st.integers(0, 99))
def test_local_response_norm_gradcheck(size, c, spatial, alpha, beta, seed):
    layer = L.LocalResponseNorm(size, alpha=alpha, beta=beta, k=1.5).astype(np.float64)
    gradcheck_both_modes(layer, 2 * randn(2, c, *spatial, seed=seed))


def test_local_response_norm_by_hand():
    # one pixel, channels [1, 2, 3], size 3, alpha 3, beta 1, k 1: the windows hold {1, 2},
    # {1, 2, 3}, {2, 3}, so y_c = x_c / (1 + (sum of squares in the window))
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    y = L.LocalResponseNorm(3, alpha=3.0, beta=1.0, k=1.0).astype(np.float64).forward(x)
    np.testing.assert_allclose(y.ravel(), [1 / 6, 2 / 15, 3 / 14], rtol=1e-15)


def test_local_response_norm_rejects_bad_input_and_arguments():
    with pytest.raises(ValueError, match=r"LocalResponseNorm.*3 or more dimensions.*\(2, 3\)"):
        L.LocalResponseNorm(3).forward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="LocalResponseNorm: size"):
        L.LocalResponseNorm(0)
    with pytest.raises(ValueError, match="LocalResponseNorm: beta"):
        L.LocalResponseNorm(3, beta=float("nan"))


@pytest.mark.parametrize("dtype", FLOATS)
def test_step_is_one_above_zero_and_refuses_backward(dtype):
    step = L.Step().astype(dtype)
    x = np.array([[-2.0, -0.0, 0.0, 1e-30, 3.0]], dtype)
    y = step.forward(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, [[0, 0, 0, 1, 1]])
    with pytest.raises(RuntimeError, match="Step.*no useful gradient"):
        step.backward(np.ones_like(y))
    model = fnn.Sequential(L.Dense(2, 1), L.Step())
    model.forward(np.ones((3, 2), np.float32))
    with pytest.raises(RuntimeError, match="Step"):
        model.backward(np.ones((3, 1), np.float32))
