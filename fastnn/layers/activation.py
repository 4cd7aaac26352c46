"""Activation layers: ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Identity (any input shape)."""
import math

import numpy as np

from .. import _core
from .base import Layer


class _Elementwise(Layer):
    """y = f(x) elementwise; backward needs either the input (``saves = "x"``) or the output."""

    saves = "x"

    def __init__(self):
        super().__init__()
        self.saved = None   # x or y of the last forward, as ``saves`` says

    def forward(self, x, training=True):
        x = self.as_input(x)
        out = np.empty(x.shape, x.dtype)  # x is C-contiguous: empty_like's layout, less overhead
        self._forward(x, out)
        self.saved = x if self.saves == "x" else out
        return out

    def backward(self, dy):
        self.check_forwarded(self.saved)
        dy = self.as_input(dy, "dy")
        if dy.shape != self.saved.shape:
            raise self.shape_error(self.saved.shape, dy.shape, "dy")
        dx = np.empty(dy.shape, dy.dtype)
        self._backward(self.saved, dy, dx)
        return dx

    def _on_dtype_change(self):
        self.saved = None


def relu_fusion(following):
    """``({}, False)`` for a ReLU, ``({"negative_slope": s}, False)`` for a LeakyReLU of slope
    s >= 0, else None: the ``activation_fusion`` answer of a layer that can apply either in its
    own pass (exact types: a subclass may change the arithmetic)."""
    if type(following) is ReLU:
        return {}, False
    if type(following) is LeakyReLU and following.negative_slope >= 0:
        return {"negative_slope": following.negative_slope}, False
    return None


class _MasksWithOutput(_Elementwise):
    def fused_output(self, y):
        # the backward may mask with the output: for a slope >= 0 the output is > 0 exactly
        # where the input is
        self.saved = y


class ReLU(_MasksWithOutput):
    r"""Rectified linear unit: :math:`y = \max(0, x)`; the gradient is 0 where x <= 0.

    Shapes: input any shape; output the same shape. State: none.

    Example::

        act = ReLU()
        y = act.forward(np.array([[-1.0, 2.0]], np.float32))   # [[0, 2]]
        dx = act.backward(np.ones_like(y))                    # [[0, 1]]
    """

    def _forward(self, x, out):
        _core.relu_forward(x, out)

    def _backward(self, x, dy, dx):
        _core.relu_backward(x, dy, dx)


class LeakyReLU(_MasksWithOutput):
    r"""Leaky ReLU: :math:`y = x` for x > 0, :math:`y = \text{negative\_slope} \cdot x` otherwise.

    Args:
        negative_slope: slope for x <= 0 (default 0.01, as PyTorch).

    Shapes: input any shape; output the same shape. State: none.

    Example::

        act = LeakyReLU(0.2)
        y = act.forward(np.array([[-1.0, 2.0]], np.float32))   # [[-0.2, 2]]
        dx = act.backward(np.ones_like(y))                    # [[0.2, 1]]
    """

    def __init__(self, negative_slope=0.01):
        super().__init__()
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float, np.floating)) \
                or not math.isfinite(negative_slope):
            raise ValueError(f"LeakyReLU: negative_slope must be a finite number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def config(self):
        return {"negative_slope": self.negative_slope}

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"

    def _forward(self, x, out):
        _core.leaky_relu_forward(x, self.negative_slope, out)

    def _backward(self, x, dy, dx):
        _core.leaky_relu_backward(x, dy, self.negative_slope, dx)


class GELU(_Elementwise):
    r"""Gaussian error linear unit: :math:`y = x \Phi(x)` with :math:`\Phi` the standard normal
    CDF, as ``torch.nn.GELU``; ``approximate="tanh"`` uses
    :math:`y = \frac{x}{2}(1 + \tanh(\sqrt{2/\pi}(x + 0.044715 x^3)))`.

    Shapes: input any shape; output the same shape. State: none.

    Example::

        act = GELU()
        y = act.forward(np.array([[-1.0, 0.0, 1.0]], np.float32))   # [[-0.1587, 0, 0.8413]]
    """

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def config(self):
        return {"approximate": self.approximate}

    def _forward(self, x, out):
        _core.gelu_forward(x, out, self.approximate)

    def _backward(self, x, dy, dx):
        _core.gelu_backward(x, dy, dx, self.approximate)


class SiLU(_Elementwise):
    r"""Sigmoid linear unit (swish): :math:`y = x \sigma(x)`, as ``torch.nn.SiLU``.

    Shapes: input any shape; output the same shape. State: none.
    """

    def _forward(self, x, out):
        _core.silu_forward(x, out)

    def _backward(self, x, dy, dx):
        _core.silu_backward(x, dy, dx)


class ELU(_Elementwise):
    r"""Exponential linear unit: :math:`y = x` for x > 0, :math:`\alpha (e^x - 1)` otherwise, as
    ``torch.nn.ELU``.

    Args:
        alpha: the value approached for x -> -inf is -alpha (default 1.0).

    Shapes: input any shape; output the same shape. State: none.
    """

    def __init__(self, alpha=1.0):
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) \
                or not math.isfinite(alpha):
            raise ValueError(f"ELU: alpha must be a finite number, got {alpha!r}")
        self.alpha = float(alpha)

    def config(self):
        return {"alpha": self.alpha}

    def _forward(self, x, out):
        _core.elu_forward(x, self.alpha, out)

    def _backward(self, x, dy, dx):
        _core.elu_backward(x, dy, self.alpha, dx)


