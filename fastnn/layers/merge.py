"""Merge layers for graph models: ``Add``, ``Multiply``, ``Concatenate``. Each takes a list of
arrays and its ``backward`` returns a list, one gradient per input."""
import numpy as np

from .. import _core
from .activation import relu_fusion
from .base import Layer


class _Merge(Layer):
    minimum = 2

    def __init__(self):
        super().__init__()
        self.shapes = None

    def _inputs(self, xs):
        if not isinstance(xs, (list, tuple)) or len(xs) < self.minimum:
            raise TypeError(f"{self.describe()}: expected a list of at least {self.minimum} arrays, "
                            f"got {type(xs).__name__}" + (f" of {len(xs)}" if isinstance(xs, (list, tuple)) else ""))
        xs = [self.as_input(x, f"input {i}") for i, x in enumerate(xs)]
        self.shapes = [x.shape for x in xs]
        return xs

    def _same_shapes(self, xs):
        if any(x.shape != xs[0].shape for x in xs):
            raise ValueError(f"{self.describe()}: the inputs must have one shape, got "
                             f"{[x.shape for x in xs]}")

    def _dy(self, dy, shape):
        self.check_forwarded(self.shapes)
        dy = self.as_input(dy, "dy")
        if dy.shape != shape:
            raise self.shape_error(shape, dy.shape, "dy")
        return dy

    def _on_dtype_change(self):
        self.shapes = None
        self.__dict__.pop("xs", None)


class Add(_Merge):
    """The elementwise sum of its inputs (all of one shape), as ``x0 + x1 + ...``.

    A ReLU (or LeakyReLU of slope >= 0) fed only by an Add runs in the Add's pass, and its
    backward in the Add's (``activation_fusion``): a graph model computes a residual block's
    ``relu(f(x) + x)`` and its gradient in one pass each.

    Example::

        y = Add()([a, b])            # in a graph model: L.Add()([conv_path, projection])
        da, db = Add().backward(dy)  # each input's gradient is dy
    """

    def __init__(self):
        super().__init__()
        self.relu_out = None    # the output, when forward_relu applied a ReLU to the sum
        self.relu_slope = None  # and that ReLU's negative slope, when it was a leaky one

    def forward(self, xs, training=True):
        xs = self._inputs(xs)
        self._same_shapes(xs)
        out = np.add(xs[0], xs[1])
        for x in xs[2:]:
            np.add(out, x, out=out)
        self.relu_out = self.relu_slope = None
        return out

    def activation_fusion(self, following):
        """A ReLU (or LeakyReLU of slope >= 0) runs in this layer's pass, and its backward is
        folded into this layer's."""
        fusion = relu_fusion(following)
        return None if fusion is None else (fusion[0], True)

    def forward_relu(self, xs, training=True, negative_slope=None):
        """``relu(self.forward(xs))`` in one pass (with ``negative_slope`` >= 0, a leaky ReLU's),
        bitwise the same; the next ``backward`` takes the gradient of that ReLU's output."""
        xs = self._inputs(xs)
        self._same_shapes(xs)
        out = np.empty_like(xs[0])
        first = xs[0]
        if len(xs) > 2:  # the sum in the unfused order; the last add carries the ReLU
            first = np.add(xs[0], xs[1], out=out)
            for x in xs[2:-1]:
                np.add(out, x, out=out)
        _core.add_relu_forward(first, xs[-1], out, negative_slope)
        self.relu_out, self.relu_slope = out, negative_slope
        return out

    def backward(self, dy):
        dy = self._dy(dy, self.shapes[0] if self.shapes else None)
        if self.relu_out is None:
            # each input gets its own array: a layer upstream may treat its dy as scratch space
            return [dy] + [dy.copy() for _ in self.shapes[1:]]
        grads = [np.empty_like(dy) for _ in self.shapes]
        _core.add_relu_backward(self.relu_out, dy, grads[0], grads[1], self.relu_slope)
        for g in grads[2:]:
            np.copyto(g, grads[0])
        return grads

    def _on_dtype_change(self):
        super()._on_dtype_change()
        self.relu_out = self.relu_slope = None


class Multiply(_Merge):
    """The elementwise product of its inputs (all of one shape); the gradient of input k is
    ``dy`` times the product of the other inputs."""

    def forward(self, xs, training=True):
        xs = self._inputs(xs)
        self._same_shapes(xs)
        out = xs[0].copy()
        for x in xs[1:]:
            np.multiply(out, x, out=out)
        self.xs = xs
        return out

    def backward(self, dy):
        dy = self._dy(dy, self.shapes[0] if self.shapes else None)
        grads = []
        for k in range(len(self.xs)):
            g = dy.copy()
            for j, x in enumerate(self.xs):
                if j != k:
                    np.multiply(g, x, out=g)
            grads.append(g)
        return grads


class Concatenate(_Merge):
    """Its inputs joined along ``axis`` (which counts the batch axis, as ``torch.cat``; default 1,
    the channels of NCHW); the other axes must agree. The gradient is ``dy`` split back.

    Args:
        axis: the axis to join along (negative counts from the end; not the batch axis 0).
    """

    minimum = 1

    def __init__(self, axis=1):
        super().__init__()
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"Concatenate: axis must be an int, got {axis!r}")
        self.axis = int(axis)

    def config(self):
        return {"axis": self.axis}

    def _axis(self, ndim):
        axis = self.axis + ndim if self.axis < 0 else self.axis
        if not 1 <= axis < ndim:
            raise ValueError(f"{self.describe()}: axis {self.axis} is not a non-batch axis of "
                             f"{ndim}-d inputs")
        return axis

    def forward(self, xs, training=True):
        xs = self._inputs(xs)
        axis = self._axis(xs[0].ndim)
        rest = [x.shape[:axis] + x.shape[axis + 1:] for x in xs]
        if any(x.ndim != xs[0].ndim for x in xs) or any(r != rest[0] for r in rest):
            raise ValueError(f"{self.describe()}: the inputs must agree on every axis but "
                             f"{self.axis}, got {[x.shape for x in xs]}")
        return np.concatenate(xs, axis=axis)

    def backward(self, dy):
        self.check_forwarded(self.shapes)
        axis = self._axis(len(self.shapes[0]))
        shape = list(self.shapes[0])
        shape[axis] = sum(s[axis] for s in self.shapes)
        dy = self._dy(dy, tuple(shape))
        cuts = np.cumsum([s[axis] for s in self.shapes])[:-1]
        return [np.ascontiguousarray(part) for part in np.split(dy, cuts, axis=axis)]
