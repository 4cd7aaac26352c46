"""Flatten and Reshape: change the shape of each sample, keeping the batch axis."""
import math

import numpy as np

from .base import Layer


class _Reshaping(Layer):
    def _target(self, x_shape):
        raise NotImplementedError

    def forward(self, x, training=True):
        x = self.as_input(x)
        if x.ndim < 1:
            raise self.shape_error("(N, ...)", x.shape)
        self.x_shape = x.shape
        return x.reshape(self._target(x.shape))

    def backward(self, dy):
        self.check_forwarded(getattr(self, "x_shape", None))
        dy = self.as_input(dy, "dy")
        expected = self._target(self.x_shape)
        if dy.shape != expected:
            raise self.shape_error(expected, dy.shape, "dy")
        return dy.reshape(self.x_shape)

    def _on_dtype_change(self):
        self.x_shape = None


class Flatten(_Reshaping):
    r"""Flattens every axis but the first: (N, d1, ..., dk) -> (N, d1 * ... * dk), as
    ``torch.nn.Flatten()``.

    Shapes: input ``(N, *)`` of rank >= 2; output ``(N, prod(*))``. The output is a view of the
    input.
    State: none.

    Example::

        flat = Flatten()
        y = flat.forward(np.zeros((8, 16, 5, 5), np.float32))   # (8, 400)
        dx = flat.backward(np.ones_like(y))                     # (8, 16, 5, 5)
    """

    def _target(self, x_shape):
        if len(x_shape) < 2:
            raise self.shape_error("(N, *) with rank >= 2", x_shape)
        return (x_shape[0], math.prod(x_shape[1:]))


class Reshape(_Reshaping):
    r"""Reshapes each sample: ``(N, *) -> (N, *shape)``, as ``x.reshape(N, *shape)``.

    Args:
        shape: the per-sample output shape (batch axis excluded); one entry may be -1, inferred
            from the size.

    Shapes: input ``(N, *)`` with ``prod(*)`` equal to ``prod(shape)``; output ``(N, *shape)``.
    The output is a view of the input. State: none.

    Example::

        rs = Reshape((64, 7, 7))
        y = rs.forward(np.zeros((8, 3136), np.float32))   # (8, 64, 7, 7)
        dx = rs.backward(np.ones_like(y))                 # (8, 3136)
    """

    def __init__(self, shape):
        super().__init__()
        if isinstance(shape, (int, np.integer)):
            shape = (shape,)
        entries = () if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__") else tuple(shape)
        if len(entries) == 0 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_))
                                        for s in entries):
            raise TypeError(f"Reshape: shape must be a non-empty tuple of ints, got {shape!r}")
        shape = tuple(int(s) for s in entries)
        if sum(s == -1 for s in shape) > 1 or any(s < -1 or s == 0 for s in shape):
            raise ValueError(f"Reshape: shape must hold positive ints and at most one -1, got {shape}")
        self.shape = shape

    def config(self):
        return {"shape": list(self.shape)}

    def extra_repr(self):
        return f"shape={self.shape}"

    def _target(self, x_shape):
        size = math.prod(x_shape[1:])
        known = math.prod(s for s in self.shape if s != -1)
        if -1 in self.shape:
            if size % known:
                raise self.shape_error(f"(N, *) with a per-sample size divisible by {known}", x_shape)
            per_sample = tuple(size // known if s == -1 else s for s in self.shape)
        else:
            if size != known:
                raise self.shape_error(f"(N, *) with {known} elements per sample", x_shape)
            per_sample = self.shape
        return (x_shape[0], *per_sample)
