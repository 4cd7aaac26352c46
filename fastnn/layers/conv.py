"""2-D convolution and transposed convolution (NCHW)."""
import numpy as np

from .. import _core
from .._core._checks import check_pair, conv_out_size
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
        self.check_forwarded(self.x)
        dy = self.as_input(dy, "dy")
        if dy.shape != self.y_shape:
            raise self.shape_error(self.y_shape, dy.shape, "dy")
        return dy

    def _on_dtype_change(self):
        self.x = None


class Conv2D(_ConvBase):
    r"""2-D cross-correlation: :math:`y[n, o] = b[o] + \sum_c W[o, c] \star x[n, c]`, as
    ``torch.nn.Conv2d`` (no dilation or groups).

    Args:
        in_channels, out_channels: channels of the input and the output.
        kernel_size, stride, padding: an int or an ``(h, w)`` pair; zero padding on both sides.
        bias: learn one bias per output channel (default True).
        weight_init, bias_init: a ``fastnn.init`` name or callable; default ``"torch_default"``:
            U(-k, k) with k = 1/sqrt(in_channels * kh * kw), as PyTorch.

    Shapes:
        input (N, in_channels, H, W); output (N, out_channels, OH, OW) with
        OH = (H + 2*padding - kh) // stride + 1 (likewise OW).

    State:
        weight (out_channels, in_channels, kh, kw), bias (out_channels,).

    Example::

        conv = Conv2D(1, 6, 5, padding=2)
        y = conv.forward(np.zeros((8, 1, 28, 28), np.float32))   # (8, 6, 28, 28)
        dx = conv.backward(np.ones_like(y))
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 weight_init=None, bias_init=None):
        super().__init__()
        self._setup(in_channels, out_channels, kernel_size, stride, padding)
        kh, kw = self.kernel_size
        self._init_weight_and_bias((self.out_channels, self.in_channels, kh, kw),
                                   (self.out_channels,) if bias else None, weight_init, bias_init)

    def config(self):
        return {**self._base_config(), "bias": self.bias is not None, **self._init_config()}

    def output_shape(self, x_shape):
        n, _, h, w = x_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"{self.describe()}: input {tuple(x_shape)} is too small for the "
                             f"kernel: padded size {(h + 2 * ph, w + 2 * pw)} < kernel {(kh, kw)}")
        return (n, self.out_channels, conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw))

    def forward(self, x, training=True):
        return self._forward(x)

    def activation_fusion(self, following):
        return relu_fusion(following)

    def forward_relu(self, x, training=True, negative_slope=None):
        """``relu(self.forward(x))`` (with ``negative_slope`` >= 0, a leaky ReLU's) applied to
        each chunk of the output as it is written (``Sequential`` fuses a Conv2D followed by a
        ReLU or LeakyReLU this way; the activation's backward still runs on its own)."""
        return self._forward(x, relu=True, negative_slope=negative_slope)

    def _forward(self, x, relu=False, negative_slope=None):
        x = self._image(x)
        self.y_shape = self.output_shape(x.shape)
        out = np.empty(self.y_shape, dtype=self._dtype)
        _core.conv2d_forward(x, self.weight.data, self._bias_data, out, self.stride, self.padding,
                             relu=relu, negative_slope=negative_slope)
        self.x = x
        return out

    def backward(self, dy, input_grad=True):
        """dx (None when ``input_grad`` is False: only the parameter gradients are computed)."""
        dy = self._check_dy(dy)
        dx = np.empty_like(self.x) if input_grad else None
        _core.conv2d_backward(self.x, self.weight.data, dy, dx, self.weight.grad, self._bias_grad,
                              self.stride, self.padding)
        return dx


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
