"""Batch normalisation over (N, C), (N, C, L) and (N, C, H, W) inputs."""
import math

import numpy as np

from .. import _core
from .activation import relu_fusion
from .base import Layer, check_positive_int, drop_workspaces, recycled, workspace


class _BatchNorm(Layer):
    _ranks = ()            # accepted input ranks
    _expected = ""         # the shape pattern shown in errors
    sums_two_dy = True     # backward(dy, dy2=) sums two gradients in its own passes (graph.py)

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        name = type(self).__name__
        self.num_features = check_positive_int(name, "num_features", num_features)
        number = (int, float, np.integer, np.floating)
        if isinstance(eps, bool) or not (isinstance(eps, number) and eps > 0 and math.isfinite(eps)):
            raise ValueError(f"{name}: eps must be a positive number, got {eps!r}")
        if isinstance(momentum, bool) or not (isinstance(momentum, number) and 0.0 <= momentum <= 1.0):
            raise ValueError(f"{name}: momentum must be a number in [0, 1], got {momentum!r}")
        self.eps = float(eps)
        self.momentum = float(momentum)
        c = self.num_features
        self.weight = self.add_parameter("weight", np.ones(c))
        self.bias = self.add_parameter("bias", np.zeros(c))
        self.add_buffer("running_mean", np.zeros(c))
        self.add_buffer("running_var", np.ones(c))
        self.x = None
        self.summed = False   # the last forward was forward_add (a residual summed into it)
        self.relu_out = None  # the output, when forward_relu applied a ReLU to it
        self.relu_slope = None  # and that ReLU's negative slope, when it was a leaky one
        # None, or what takes the training statistics over the batch shares of several
        # processes (distributed.DataParallel(sync_batchnorm=True) sets it)
        self.sync = None

    # buffers are looked up each time: astype and load_state_dict may replace the arrays
    @property
    def running_mean(self):
        return self._buffers["running_mean"]

    @property
    def running_var(self):
        return self._buffers["running_var"]

    def config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, x, training=True):
        return self._forward(x, training, relu=False)

    def activation_fusion(self, following):
        """A ReLU (or LeakyReLU of slope >= 0) runs in this layer's pass, and its backward is
        folded into this layer's."""
        fusion = relu_fusion(following)
        return None if fusion is None else (fusion[0], True)

    def forward_relu(self, x, training=True, negative_slope=None):
        """``relu(self.forward(x))`` in one pass (with ``negative_slope`` >= 0, a leaky ReLU's);
        the next ``backward`` takes the gradient of that ReLU's output (``Sequential`` fuses a
        BatchNorm followed by a ReLU or LeakyReLU this way)."""
        return self._forward(x, training, relu=True, negative_slope=negative_slope)

    def forward_add(self, x, residual, training=True, relu=False, negative_slope=None):
        """``self.forward(x) + residual`` in one pass (then the ReLU of ``relu``, or with
        ``negative_slope`` >= 0 the leaky ReLU), bitwise the separate sum and activation;
        training mode only, without ``sync`` (a graph model runs a batch norm that alone feeds
        a residual Add this way). The next ``backward`` takes the gradient of this output with
        respect to x, ``backward_add`` that and the residual's."""
        if not training or getattr(self, "sync", None) is not None:
            raise ValueError(f"{self.describe()}: forward_add runs in training mode, without sync")
        residual = self.as_input(residual, "residual")
        if residual.shape != np.shape(x):
            raise self.shape_error(np.shape(x), residual.shape, "residual")
        return self._forward(x, True, relu, negative_slope, residual)

    def _forward(self, x, training, relu, negative_slope=None, residual=None):
        x = self.as_input(x)
        if x.ndim not in self._ranks or x.shape[1] != self.num_features:
            raise self.shape_error(self._expected.format(C=self.num_features), x.shape)
        self.x_shape = x.shape
        # (N, C, L): the kernels' layout (L spelled out: -1 is ambiguous for an empty batch)
        x3 = x.reshape(x.shape[0], self.num_features, math.prod(x.shape[2:]))
        out = np.empty_like(x3)
        c = self.num_features
        self.mean = workspace(self, "mean", (c,), self._dtype)
        self.invstd = workspace(self, "invstd", (c,), self._dtype)
        sync = getattr(self, "sync", None) if training else None
        if sync is not None:  # mean, invstd and running statistics over the global batch
            sync.forward(self, x3, out, relu, negative_slope)
        elif training:
            if x3.shape[0] * x3.shape[2] < 2:
                raise ValueError(f"{self.describe()}: training needs more than one value per channel "
                                 f"to estimate the variance, got input {x.shape}")
            _core.batchnorm_forward_train(x3, self.weight.data, self.bias.data, self.running_mean,
                                          self.running_var, self.momentum, self.eps, out,
                                          self.mean, self.invstd, relu=relu,
                                          negative_slope=negative_slope,
                                          residual=None if residual is None
                                          else residual.reshape(x3.shape))
        elif x3.size:   # an empty batch has nothing to normalise (and the kernel no planes)
            _core.batchnorm_forward_eval(x3, self.weight.data, self.bias.data, self.running_mean,
                                         self.running_var, self.eps, out, relu=relu,
                                         negative_slope=negative_slope)
        if not training:
            # the statistics used, frozen for backward: C numbers, not per-element work
            np.copyto(self.mean, self.running_mean)
            np.add(self.running_var, self.eps, out=self.invstd)
            np.sqrt(self.invstd, out=self.invstd)
            np.reciprocal(self.invstd, out=self.invstd)
        self.x, self.training = x3, training
        self.summed = residual is not None
        self.relu_out = out if relu else None
        self.relu_slope = negative_slope if relu else None
        return out.reshape(x.shape)

    def backward(self, dy, dy2=None):
        """dx from ``dy`` (the gradient of the output, or of its fused activation's); with
        ``dy2``, from dy + dy2, summed into dy (overwritten: a C-contiguous array only the
        caller holds) in the backward's own first pass: a graph model hands over a tensor's
        two gradients this way."""
        return self._backward(dy, None, dy2)

    def backward_add(self, dy, overwrite_dy=False, dy2=None):
        """After ``forward_add``: ``[dx, dresidual]``, the gradients of x and of the residual
        from the gradient of that output (the sum's, or its activation's; dy + dy2 with
        ``dy2``, summed into dy as in ``backward``), in the passes of the batch norm's own
        backward. ``overwrite_dy``: dresidual
        may be written over ``dy`` (a caller that alone holds dy saves an array)."""
        self.check_forwarded(self.x)
        if not self.summed:
            raise RuntimeError(f"{self.describe()}: backward_add needs a forward_add before it")
        reuse = (overwrite_dy and isinstance(dy, np.ndarray) and dy.shape == self.x_shape
                 and dy.dtype == self._dtype and dy.flags.c_contiguous and dy.flags.writeable)
        dres = dy if reuse else np.empty(self.x_shape, self._dtype)
        return [self._backward(dy, dres, dy2), dres]

    def _backward(self, dy, dres, dy2=None):
        self.check_forwarded(self.x)
        dy = self.as_input(dy, "dy")
        if dy.shape != self.x_shape:
            raise self.shape_error(self.x_shape, dy.shape, "dy")
        if dy2 is not None:
            dy2 = self.as_input(dy2, "dy2")
            if dy2.shape != self.x_shape:
                raise self.shape_error(self.x_shape, dy2.shape, "dy2")
        dx = recycled(self, "dx", self.x.shape, self.x.dtype)
        if self.training and getattr(self, "sync", None) is not None:
            if dy2 is not None:
                dy = dy + dy2
            self.sync.backward(self, dy.reshape(self.x.shape), dx)
            return dx.reshape(self.x_shape)
        if dx.size == 0:
            return dx.reshape(self.x_shape)
        _core.batchnorm_backward(dy.reshape(self.x.shape), self.x, self.weight.data, self.mean,
                                 self.invstd, dx, self.weight.grad, self.bias.grad,
                                 batch_stats=self.training, relu_out=self.relu_out,
                                 negative_slope=self.relu_slope,
                                 dresidual=None if dres is None else dres.reshape(self.x.shape),
                                 dy2=None if dy2 is None else dy2.reshape(self.x.shape))
        return dx.reshape(self.x_shape)

    def _on_dtype_change(self):
        self.x = None
        drop_workspaces(self)