class _SavesOutput(_Elementwise):
    saves = "y"

    def fused_output(self, y):
        # the layer before ran this activation in its epilogue: y is what forward returns
        self.saved = y


class Sigmoid(_SavesOutput):
    r"""Logistic function: :math:`y = 1 / (1 + e^{-x})`, stable for large :math:`|x|`;
    :math:`dx = dy \cdot y (1 - y)`.

    Shapes: input any shape; output the same shape. State: none.

    Example::

        act = Sigmoid()
        y = act.forward(np.zeros((2, 3), np.float32))   # all 0.5
        dx = act.backward(np.ones_like(y))             # all 0.25
    """

    def _forward(self, x, out):
        _core.sigmoid_forward(x, out)

    def _backward(self, y, dy, dx):
        _core.sigmoid_backward(y, dy, dx)


class Tanh(_SavesOutput):
    r"""Hyperbolic tangent: :math:`y = \tanh(x)`; :math:`dx = dy \cdot (1 - y^2)`.

    Shapes: input any shape; output the same shape. State: none.

    Example::

        act = Tanh()
        y = act.forward(np.zeros((2, 3), np.float32))   # all 0
        dx = act.backward(np.ones_like(y))             # all 1
    """

    def _forward(self, x, out):
        _core.tanh_forward(x, out)

    def _backward(self, y, dy, dx):
        _core.tanh_backward(y, dy, dx)


class Softmax(Layer):
    r"""Softmax along one axis: :math:`y_i = e^{x_i - \max x} / \sum_j e^{x_j - \max x}`;
    :math:`dx = y \odot (dy - \sum_j dy_j y_j)`.

    For a classifier's training, prefer raw logits with ``losses.CrossEntropy`` (softmax fused
    into the loss); this layer is for probabilities inside a model.

    Args:
        axis: the axis normalised over (default -1, the last).

    Shapes: input any shape with ``axis`` in range; output the same shape. State: none.

    Example::

        sm = Softmax()
        y = sm.forward(np.zeros((2, 4), np.float32))   # all 0.25
        dx = sm.backward(np.ones_like(y))             # all 0: the rows sum to a constant
    """

    def __init__(self, axis=-1):
        super().__init__()
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"Softmax: axis must be an int, got {axis!r}")
        self.axis = int(axis)
        self.y = None   # the output, with the softmax axis moved last, as (M, C)

    def config(self):
        return {"axis": self.axis}

    def extra_repr(self):
        return f"axis={self.axis}"

    def _rows(self, a):
        """``a`` with the softmax axis moved last, as a C-contiguous (M, C) matrix."""
        moved = np.moveaxis(a, self._axis, -1)
        self._moved_shape = moved.shape
        # rows counted explicitly: reshape(-1, 0) is ambiguous for an empty softmax axis
        return np.ascontiguousarray(moved).reshape(math.prod(moved.shape[:-1]), moved.shape[-1])

    def _unrows(self, m):
        return np.ascontiguousarray(np.moveaxis(m.reshape(self._moved_shape), -1, self._axis))

    def forward(self, x, training=True):
        x = self.as_input(x)
        if not -x.ndim <= self.axis < x.ndim:
            raise self.shape_error(f"an array with axis {self.axis}", x.shape)
        self._axis = self.axis % x.ndim
        self.x_shape = x.shape
        rows = self._rows(x)
        self.y = np.empty_like(rows)
        if rows.size:  # an empty batch or an empty softmax axis has an empty softmax, as in torch
            _core.softmax_forward(rows, self.y)
        return self._unrows(self.y)

    def backward(self, dy):
        self.check_forwarded(self.y)
        dy = self.as_input(dy, "dy")
        if dy.shape != self.x_shape:
            raise self.shape_error(self.x_shape, dy.shape, "dy")
        rows = self._rows(dy)
        dx = np.empty_like(rows)
        if rows.size:
            _core.softmax_backward(self.y, rows, dx)
        return self._unrows(dx)

    def _on_dtype_change(self):
        self.y = None


class Identity(Layer):
    r"""y = x, dx = dy: a placeholder (e.g. an optional block switched off).

    Shapes: input any shape; output the same array (cast to the layer dtype). State: none.

    Example::

        layer = Identity()
        y = layer.forward(np.ones((2, 3), np.float32))   # the input itself
        dx = layer.backward(np.ones_like(y))
    """

    def forward(self, x, training=True):
        x = self.as_input(x)
        self.x_shape = x.shape
        return x

    def backward(self, dy):
        dy = self.as_input(dy, "dy")
        expected = getattr(self, "x_shape", None)
        if expected is not None and dy.shape != expected:
            raise self.shape_error(expected, dy.shape, "dy")
        return dy


class Step(_Elementwise):
    r"""The perceptron's step function: :math:`y = 1` where x > 0, else 0.

    Its derivative is 0 almost everywhere (and undefined at 0), so no gradient flows through it:
    ``backward`` raises. Use it for a perceptron whose weights are set by hand or by the
    perceptron rule, not for a network trained by backpropagation (use Sigmoid or ReLU there).

    Shapes: input any shape; output the same shape. State: none.

    Example::

        step = Step()
        y = step.forward(np.array([[-1.0, 0.0, 2.0]], np.float32))   # [[0, 0, 1]]
    """

    def _forward(self, x, out):
        np.greater(x, 0, out=out)  # a comparison; bool -> float in the out buffer

    def backward(self, dy):
        raise RuntimeError(f"{self.describe()}: the step function has no useful gradient (0 "
                           f"almost everywhere, undefined at 0), so backward cannot train through "
                           f"it; use Sigmoid or ReLU in a network trained by backpropagation")
