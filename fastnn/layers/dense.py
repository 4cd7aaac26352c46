"""Dense (fully connected) layer, plus the small helpers shared by the layers with weights."""
import numpy as np

from .. import _core
from .. import init as _init
from .activation import ReLU, Sigmoid, Tanh
from .base import Layer, check_positive_int, grad_targets


# the activations Dense may run in its GEMM's epilogue (exact types: a subclass may change the
# arithmetic), by dense_forward's name for them; those of this ISA level, on first use
_EPILOGUE = {ReLU: "relu", Sigmoid: "sigmoid", Tanh: "tanh"}
_epilogue = None


def _epilogue_kind(following):
    global _epilogue
    if _epilogue is None:
        kinds = _core.dense_epilogue_activations()
        _epilogue = {cls: kind for cls, kind in _EPILOGUE.items() if kind in kinds}
    return _epilogue.get(type(following))


class WeightedLayer(Layer):
    """A layer with a ``weight`` and an optional ``bias`` initialised by ``fastnn.init``."""

    def _init_weight_and_bias(self, weight_shape, bias_shape, weight_init, bias_init):
        name = type(self).__name__
        self._weight_init = "torch_default" if weight_init is None else weight_init
        self._bias_init = "torch_default" if bias_init is None else bias_init
        w_init = _init.get(self._weight_init, f"{name}: weight_init")
        b_init = _init.get(self._bias_init, f"{name}: bias_init")
        fan_in, fan_out = _init.fan_in_and_fan_out(weight_shape)
        # weight first, then bias: the order PyTorch draws them in
        self.weight = self.add_parameter("weight", w_init(weight_shape, fan_in=fan_in, fan_out=fan_out,
                                                          dtype=self._dtype))
        self.bias = None
        if bias_shape is not None:
            self.bias = self.add_parameter("bias", b_init(bias_shape, fan_in=fan_in, fan_out=fan_out,
                                                          dtype=self._dtype))

    def _init_config(self):
        """Initialisers named by a string go into ``config``; a callable cannot be saved, and
        the weights are restored from the state dict anyway."""
        config = {}
        for key, value in (("weight_init", self._weight_init), ("bias_init", self._bias_init)):
            if isinstance(value, str) and value != "torch_default":
                config[key] = value
        return config

    @property
    def _bias_data(self):
        return None if self.bias is None else self.bias.data

    @property
    def _bias_grad(self):
        return None if self.bias is None else self.bias.grad


class Dense(WeightedLayer):
    r"""Affine map of the last axis: :math:`y = x W^T + b`.

    Args:
        in_features: size of the last axis of the input.
        out_features: size of the last axis of the output.
        bias: learn an additive bias (default True).
        weight_init, bias_init: a ``fastnn.init`` name or callable ``f(shape, fan_in, fan_out,
            dtype)``; default ``"torch_default"``: U(-1/sqrt(in_features), 1/sqrt(in_features))
            for both, as ``torch.nn.Linear``.

    Shapes:
        input ``(*, in_features)`` of any rank >= 1; output ``(*, out_features)``.

    State:
        weight (out_features, in_features), bias (out_features,).

    Example::

        layer = Dense(784, 256)
        y = layer.forward(np.zeros((32, 784), np.float32))    # (32, 256)
        dx = layer.backward(np.ones_like(y))                  # (32, 784); weight.grad += ...
    """

    def __init__(self, in_features, out_features, bias=True, weight_init=None, bias_init=None):
        super().__init__()
        self.in_features = check_positive_int("Dense", "in_features", in_features)
        self.out_features = check_positive_int("Dense", "out_features", out_features)
        self._init_weight_and_bias((self.out_features, self.in_features),
                                   (self.out_features,) if bias else None, weight_init, bias_init)
        self.x = None  # the input, as a (M, in_features) matrix

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, **self._init_config()}

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")

    def forward(self, x, training=True):
        return self._forward(x, "none")

    def activation_fusion(self, following):
        """A ReLU, Sigmoid or Tanh (exact types; the latter two where the epilogue gives their
        kernels' bits, ``_core.dense_epilogue_activations``) runs in the GEMM's epilogue; its
        backward stays its own (a ReLU's, in the next Dense's dx pass)."""
        kind = _epilogue_kind(following)
        return None if kind is None else ({"activation": kind}, False)

    def forward_relu(self, x, training=True, activation="relu"):
        """``act(self.forward(x))`` with the activation (``"relu"``, ``"sigmoid"`` or ``"tanh"``)
        in the GEMM's epilogue (``Sequential`` fuses a Dense followed by a ReLU, Sigmoid or Tanh
        this way; the activation's backward still runs, on this output)."""
        if activation not in ("relu", "sigmoid", "tanh"):
            raise ValueError(f"{self.describe()}: forward_relu's activation must be 'relu', "
                             f"'sigmoid' or 'tanh', got {activation!r}")
        return self._forward(x, activation)

    def takes_activation_backward(self, before):
        """Whether :meth:`backward_through_activation` can run the backward of ``before``, the
        layer whose output is this one's input: a ReLU (exact type)."""
        return type(before) is ReLU and type(self).backward is Dense.backward

    def backward_through_activation(self, dy, before):
        """``before.backward(self.backward(dy))`` for a ReLU ``before``, the same bits: its mask
        is this layer's input (the ReLU's output, > 0 exactly where the ReLU's input is),
        applied to each block of dx as the GEMM writes it."""
        return self.backward(dy, relu=True)

    def _forward(self, x, activation):
        x = self.as_input(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise self.shape_error(f"(*, {self.in_features})", x.shape)
        self.lead_shape = x.shape[:-1]
        flat = x.ndim == 2  # the common case: a batch of rows, no reshapes
        self.x = x if flat else x.reshape(-1, self.in_features)
        out = np.empty((self.x.shape[0], self.out_features), dtype=self._dtype)
        bias = self.bias
        _core.dense_forward(self.x, self.weight.data, None if bias is None else bias.data, out,
                            activation)
        return out if flat else out.reshape(*self.lead_shape, self.out_features)

    def backward(self, dy, input_grad=True, relu=False):
        """dx (None when ``input_grad`` is False: only the parameter gradients are computed);
        ``relu``: dx through the backward of the ReLU whose output is this layer's input (see
        :meth:`backward_through_activation`)."""
        self.check_forwarded(self.x)
        dy = self.as_input(dy, "dy")
        expected = (*self.lead_shape, self.out_features)
        if dy.shape != expected:
            raise self.shape_error(expected, dy.shape, "dy")
        dx = np.empty(self.x.shape, self._dtype) if input_grad else None
        flat = dy.ndim == 2
        bias = self.bias
        dy2 = dy if flat else dy.reshape(-1, self.out_features)
        dweight, dbias, accumulate = grad_targets(self.weight, bias)
        if relu and dx is not None:
            _core.dense_backward(self.x, self.weight.data, dy2, dx, dweight, dbias, accumulate,
                                 relu=True)
        else:
            _core.dense_backward(self.x, self.weight.data, dy2, dx, dweight, dbias, accumulate)
        if dx is None or flat:
            return dx
        return dx.reshape(*self.lead_shape, self.in_features)

    def _on_dtype_change(self):
        self.x = None