class BatchNorm1D(_BatchNorm):
    r"""Batch normalisation per feature, as ``torch.nn.BatchNorm1d``:
    :math:`y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta`.

    In training the mean and (biased) variance are taken over the batch (and length) axes, and
    the running statistics are updated: ``running = (1 - momentum) * running + momentum *
    batch_stat`` with the unbiased batch variance for ``running_var``. In inference
    (``training=False``) the running statistics are used instead. Both modes have a backward.

    Args:
        num_features: C, the channel axis (axis 1).
        eps: added to the variance for stability (default 1e-5).
        momentum: weight of the new batch in the running statistics (default 0.1).

    Shapes:
        input (N, C) or (N, C, L); output the same shape.

    State:
        weight (C,) ones, bias (C,) zeros (learnable); running_mean (C,) zeros,
        running_var (C,) ones (buffers).

    Example::

        bn = BatchNorm1D(64)
        y = bn.forward(np.random.randn(32, 64).astype(np.float32))             # batch stats
        y_eval = bn.forward(np.random.randn(4, 64).astype(np.float32), training=False)
    """

    _ranks = (2, 3)
    _expected = "(N, {C}) or (N, {C}, L)"


class BatchNorm2D(_BatchNorm):
    r"""Batch normalisation per channel of an image batch, as ``torch.nn.BatchNorm2d``:
    :math:`y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta`,
    statistics over (N, H, W).

    In training the batch statistics are used and the running statistics updated
    (``running = (1 - momentum) * running + momentum * batch_stat``, unbiased variance for
    ``running_var``); in inference (``training=False``) the running statistics are used. Both
    modes have a backward.

    Args:
        num_features: C, the channel axis (axis 1).
        eps: added to the variance for stability (default 1e-5).
        momentum: weight of the new batch in the running statistics (default 0.1).

    Shapes:
        input (N, C, H, W); output the same shape.

    State:
        weight (C,) ones, bias (C,) zeros (learnable); running_mean (C,) zeros,
        running_var (C,) ones (buffers).

    Example::

        bn = BatchNorm2D(32)
        y = bn.forward(np.random.randn(8, 32, 14, 14).astype(np.float32))
        dx = bn.backward(np.ones_like(y))
    """

    _ranks = (4,)
    _expected = "(N, {C}, H, W)"


