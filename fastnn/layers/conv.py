"""Convolutions: Conv2D and Conv1D (dilation, groups, "same" padding), ConvTranspose2D (NCHW)."""
import numpy as np

from .. import _core
from .._core import check_pair
from .activation import relu_fusion
from .base import check_positive_int
from .dense import WeightedLayer


def _fmt(pair):
    return pair[0] if pair[0] == pair[1] else pair


class _ConvBase(WeightedLayer):
    def _setup(self, in_channels, out_channels, kernel_size, stride, padding):
        name = type(self).__name__
        self.in_channels = check_positive_int(name, "in_channels", in_channels)
        self.out_channels = check_positive_int(name, "out_channels", out_channels)
        self.kernel_size = check_pair(name, "kernel_size", kernel_size, 1)
        self.stride = check_pair(name, "stride", stride, 1)
        self.padding = check_pair(name, "padding", padding, 0)
        self.x = None
        self.y_shape = None

    def extra_repr(self):
        text = (f"{self.in_channels}->{self.out_channels}, k={_fmt(self.kernel_size)}, "
                f"s={_fmt(self.stride)}, p={_fmt(self.padding)}")
        return text if self.bias is not None else text + ", bias=False"

    def _base_config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": _fmt(self.kernel_size), "stride": _fmt(self.stride),
                "padding": _fmt(self.padding)}

    def _image(self, x):
        x = self.as_input(x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise self.shape_error(f"(N, {self.in_channels}, H, W)", x.shape)
        return x

    def _check_dy(self, dy):
        return self.checked_dy(dy, self.y_shape if self.x is not None else None)

    def _on_dtype_change(self):
        self.x = None


def _conv_padding(where, padding, kernel_size, stride, dilation):
    """(padding as given: "same", "valid" or an (h, w) pair; (top, bottom, left, right))."""
    if isinstance(padding, str):
        if padding == "valid":
            return "valid", (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{where}: padding='same' needs stride 1, got stride {_fmt(stride)}")
            pads = []
            for k, d in zip(kernel_size, dilation):
                total = d * (k - 1)   # PyTorch's rule: the odd one out goes to the bottom/right
                pads += [total // 2, total - total // 2]
            return "same", tuple(pads)
        raise ValueError(f"{where}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    ph, pw = check_pair(where, "padding", padding, 0)
    return (ph, pw), (ph, ph, pw, pw)


class _GroupedConv(_ConvBase):
    """Conv2D and Conv1D (a Conv2D of unit height): the dense case runs on ``_conv.pyx``'s
    tuned kernels (with ReLU fusion), dilation, groups or asymmetric padding on
    ``_core.conv_general``; the planner (``_core.conv_plan``) decides which, once, in
    ``_setup_grouped``."""

    def _setup_grouped(self, in_channels, out_channels, kernel2, stride2, padding, dilation2,
                       groups, bias, weight_shape, weight_init, bias_init):
        name = type(self).__name__
        self.in_channels = check_positive_int(name, "in_channels", in_channels)
        self.out_channels = check_positive_int(name, "out_channels", out_channels)
        self.groups = check_positive_int(name, "groups", groups)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{name}: in_channels {self.in_channels} and out_channels "
                             f"{self.out_channels} must both be divisible by groups={self.groups}")
        self._stride2, self._dilation2 = stride2, dilation2
        self._kernel2 = kernel2
        self._padding_arg, self._pads = _conv_padding(name, padding, kernel2, stride2, dilation2)
        # the convolution planner picks the family: _conv's routes or conv_general's
        self._dense = _core.conv2d_family(dilation2, self.groups, self._pads) == "dense"
        self.x = None
        self.y_shape = None
        self._init_weight_and_bias(weight_shape, (self.out_channels,) if bias else None,
                                   weight_init, bias_init)

    def _out_hw(self, h, w):
        (kh, kw), (sh, sw), (dh, dw) = self._kernel2, self._stride2, self._dilation2
        pt, pb, pl, pr = self._pads
        eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        if h + pt + pb < eh or w + pl + pr < ew:
            return None
        return (h + pt + pb - eh) // sh + 1, (w + pl + pr - ew) // sw + 1

    def activation_fusion(self, following):
        return relu_fusion(following) if self._dense else None

    def forward(self, x, training=True):
        return self._forward(x)

    def forward_relu(self, x, training=True, negative_slope=None):
        """``relu(self.forward(x))`` (with ``negative_slope`` >= 0, a leaky ReLU's) applied to
        each chunk of the output as it is written (``Sequential`` fuses a dense convolution
        followed by a ReLU or LeakyReLU this way; the activation's backward runs on its own,
        or in the dx pass of a convolution after it: :meth:`backward_through_activation`)."""
        if not self._dense:
            raise TypeError(f"{self.describe()}: only a convolution without dilation, groups or "
                            f"asymmetric padding fuses its activation")
        return self._forward(x, relu=True, negative_slope=negative_slope)

    def _forward(self, x, relu=False, negative_slope=None):
        x = self._image(x)
        self.y_shape = self.output_shape(x.shape)
        out = np.empty(self.y_shape, dtype=self._dtype)
        x4, w4, out4 = self._as4(x), self._as4(self.weight.data), self._as4(out)
        if self._dense:
            _core.conv2d_forward(x4, w4, self._bias_data, out4, self._stride2,
                                 (self._pads[0], self._pads[2]), relu=relu,
                                 negative_slope=negative_slope)
        else:
            _core.conv2d_general_forward(x4, w4, self._bias_data, out4, self._stride2, self._pads,
                                         self._dilation2, self.groups)
        self.x = x
        return out

    def takes_activation_backward(self, before):
        """Whether :meth:`backward_through_activation` can run the backward of ``before``, the
        layer whose output is this one's input: a ReLU or a LeakyReLU of slope >= 0."""
        return (self._dense and relu_fusion(before) is not None
                and type(self).backward is _GroupedConv.backward)  # not an override's

    def backward_through_activation(self, dy, before):
        """``before.backward(self.backward(dy))`` for a ``before`` that
        :meth:`takes_activation_backward`: its mask is this layer's input (its output, > 0
        exactly where its input is), applied as dx is written where the route allows; the same
        bits."""
        kwargs, _ = relu_fusion(before)
        return self.backward(dy, relu=True, **kwargs)

    def backward(self, dy, input_grad=True, relu=False, negative_slope=None):
        """dx (None when ``input_grad`` is False: only the parameter gradients are computed);
        ``relu`` (and ``negative_slope``): dx through the backward of the ReLU (leaky ReLU)
        whose output is this layer's input (see :meth:`backward_through_activation`)."""
        dy = self._check_dy(dy)
        dx = np.empty_like(self.x) if input_grad else None
        x4, w4, dy4 = self._as4(self.x), self._as4(self.weight.data), self._as4(dy)
        dx4, dw4 = (None if dx is None else self._as4(dx)), self._as4(self.weight.grad)
        if self._dense:
            if relu:
                _core.conv2d_backward(x4, w4, dy4, dx4, dw4, self._bias_grad, self._stride2,
                                      (self._pads[0], self._pads[2]), relu=True,
                                      negative_slope=negative_slope)
            else:
                _core.conv2d_backward(x4, w4, dy4, dx4, dw4, self._bias_grad, self._stride2,
                                      (self._pads[0], self._pads[2]))
        else:
            _core.conv2d_general_backward(x4, w4, dy4, dx4, dw4, self._bias_grad, self._stride2,
                                          self._pads, self._dilation2, self.groups)
        return dx


class Conv2D(_GroupedConv):
    r"""2-D cross-correlation, as ``torch.nn.Conv2d``: output channel o of group g reads the
    ``in_channels/groups`` input channels of that group,
    :math:`y[n, o, i, j] = b[o] + \sum_{c, a, b'} W[o, c, a, b'] x_g[n, c, s_h i + d_h a - p_t,
    s_w j + d_w b' - p_l]` (zero outside the image).

    Args:
        in_channels, out_channels: channels of the input and the output (both divisible by
            ``groups``).
        kernel_size, stride, dilation: an int or an ``(h, w)`` pair.
        padding: an int or a pair (zeros on both sides), ``"valid"`` (none) or ``"same"``
            (stride 1 only; output size = input size; total padding ``dilation*(k-1)``, the odd
            one on the bottom/right, as PyTorch).
        groups: split the channels into this many independent convolutions; ``groups ==
            in_channels`` is a depthwise convolution (its own fast route).
        bias: learn one bias per output channel (default True).
        weight_init, bias_init: a ``fastnn.init`` name or callable; default ``"torch_default"``:
            U(-k, k) with k = 1/sqrt(in_channels/groups * kh * kw), as PyTorch.

    Shapes:
        input (N, in_channels, H, W); output (N, out_channels, OH, OW) with
        OH = (H + pad_top + pad_bottom - dilation*(kh - 1) - 1) // stride + 1 (likewise OW).

    State:
        weight (out_channels, in_channels/groups, kh, kw), bias (out_channels,).

    Example::

        conv = Conv2D(1, 6, 5, padding=2)
        y = conv.forward(np.zeros((8, 1, 28, 28), np.float32))   # (8, 6, 28, 28)
        dx = conv.backward(np.ones_like(y))
        depthwise = Conv2D(32, 32, 3, padding="same", groups=32)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, weight_init=None, bias_init=None):
        super().__init__()
        self.kernel_size = check_pair("Conv2D", "kernel_size", kernel_size, 1)
        self.stride = check_pair("Conv2D", "stride", stride, 1)
        self.dilation = check_pair("Conv2D", "dilation", dilation, 1)
        kh, kw = self.kernel_size
        self._setup_grouped(in_channels, out_channels, self.kernel_size, self.stride, padding,
                            self.dilation, groups, bias,
                            (out_channels, check_positive_int("Conv2D", "in_channels", in_channels)
                             // check_positive_int("Conv2D", "groups", groups), kh, kw),
                            weight_init, bias_init)
        self.padding = self._padding_arg

    def extra_repr(self):
        pad = self.padding if isinstance(self.padding, str) else _fmt(self.padding)
        text = (f"{self.in_channels}->{self.out_channels}, k={_fmt(self.kernel_size)}, "
                f"s={_fmt(self.stride)}, p={pad}")
        if self.dilation != (1, 1):
            text += f", d={_fmt(self.dilation)}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text if self.bias is not None else text + ", bias=False"

    def config(self):
        config = self._base_config()
        if isinstance(self.padding, str):
            config["padding"] = self.padding
        if self.dilation != (1, 1):
            config["dilation"] = _fmt(self.dilation)
        if self.groups != 1:
            config["groups"] = self.groups
        return {**config, "bias": self.bias is not None, **self._init_config()}

    def output_shape(self, x_shape):
        n, _, h, w = x_shape
        hw = self._out_hw(h, w)
        if hw is None:
            raise ValueError(f"{self.describe()}: input {tuple(x_shape)} is too small for the "
                             f"kernel: padded size {(h + self._pads[0] + self._pads[1], w + self._pads[2] + self._pads[3])}"
                             f" < dilated kernel "
                             f"{tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))}")
        return (n, self.out_channels, *hw)

    @staticmethod
    def _as4(a):
        return a


class Conv1D(_GroupedConv):
    r"""1-D cross-correlation over (N, C, L), as ``torch.nn.Conv1d``:
    :math:`y[n, o, i] = b[o] + \sum_{c, a} W[o, c, a] x_g[n, c, s i + d a - p_l]` over the
    ``in_channels/groups`` channels of o's group (zero outside the sequence). Runs as a Conv2D
    of unit height (the same kernels, on views).

    Args:
        in_channels, out_channels: channels of the input and the output (both divisible by
            ``groups``).
        kernel_size, stride, dilation: ints.
        padding: an int (zeros on both ends), ``"valid"`` or ``"same"`` (stride 1; total
            ``dilation*(k-1)``, the odd one on the right, as PyTorch).
        groups: independent channel groups (``groups == in_channels``: depthwise).
        bias: learn one bias per output channel (default True).
        weight_init, bias_init: as Conv2D; default U(-k, k), k = 1/sqrt(in_channels/groups * k).

    Shapes:
        input (N, in_channels, L); output (N, out_channels, OL) with
        OL = (L + pad_left + pad_right - dilation*(k - 1) - 1) // stride + 1.

    State:
        weight (out_channels, in_channels/groups, k), bias (out_channels,).

    Example::

        conv = Conv1D(4, 8, 5, padding="same")
        y = conv.forward(np.zeros((16, 4, 100), np.float32))   # (16, 8, 100)
        dx = conv.backward(np.ones_like(y))
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, weight_init=None, bias_init=None):
        super().__init__()
        self.kernel_size = check_positive_int("Conv1D", "kernel_size", kernel_size)
        self.stride = check_positive_int("Conv1D", "stride", stride)
        self.dilation = check_positive_int("Conv1D", "dilation", dilation)
        if not isinstance(padding, str):
            padding = (0, _check_nonnegative_int("Conv1D", "padding", padding))
        self._setup_grouped(in_channels, out_channels, (1, self.kernel_size), (1, self.stride),
                            padding, (1, self.dilation), groups, bias,
                            (out_channels, check_positive_int("Conv1D", "in_channels", in_channels)
                             // check_positive_int("Conv1D", "groups", groups), self.kernel_size),
                            weight_init, bias_init)
        self.padding = self._padding_arg if isinstance(self._padding_arg, str) else self._pads[2]

    def extra_repr(self):
        text = (f"{self.in_channels}->{self.out_channels}, k={self.kernel_size}, s={self.stride}, "
                f"p={self.padding}")
        if self.dilation != 1:
            text += f", d={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text if self.bias is not None else text + ", bias=False"

    def config(self):
        config = {"in_channels": self.in_channels, "out_channels": self.out_channels,
                  "kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}
        if self.dilation != 1:
            config["dilation"] = self.dilation
        if self.groups != 1:
            config["groups"] = self.groups
        return {**config, "bias": self.bias is not None, **self._init_config()}

    def _image(self, x):
        x = self.as_input(x)
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise self.shape_error(f"(N, {self.in_channels}, L)", x.shape)
        return x

    def output_shape(self, x_shape):
        n, _, length = x_shape
        hw = self._out_hw(1, length)
        if hw is None:
            raise ValueError(f"{self.describe()}: input {tuple(x_shape)} is too small for the "
                             f"kernel: padded length {length + self._pads[2] + self._pads[3]} < "
                             f"dilated kernel {self.dilation * (self.kernel_size - 1) + 1}")
        return (n, self.out_channels, hw[1])

    @staticmethod
    def _as4(a):
        """(N, C, L) as (N, C, 1, L), and a (O, C/G, k) weight as (O, C/G, 1, k): views."""
        return a.reshape(a.shape[0], a.shape[1], 1, a.shape[2])


def _check_nonnegative_int(where, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{where}: {name} must be an int >= 0, 'same' or 'valid', got {value!r}")
    return int(value)


class ConvTranspose2D(_ConvBase):
    r"""2-D transposed convolution (the adjoint of Conv2D with respect to its input), as
    ``torch.nn.ConvTranspose2d``: each input pixel scatters ``x[n, c] * W[c]`` onto a
    ``stride``-spaced output grid, then ``padding`` rows/columns are cropped from each side.

    Args:
        in_channels, out_channels: channels of the input and the output.
        kernel_size, stride, padding: an int or an ``(h, w)`` pair.
        output_padding: extra rows/columns added on one side of the output (an int or pair,
            each smaller than the stride), to pick among the sizes a strided Conv2D maps from.
        bias: learn one bias per output channel (default True).
        weight_init, bias_init: a ``fastnn.init`` name or callable; default ``"torch_default"``:
            U(-k, k) with k = 1/sqrt(out_channels * kh * kw) -- PyTorch's fan rule applied to
            the (in, out, kh, kw) weight.

    Shapes:
        input (N, in_channels, H, W); output (N, out_channels, OH, OW) with
        OH = (H - 1)*stride - 2*padding + kh + output_padding (likewise OW).

    State:
        weight (in_channels, out_channels, kh, kw), bias (out_channels,).

    Example::

        up = ConvTranspose2D(64, 1, 4, stride=2, padding=1)
        y = up.forward(np.zeros((8, 64, 14, 14), np.float32))     # (8, 1, 28, 28)
        dx = up.backward(np.ones_like(y))
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, bias=True, weight_init=None, bias_init=None):
        super().__init__()
        self._setup(in_channels, out_channels, kernel_size, stride, padding)
        self.output_padding = check_pair("ConvTranspose2D", "output_padding", output_padding, 0)
        if any(op >= s for op, s in zip(self.output_padding, self.stride)):
            raise ValueError(f"ConvTranspose2D: output_padding {self.output_padding} must be smaller "
                             f"than stride {self.stride}")
        kh, kw = self.kernel_size
        self._init_weight_and_bias((self.in_channels, self.out_channels, kh, kw),
                                   (self.out_channels,) if bias else None, weight_init, bias_init)

    def config(self):
        return {**self._base_config(), "output_padding": _fmt(self.output_padding),
                "bias": self.bias is not None, **self._init_config()}

    def extra_repr(self):
        text = super().extra_repr()
        if self.output_padding != (0, 0):
            text += f", op={_fmt(self.output_padding)}"
        return text

    def output_shape(self, x_shape):
        n, _, h, w = x_shape
        sizes = [(size - 1) * s - 2 * p + k + op for size, s, p, k, op in
                 zip((h, w), self.stride, self.padding, self.kernel_size, self.output_padding)]
        if min(sizes) < 1:
            raise ValueError(f"{self.describe()}: input {tuple(x_shape)} gives an empty output "
                             f"{(n, self.out_channels, *sizes)}; the padding crops more than there is")
        return (n, self.out_channels, *sizes)

    def forward(self, x, training=True):
        x = self._image(x)
        self.y_shape = self.output_shape(x.shape)
        out = np.empty(self.y_shape, dtype=self._dtype)
        _core.conv_transpose2d_forward(x, self.weight.data, self._bias_data, out, self.stride,
                                       self.padding)
        self.x = x
        return out

    def backward(self, dy, input_grad=True):
        """dx (None when ``input_grad`` is False: only the parameter gradients are computed)."""
        dy = self._check_dy(dy)
        dx = np.empty_like(self.x) if input_grad else None
        _core.conv_transpose2d_backward(self.x, self.weight.data, dy, dx, self.weight.grad,
                                        self._bias_grad, self.stride, self.padding)
        return dx
