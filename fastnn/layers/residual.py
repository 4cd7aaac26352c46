"""Residual connection around an inner layer (or model)."""
import numpy as np

from .base import Layer


class Residual(Layer):
    r"""Skip connection: :math:`y = x + f(x)`, so :math:`dx = dy + f'(x)^T dy`.

    Args:
        inner: the layer f (any object with the layer interface and state, e.g. a Layer or a
            ``fastnn.Sequential``); its output must have the input's shape.

    Shapes: input any shape f accepts; output the same shape.

    State: the inner layer's, prefixed ``inner.`` (``inner.weight``, ``inner.0.bias``, ...),
    as a PyTorch module holding ``self.inner``.

    Example::

        block = Residual(Dense(64, 64))
        y = block.forward(np.zeros((8, 64), np.float32))    # x + Dense(x)
        dx = block.backward(np.ones_like(y))
    """

    def __init__(self, inner):
        super().__init__()
        needed = ("forward", "backward", "named_parameters", "_state_slots", "astype")
        missing = [a for a in needed if not hasattr(inner, a)]
        if missing:
            raise TypeError(f"Residual: inner must be a layer (missing {missing}), got "
                            f"{type(inner).__name__}")
        self.inner = inner
        self._dtype = np.dtype(getattr(inner, "dtype", np.float32))
        self.x_shape = None

    def children(self):
        return [("inner", self.inner)]

    def config(self):
        return {"inner": self.inner}

    def extra_repr(self):
        describe = getattr(self.inner, "describe", None)
        return describe() if describe is not None else repr(self.inner)

    def forward(self, x, training=True):
        x = self.as_input(x)
        fx = self.inner.forward(x, training=training)
        if not isinstance(fx, np.ndarray) or fx.shape != x.shape:
            raise ValueError(f"{self.describe()}: the inner layer must keep the shape: input "
                             f"{x.shape}, inner output {getattr(fx, 'shape', type(fx).__name__)}")
        self.x_shape = x.shape
        return np.add(x, fx, dtype=self._dtype)

    def backward(self, dy):
        self.check_forwarded(self.x_shape)
        dy = self.as_input(dy, "dy")
        if dy.shape != self.x_shape:
            raise self.shape_error(self.x_shape, dy.shape, "dy")
        return np.add(dy, self.inner.backward(dy), dtype=self._dtype)

    def _on_dtype_change(self):
        self.x_shape = None