class LayerNorm(Layer):
    r"""Layer normalisation over the trailing ``normalized_shape`` axes of each sample, as
    ``torch.nn.LayerNorm``: :math:`y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}
    \gamma + \beta`, the (biased) statistics taken per sample over those axes, in training and
    inference alike.

    Args:
        normalized_shape: an int or a tuple: the trailing shape normalised over.
        eps: added to the variance (default 1e-5).
        elementwise_affine: learn ``weight`` (ones) and ``bias`` (zeros) of ``normalized_shape``.
        bias: learn the bias too (with ``elementwise_affine``; default True).

    Shapes: input ``(..., *normalized_shape)``; output the same shape.
    State: weight, bias (``normalized_shape``), when affine.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) \
            else normalized_shape
        try:
            shape = tuple(check_positive_int("LayerNorm", "normalized_shape", s) for s in shape)
        except TypeError:
            raise TypeError(f"LayerNorm: normalized_shape must be an int or a tuple of ints, got "
                            f"{normalized_shape!r}") from None
        if not shape:
            raise ValueError("LayerNorm: normalized_shape must not be empty")
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not eps >= 0:
            raise ValueError(f"LayerNorm: eps must be a number >= 0, got {eps!r}")
        self.normalized_shape, self.eps = shape, float(eps)
        self.elementwise_affine, self.use_bias = bool(elementwise_affine), bool(bias)
        self.weight = self.add_parameter("weight", np.ones(shape)) if self.elementwise_affine else None
        self.bias = (self.add_parameter("bias", np.zeros(shape))
                     if self.elementwise_affine and self.use_bias else None)
        self.x = None

    def config(self):
        shape = self.normalized_shape
        return {"normalized_shape": shape[0] if len(shape) == 1 else list(shape), "eps": self.eps,
                "elementwise_affine": self.elementwise_affine, "bias": self.use_bias}

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}" + \
            ("" if self.elementwise_affine else ", elementwise_affine=False")

    def forward(self, x, training=True, residual=None):
        """``residual`` (an array like x, or None): normalises x + residual, the sum written
        over x (a post-norm block's fresh sublayer output) while each row is in cache."""
        x = self.as_input(x)
        k = len(self.normalized_shape)
        if x.ndim <= k - 1 or x.shape[x.ndim - k:] != self.normalized_shape:
            raise self.shape_error(f"(..., {', '.join(map(str, self.normalized_shape))})", x.shape)
        d = math.prod(self.normalized_shape)
        x2 = x.reshape(-1, d)
        out = np.empty_like(x2)
        self.mean = workspace(self, "mean", (x2.shape[0],), np.float64)
        self.invstd = workspace(self, "invstd", (x2.shape[0],), np.float64)
        _core.layer_norm_forward(x2, self._flat(self.weight), self._flat(self.bias), self.eps,
                                 out, self.mean, self.invstd,
                                 None if residual is None else residual.reshape(x2.shape))
        self.x, self.x_shape = x2, x.shape
        return out.reshape(x.shape)

    def backward(self, dy):
        dy = self.checked_dy(dy, self.x_shape if self.x is not None else None)
        dx = recycled(self, "dx", self.x.shape, self.x.dtype)
        _core.layer_norm_backward(self.x, dy.reshape(self.x.shape), self._flat(self.weight),
                                  self.mean, self.invstd, dx, self._flat(self.weight, "grad"),
                                  self._flat(self.bias, "grad"))
        return dx.reshape(self.x_shape)

    @staticmethod
    def _flat(p, what="data"):
        return None if p is None else getattr(p, what).reshape(-1)

    def _on_dtype_change(self):
        self.x = None
        drop_workspaces(self)


class LocalResponseNorm(Layer):
    r"""Local response normalisation across channels (AlexNet; ``torch.nn.LocalResponseNorm``):

    .. math:: y_c = x_c \left(k + \frac{\alpha}{n} \sum_{c'=c-\lfloor n/2 \rfloor}^{c+\lfloor (n-1)/2 \rfloor} x_{c'}^2\right)^{-\beta}

    with ``n = size`` and channels outside ``[0, C)`` counting as zero.

    Args:
        size: channels in each window; alpha, beta, k: as the formula (PyTorch's defaults).

    Shapes: input ``(N, C, ...)`` with at least 3 dimensions; output the same. State: none.

    Example::

        lrn = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
        y = lrn.forward(np.random.rand(2, 16, 8, 8).astype(np.float32))
        dx = lrn.backward(np.ones_like(y))
    """

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size = check_positive_int("LocalResponseNorm", "size", size)
        number = (int, float, np.integer, np.floating)
        for name, v in (("alpha", alpha), ("beta", beta), ("k", k)):
            if isinstance(v, bool) or not isinstance(v, number) or not math.isfinite(v):
                raise ValueError(f"LocalResponseNorm: {name} must be a finite number, got {v!r}")
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)
        self._cache = None

    def config(self):
        return {"size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

    def forward(self, x, training=True):
        x = self.as_input(x)
        if x.ndim < 3:
            raise self.shape_error("(N, C, *) with 3 or more dimensions", x.shape)
        out = np.empty_like(x)
        scale = np.empty_like(x)
        _core.lrn_forward(x, self.size, self.alpha, self.beta, self.k, out, scale)
        self._cache = (x, out, scale)
        return out

    def backward(self, dy):
        if self._cache is None:
            raise RuntimeError(f"{self.describe()}: backward called before forward")
        x, out, scale = self._cache
        dy = self.as_input(dy, "dy")
        if dy.shape != x.shape:
            raise self.shape_error(x.shape, dy.shape, "dy")
        dx = np.empty_like(x)
        _core.lrn_backward(x, out, scale, dy, self.size, self.alpha, self.beta, dx)
        return dx

    def _on_dtype_change(self):
        self._cache = None
