"""Max and average pooling (2-D and 1-D), adaptive average pooling, nearest-neighbour
upsampling (NCHW; 1-D on (N, C, L))."""
import numpy as np

from .. import _core
from .._core import check_pair, conv_out_size
from .activation import ReLU
from .base import Layer, drop_workspaces, workspace


def _fmt(pair):
    return pair[0] if pair[0] == pair[1] else pair


class _Pool2D(Layer):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = check_pair(name, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else check_pair(name, "stride", stride, 1)
        self.padding = check_pair(name, "padding", padding, 0)
        # PyTorch's rule: a window must always overlap the image
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{name}: padding {self.padding} must be at most half the kernel size "
                             f"{self.kernel_size}")
        self.x_shape = None
        self.y_shape = None

    def config(self):
        return {"kernel_size": _fmt(self.kernel_size), "stride": _fmt(self.stride),
                "padding": _fmt(self.padding)}

    def extra_repr(self):
        return (f"kernel_size={_fmt(self.kernel_size)}, stride={_fmt(self.stride)}, "
                f"padding={_fmt(self.padding)}")

    def _image(self, x):
        x = self.as_input(x)
        if x.ndim != 4:
            raise self.shape_error("(N, C, H, W)", x.shape)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"{self.describe()}: input {x.shape} is too small for the kernel: "
                             f"padded size {(h + 2 * ph, w + 2 * pw)} < kernel {(kh, kw)}")
        self.x_shape = x.shape
        self.y_shape = (n, c, conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw))
        return x

    def _check_dy(self, dy):
        return self.checked_dy(dy, self.y_shape if self.x_shape is not None else None)

    def _on_dtype_change(self):
        self.x_shape = None
        drop_workspaces(self)


class MaxPool2D(_Pool2D):
    r"""Maximum over each window: :math:`y[n, c, i, j] = \max_{a, b} x[n, c, s_h i + a - p_h,
    s_w j + b - p_w]`, padding counting as :math:`-\infty`, as ``torch.nn.MaxPool2d``.

    Args:
        kernel_size: window size, an int or ``(h, w)``.
        stride: window step; default ``kernel_size``.
        padding: implicit -inf padding on both sides, at most half the kernel size.

    Shapes:
        input (N, C, H, W); output (N, C, OH, OW), OH = (H + 2*padding - kh) // stride + 1.
        The gradient flows to the first maximum of each window (as PyTorch).

    State: none (the argmax of the last forward is an internal buffer reused between steps).

    Example::

        pool = MaxPool2D(2)
        y = pool.forward(np.random.rand(8, 6, 28, 28).astype(np.float32))   # (8, 6, 14, 14)
        dx = pool.backward(np.ones_like(y))
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__(kernel_size, stride, padding)
        self._y = None   # the last forward's output: the ReLU mask of backward_through_activation

    def forward(self, x, training=True):
        x = self._image(x)
        out = np.empty(self.y_shape, dtype=self._dtype)
        self.argmax = workspace(self, "argmax", self.y_shape, np.int64)
        if x.size:   # an empty batch has nothing to pool (and no planes to index)
            _core.maxpool2d_forward(x, self.kernel_size, self.stride, self.padding, out, self.argmax)
        self._y = out
        return out

    def backward(self, dy):
        dy = self._check_dy(dy)
        dx = np.empty(self.x_shape, dtype=self._dtype)
        if dx.size:
            _core.maxpool2d_backward(dy, self.argmax, dx)
        return dx

    def _on_dtype_change(self):
        super()._on_dtype_change()
        self._y = None

    def takes_activation_backward(self, before):
        """Whether :meth:`backward_through_activation` can run the backward of ``before``, the
        layer whose output is this one's input: a ReLU (exact type)."""
        return (type(before) is ReLU and type(self).backward is MaxPool2D.backward
                and type(self).forward is MaxPool2D.forward)

    def backward_through_activation(self, dy, before):
        """``before.backward(self.backward(dy))`` for a ReLU ``before``, the same bits, with the
        mask applied to dy on the pooled grid (kh*kw times fewer elements than the ReLU's own
        pass): the gradient reaches only argmax positions, where the ReLU's output is this
        layer's output y, so "ReLU output > 0" there is "y > 0" (NaN: neither), and the
        windows sharing an argmax are all kept or all dropped."""
        y = self._y
        if before.saved is None or y is None or y.shape != dy.shape or before.saved.shape != self.x_shape:
            return before.backward(self.backward(dy))
        dy = self._check_dy(dy)
        masked = np.empty(dy.shape, dtype=self._dtype)
        _core.relu_backward(y, dy, masked)
        return self.backward(masked)


