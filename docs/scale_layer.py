"""A layer of your own, gradient-checked from the command line (docs/gradcheck.md):

    fastnn gradcheck docs/scale_layer.py:scale     # one layer and one input, training and inference
    fastnn gradcheck docs/scale_layer.py:scales    # a hypothesis strategy: many shapes and weights

``scale()`` returns a pair ``(layer, x)``; ``scales()`` returns a hypothesis strategy drawing
such pairs, of which ``fastnn gradcheck`` checks ``--examples`` (default 10) per mode and shrinks
a failure to the smallest failing one.
"""
import numpy as np
from hypothesis import strategies as st

from fastnn.layers import Layer
from fastnn.testing import strategies as fst


class Scale(Layer):
    """y = x * weight + bias, per feature (last axis)."""

    def __init__(self, features):
        super().__init__()
        self.features = features
        self.weight = self.add_parameter("weight", np.ones(features))
        self.bias = self.add_parameter("bias", np.zeros(features))

    def config(self):
        return {"features": self.features}

    def forward(self, x, training=True):
        self.x = self.as_input(x)
        return self.x * self.weight.data + self.bias.data

    def backward(self, dy):
        self.weight.grad += (dy * self.x).reshape(-1, self.features).sum(axis=0)
        self.bias.grad += dy.reshape(-1, self.features).sum(axis=0)
        return dy * self.weight.data


def scale():
    """A Scale(3) with random weights and a (4, 3) input."""
    rng = np.random.default_rng(0)
    layer = Scale(3)
    layer.weight.data[...] = rng.uniform(0.5, 1.5, 3)   # not all ones: a dx missing the weight shows
    layer.bias.data[...] = rng.standard_normal(3)
    return layer, rng.standard_normal((4, 3))


@st.composite
def scales(draw):
    """(Scale, input) pairs: 1-6 features, inputs (N, features) or (N, M, features)."""
    cfg = draw(fst.dense_configs(max_leading_dims=2))
    layer = Scale(cfg["in_features"])
    layer.weight.data[...] = draw(fst.arrays_for((cfg["in_features"],)))
    layer.bias.data[...] = draw(fst.arrays_for((cfg["in_features"],)))
    return layer, draw(fst.arrays_for(cfg["input_shape"]))
