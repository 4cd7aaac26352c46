"""Edge cases the fuzz suite found: empty softmax axes and malformed Reshape shapes."""
import numpy as np
import pytest

from fastnn import layers as L


@pytest.mark.parametrize("axis, shape", [(0, (0, 3)), (1, (2, 0)), (-1, (0, 5)), (1, (0, 4, 2))])
def test_softmax_of_an_empty_array_is_empty(axis, shape):
    # torch.softmax returns an empty tensor here; the kernel is never asked about zero rows
    layer = L.Softmax(axis=axis)
    y = layer.forward(np.zeros(shape, np.float32))
    dx = layer.backward(np.zeros(shape, np.float32))
    assert y.shape == shape and dx.shape == shape and y.dtype == np.float32


@pytest.mark.parametrize("bad", ["", "34", True, (2, True), (), [2.5], None, (2, np.bool_(True))])
def test_reshape_rejects_anything_but_ints(bad):
    with pytest.raises(TypeError, match="Reshape: shape must be a non-empty tuple of ints"):
        L.Reshape(bad)


@pytest.mark.parametrize("good, x_shape, out_shape", [
    (4, (3, 4), (3, 4)), ([2, 2], (3, 4), (3, 2, 2)), (np.int64(-1), (3, 2, 2), (3, 4)),
    (iter([2, -1]), (3, 4), (3, 2, 2)),
])
def test_reshape_accepts_int_likes(good, x_shape, out_shape):
    assert L.Reshape(good).forward(np.zeros(x_shape, np.float32)).shape == out_shape
