"""Inverted dropout."""
import numpy as np

from .._random import rng
from .base import Layer, drop_workspaces, workspace


class Dropout(Layer):
    r"""Inverted dropout: in training :math:`y = x \odot m / (1 - p)` with
    :math:`m_i \sim \mathrm{Bernoulli}(1 - p)` drawn anew each forward; in inference
    (``training=False``) :math:`y = x`. The expectation of y equals x in both modes.

    As PyTorch: p = 0 is the identity, p = 1 zeroes everything (and its gradient). The mask
    comes from fastnn's generator, so ``fastnn.seed(n)`` makes it reproducible.

    Args:
        p: probability of zeroing an element, in [0, 1] (default 0.5).

    Shapes: input any shape; output the same shape.

    State: none (the mask of the last forward is an internal buffer reused between steps).

    Example::

        drop = Dropout(0.5)
        y = drop.forward(np.ones((4, 8), np.float32))   # entries 0 or 2
        dx = drop.backward(np.ones_like(y))            # the same mask, scaled by 2
    """

    def __init__(self, p=0.5):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.mode = None    # how the last forward acted: "identity", "zero" or "mask"
        self.x_shape = None

    def config(self):
        return {"p": self.p}

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x, training=True):
        x = self.as_input(x)
        self.x_shape = x.shape
        if not training or self.p == 0.0:
            self.mode = "identity"
            return x
        if self.p == 1.0:
            self.mode = "zero"
            return np.zeros_like(x)
        self.mode = "mask"
        uniform = workspace(self, "uniform", x.shape, self._dtype)
        rng().random(out=uniform, dtype=self._dtype)
        self.keep = workspace(self, "keep", x.shape, np.bool_)
        np.greater_equal(uniform, self.p, out=self.keep)
        out = np.empty_like(x)
        np.multiply(x, self.keep, out=out)
        out *= 1.0 / (1.0 - self.p)
        return out

    def backward(self, dy):
        self.check_forwarded(self.mode)
        dy = self.as_input(dy, "dy")
        if dy.shape != self.x_shape:
            raise self.shape_error(self.x_shape, dy.shape, "dy")
        if self.mode == "identity":
            return dy
        if self.mode == "zero":
            return np.zeros_like(dy)
        dx = np.empty_like(dy)
        np.multiply(dy, self.keep, out=dx)
        dx *= 1.0 / (1.0 - self.p)
        return dx

    def _on_dtype_change(self):
        self.mode = None
        drop_workspaces(self)