class AvgPool2D(_Pool2D):
    r"""Mean over each window: :math:`y[n, c, i, j] = \frac{1}{k_h k_w} \sum_{a, b}
    x[n, c, s_h i + a - p_h, s_w j + b - p_w]`, zero padding included in the count
    (``count_include_pad=True``, PyTorch's default).

    Args:
        kernel_size: window size, an int or ``(h, w)``.
        stride: window step; default ``kernel_size``.
        padding: implicit zero padding on both sides, at most half the kernel size.

    Shapes:
        input (N, C, H, W); output (N, C, OH, OW), OH = (H + 2*padding - kh) // stride + 1.

    State: none.

    Example::

        pool = AvgPool2D(2)
        y = pool.forward(np.ones((8, 6, 28, 28), np.float32))   # (8, 6, 14, 14)
        dx = pool.backward(np.ones_like(y))
    """

    def forward(self, x, training=True):
        x = self._image(x)
        out = np.empty(self.y_shape, dtype=self._dtype)
        _core.avgpool2d_forward(x, self.kernel_size, self.stride, self.padding, out)
        return out

    def backward(self, dy):
        dy = self._check_dy(dy)
        dx = np.empty(self.x_shape, dtype=self._dtype)
        _core.avgpool2d_backward(dy, self.kernel_size, self.stride, self.padding, dx)
        return dx


class _Pool1D(_Pool2D):
    """A 1-D pooling over (N, C, L), run as the 2-D pooling of a (N, C, 1, L) view with a
    (1, kernel_size) window: the same kernels, the same results."""

    def __init__(self, kernel_size, stride=None, padding=0):
        name = type(self).__name__
        k = _int_at_least(name, "kernel_size", kernel_size, 1)
        s = k if stride is None else _int_at_least(name, "stride", stride, 1)
        p = _int_at_least(name, "padding", padding, 0)
        if p > k // 2:   # PyTorch's rule: a window must always overlap the sequence
            raise ValueError(f"{name}: padding {p} must be at most half the kernel size {k}")
        super().__init__((1, k), (1, s), (0, p))

    def config(self):
        return {"kernel_size": self.kernel_size[1], "stride": self.stride[1],
                "padding": self.padding[1]}

    def extra_repr(self):
        return f"kernel_size={self.kernel_size[1]}, stride={self.stride[1]}, padding={self.padding[1]}"

    def _image(self, x):
        x = self.as_input(x)
        if x.ndim != 3:
            raise self.shape_error("(N, C, L)", x.shape)
        n, c, length = x.shape
        k, s, p = self.kernel_size[1], self.stride[1], self.padding[1]
        if length + 2 * p < k:
            raise ValueError(f"{self.describe()}: input {x.shape} is too small for the kernel: "
                             f"padded length {length + 2 * p} < kernel {k}")
        self.x_shape = x.shape
        self.y_shape = (n, c, conv_out_size(length, k, s, p))
        return x.reshape(n, c, 1, length)

    def forward(self, x, training=True):
        x4 = self._image(x)
        n, c, ol = self.y_shape
        out = np.empty((n, c, 1, ol), dtype=self._dtype)
        self._forward4(x4, out)
        return out.reshape(self.y_shape)

    def backward(self, dy):
        dy = self._check_dy(dy)
        n, c, length = self.x_shape
        dx = np.empty((n, c, 1, length), dtype=self._dtype)
        self._backward4(dy.reshape(dy.shape[0], dy.shape[1], 1, dy.shape[2]), dx)
        return dx.reshape(self.x_shape)


