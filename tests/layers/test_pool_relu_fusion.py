"""A MaxPool2D after a ReLU takes the ReLU's backward (``backward_through_activation``: the mask
applied to dy on the pooled grid): the same bits as the two backward passes one by one, NaN
and overlapping windows included; anything else leaves the pair alone."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn import layers as L


def _pair(kernel, stride, dtype):
    relu, pool = L.ReLU(), L.MaxPool2D(kernel, stride)
    return relu.astype(dtype), pool.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 2), (3, 1), (2, 1)])
def test_fused_relu_backward_equals_the_two_passes(dtype, kernel, stride):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 9, 8)).astype(dtype)
    x[0, 0, 0, :4] = np.nan          # NaN windows: the gradient is 0 there, as the ReLU's
    x[1, 1, 2:4, 2:4] = -1.0          # an all-negative window: argmax on a zero of the ReLU
    x[2, 2] = 0.0                     # all zeros: ties on 0
    relu, pool = _pair(kernel, stride, dtype)
    y = pool.forward(relu.forward(x))
    dy = rng.standard_normal(y.shape).astype(dtype)
    dy[0, 0, 0, 0] = np.inf           # masked inf stays 0 (a select, not a multiply)
    assert pool.takes_activation_backward(relu)
    fused = pool.backward_through_activation(dy, relu)
    plain = relu.backward(pool.backward(dy))
    np.testing.assert_array_equal(fused.view(np.uint8), plain.view(np.uint8))


def test_only_exact_relu_and_maxpool_fuse():
    pool = L.MaxPool2D(2)
    assert not pool.takes_activation_backward(L.LeakyReLU(0.1))
    assert not pool.takes_activation_backward(L.Sigmoid())

    class Relu2(L.ReLU):
        pass

    assert not pool.takes_activation_backward(Relu2())

    class Pool2(L.MaxPool2D):
        def backward(self, dy):
            return super().backward(dy)

    assert not Pool2(2).takes_activation_backward(L.ReLU())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequential_lenet_like_gradients_bitwise_equal_to_one_by_one(dtype):
    fnn.seed(0)
    model = fnn.Sequential(L.Conv2D(1, 3, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
                           L.Conv2D(3, 4, 3), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                           L.Dense(4, 2)).astype(dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 8, 8)).astype(dtype)
    dy = rng.standard_normal((4, 2)).astype(dtype)
    model.forward(x)
    calls = []
    relus = [layer for layer in model.layers if type(layer) is L.ReLU]
    for relu in relus:
        relu.backward = lambda d, _f=relu.backward: calls.append(1) or _f(d)
    dx = model.backward(dy)
    assert calls == []   # both ReLUs' backward ran inside the pools'
    grads = [p.grad.copy() for p in model.parameters()]
    for p in model.parameters():
        p.grad[...] = 0
    h = x
    for layer in model.layers:
        h = layer.forward(h)
    d = dy
    for layer in reversed(model.layers):
        d = layer.backward(d)
    np.testing.assert_array_equal(dx, d)
    for g, p in zip(grads, model.parameters()):
        np.testing.assert_array_equal(g, p.grad)


def test_unforwarded_relu_keeps_its_error():
    relu, pool = _pair(2, 2, np.float32)
    pool.forward(np.ones((1, 1, 4, 4), np.float32))
    with pytest.raises(Exception):
        pool.backward_through_activation(np.ones((1, 1, 2, 2), np.float32), relu)