def _int_at_least(where, name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class MaxPool1D(_Pool1D):
    r"""Maximum over each window of a sequence: :math:`y[n, c, i] = \max_a x[n, c, s i + a - p]`,
    padding counting as :math:`-\infty`, as ``torch.nn.MaxPool1d``.

    Args:
        kernel_size: window length (int).
        stride: window step; default ``kernel_size``.
        padding: implicit -inf padding on both ends, at most half the kernel size.

    Shapes:
        input (N, C, L); output (N, C, OL), OL = (L + 2*padding - kernel_size) // stride + 1.
        The gradient flows to the first maximum of each window (as PyTorch).

    State: none.

    Example::

        pool = MaxPool1D(2)
        y = pool.forward(np.random.rand(8, 6, 100).astype(np.float32))   # (8, 6, 50)
        dx = pool.backward(np.ones_like(y))
    """

    def _forward4(self, x4, out4):
        self.argmax = workspace(self, "argmax", out4.shape, np.int64)
        if x4.size:
            _core.maxpool2d_forward(x4, self.kernel_size, self.stride, self.padding, out4,
                                    self.argmax)

    def _backward4(self, dy4, dx4):
        if dx4.size:
            _core.maxpool2d_backward(dy4, self.argmax, dx4)


class AvgPool1D(_Pool1D):
    r"""Mean over each window of a sequence: :math:`y[n, c, i] = \frac{1}{k} \sum_a
    x[n, c, s i + a - p]`, zero padding included in the count (``count_include_pad=True``), as
    ``torch.nn.AvgPool1d``.

    Args:
        kernel_size: window length (int).
        stride: window step; default ``kernel_size``.
        padding: implicit zero padding on both ends, at most half the kernel size.

    Shapes:
        input (N, C, L); output (N, C, OL), OL = (L + 2*padding - kernel_size) // stride + 1.

    State: none.

    Example::

        pool = AvgPool1D(4, stride=2)
        y = pool.forward(np.ones((8, 6, 100), np.float32))   # (8, 6, 49)
        dx = pool.backward(np.ones_like(y))
    """

    def _forward4(self, x4, out4):
        _core.avgpool2d_forward(x4, self.kernel_size, self.stride, self.padding, out4)

    def _backward4(self, dy4, dx4):
        _core.avgpool2d_backward(dy4, self.kernel_size, self.stride, self.padding, dx4)


class Upsample2D(Layer):
    r"""Nearest-neighbour upsampling by an integer factor: :math:`y[n, c, i, j] =
    x[n, c, \lfloor i/s \rfloor, \lfloor j/s \rfloor]`, as ``torch.nn.Upsample(mode="nearest")``.

    Args:
        scale_factor: integer factor s >= 1 applied to both H and W (default 2).

    Shapes:
        input (N, C, H, W); output (N, C, s*H, s*W). The gradient of each input pixel is the
        sum over its s x s copies.

    State: none.

    Example::

        up = Upsample2D(2)
        y = up.forward(np.ones((8, 16, 7, 7), np.float32))   # (8, 16, 14, 14)
        dx = up.backward(np.ones_like(y))                    # every entry 4
    """

    def __init__(self, scale_factor=2):
        super().__init__()
        s = scale_factor
        if isinstance(s, float) and s.is_integer():
            s = int(s)
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ValueError(f"Upsample2D: scale_factor must be an integer >= 1, got {scale_factor!r}")
        self.scale_factor = int(s)
        self.x_shape = None
        self.y_shape = None

    def config(self):
        return {"scale_factor": self.scale_factor}

    def extra_repr(self):
        return f"scale_factor={self.scale_factor}"

    def forward(self, x, training=True):
        x = self.as_input(x)
        if x.ndim != 4:
            raise self.shape_error("(N, C, H, W)", x.shape)
        s = self.scale_factor
        n, c, h, w = x.shape
        self.x_shape, self.y_shape = x.shape, (n, c, h * s, w * s)
        out = np.empty(self.y_shape, dtype=self._dtype)
        _core.upsample_nearest2d_forward(x, s, out)
        return out

    def backward(self, dy):
        dy = self.checked_dy(dy, self.y_shape if self.x_shape is not None else None)
        dx = np.empty(self.x_shape, dtype=self._dtype)
        _core.upsample_nearest2d_backward(dy, self.scale_factor, dx)
        return dx

    def _on_dtype_change(self):
        self.x_shape = None


class AdaptiveAvgPool2D(Layer):
    r"""Average pooling to a fixed output size, as ``torch.nn.AdaptiveAvgPool2d``: output cell
    (i, j) is the mean of rows ``[floor(i H / OH), ceil((i+1) H / OH))`` and the likewise
    columns. ``AdaptiveAvgPool2D(1)`` is global average pooling.

    Args:
        output_size: an int or an ``(OH, OW)`` pair (``None`` in the pair keeps that size).

    Shapes: input (N, C, H, W); output (N, C, OH, OW). State: none.
    """

    def __init__(self, output_size):
        super().__init__()
        pair = (output_size, output_size) if not isinstance(output_size, (tuple, list)) \
            else tuple(output_size)
        if len(pair) != 2 or any(s is not None and (isinstance(s, bool) or not isinstance(
                s, (int, np.integer)) or s < 1) for s in pair):
            raise ValueError(f"AdaptiveAvgPool2D: output_size must be a positive int or a pair "
                             f"of them (None keeps a size), got {output_size!r}")
        self.output_size = tuple(None if s is None else int(s) for s in pair)
        self.x_shape = None

    def config(self):
        oh, ow = self.output_size
        return {"output_size": oh if oh == ow else [oh, ow]}

    def forward(self, x, training=True):
        x = self.as_input(x)
        if x.ndim != 4 or min(x.shape[2:], default=0) < 1:
            raise self.shape_error("(N, C, H, W) with H, W >= 1", x.shape)
        oh, ow = (s if s is not None else x.shape[2 + k] for k, s in enumerate(self.output_size))
        out = np.empty((*x.shape[:2], oh, ow), dtype=self._dtype)
        _core.adaptive_avgpool2d_forward(x, out)
        self.x_shape, self.y_shape = x.shape, out.shape
        return out

    def backward(self, dy):
        dy = self.checked_dy(dy, self.y_shape if self.x_shape is not None else None)
        dx = np.empty(self.x_shape, dtype=self._dtype)
        _core.adaptive_avgpool2d_backward(dy, dx)
        return dx

    def _on_dtype_change(self):
        self.x_shape = None
