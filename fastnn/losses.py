"""Loss functions: ``forward(pred, target)`` and ``backward() -> dpred``.

Each loss keeps what its backward needs from the last forward, like a layer. All work in float32
and float64 (the dtype of ``pred``); the returned gradient has ``pred``'s shape and dtype.

    loss = fnn.losses.CrossEntropy()
    value = loss.forward(logits, labels)   # a Python float
    dlogits = loss.backward()              # d value / d logits

``reduction`` as PyTorch's: ``"mean"`` (the default) and ``"sum"`` return a float, and
``backward(dy=1.0)`` scales the gradient by the upstream scalar ``dy``; ``"none"`` returns the
per-element losses (per-position for cross-entropy, per-sample for KLDivergenceNormal) as an
array, and ``backward(dy)`` takes the upstream gradient of that array's shape.

    per_sample = fnn.losses.CrossEntropy(reduction="none").forward(logits, labels)   # (N,)

Look-up by name: ``fnn.losses.get("mse" | "cross_entropy" | "bce" | "bce_with_logits")``.
"""
import numpy as np

from . import _core
from ._core import FLOAT_DTYPES

REDUCTIONS = ("mean", "sum", "none")

__all__ = ["REDUCTIONS", "Loss", "MSE", "CrossEntropy", "BCE", "BCEWithLogits", "KLDivergenceNormal", "get"]


def _as_float_array(where, name, a, dtype=None):
    """``a`` as a C-contiguous float32/float64 array (``dtype`` if given, else its own, float16
    and integer inputs promoted to float32)."""
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
        if a.dtype == object:
            raise TypeError(f"{where}: {name} must be a numeric array, got {type(a).__name__}")
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{where}: {name} must be a real numeric array, got dtype {a.dtype} "
                        f"with shape {a.shape}")
    if dtype is None:
        dtype = a.dtype if a.dtype in FLOAT_DTYPES else np.dtype(np.float32)
    return np.ascontiguousarray(a, dtype=dtype)


class Loss:
    """Base class: ``forward(pred, target) -> float`` (an array for ``reduction="none"``) and
    ``backward(dy=None) -> dpred``."""

    name = "loss"

    def __init__(self, reduction="mean"):
        if not isinstance(reduction, str) or reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {REDUCTIONS}, "
                             f"got {reduction!r}")
        self.reduction = reduction

    def _upstream(self, dy, shape, dtype):
        """The upstream gradient: ``None`` (1) or a scalar for "mean"/"sum" (returned as a
        float or None); for "none" an array of the per-element ``shape`` (in ``dtype``)."""
        where = f"{type(self).__name__}(reduction={self.reduction!r}).backward"
        if self.reduction != "none":
            if dy is None:
                return None
            a = np.asarray(dy)
            if a.size != 1 or a.dtype.kind not in "fiu":
                raise ValueError(f"{where}: dy must be a scalar for a reduced loss, got shape "
                                 f"{a.shape}")
            return float(a.reshape(()))
        if dy is None:
            raise ValueError(f"{where}: dy (the upstream gradient of shape {tuple(shape)}) is "
                             f"required: the loss is an array, not a scalar")
        a = np.asarray(dy)
        if a.dtype.kind not in "fiu":
            raise TypeError(f"{where}: dy must be a real array, got dtype {a.dtype}")
        if a.shape != tuple(shape):
            raise ValueError(f"{where}: dy must have the shape of the losses {tuple(shape)}, "
                             f"got {a.shape}")
        return np.ascontiguousarray(a, dtype=dtype)

    def _reduce(self, values):
        """The per-element losses ``values`` reduced (a float, or the array for "none")."""
        if self.reduction == "none":
            return values
        total = float(values.sum())
        return total / values.size if self.reduction == "mean" else total

    def __call__(self, pred, target):
        return self.forward(pred, target)

    def forward(self, pred, target):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def _need_forward(self, cache):
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return cache

    def _pred_and_same_shape_target(self, pred, target):
        where = type(self).__name__
        pred = _as_float_array(where, "pred", pred)
        target = _as_float_array(where, "target", target, dtype=pred.dtype)
        if target.shape != pred.shape:
            raise ValueError(f"{where}: target must have the shape of pred {pred.shape}, "
                             f"got {target.shape}")
        if pred.size == 0:
            raise ValueError(f"{where}: empty input with shape {pred.shape}")
        return pred, target

    def __repr__(self):
        extra = "" if self.reduction == "mean" else f"reduction={self.reduction!r}"
        return f"{type(self).__name__}({extra})"


class MSE(Loss):
    """Squared error ``(pred - target)**2`` per element, averaged (``"mean"``), summed
    (``"sum"``) or returned per element (``"none"``), as ``torch.nn.MSELoss(reduction=...)``.
    ``pred`` and ``target`` share one shape. The notes' ``E = 1/2 * sum (y - t)**2`` is half of
    ``MSE(reduction="sum")``."""

    name = "mse"

    def __init__(self, reduction="mean"):
        super().__init__(reduction)
        self._cache = None

    def forward(self, pred, target):
        pred, target = self._pred_and_same_shape_target(pred, target)
        diff = pred - target
        self._cache = diff
        if self.reduction == "none":
            return diff * diff
        total = float(np.vdot(diff, diff))
        return total / diff.size if self.reduction == "mean" else total

    def backward(self, dy=None):
        diff = self._need_forward(self._cache)
        g = self._upstream(dy, diff.shape, diff.dtype)
        if self.reduction == "none":
            return diff * (2 * g)
        scale = (2.0 / diff.size if self.reduction == "mean" else 2.0) * (1.0 if g is None else g)
        return diff * diff.dtype.type(scale)


class CrossEntropy(Loss):
    """Softmax cross-entropy from logits, mean over every position (``torch.nn.CrossEntropyLoss()``
    with the class axis last); ``reduction="sum"`` sums, ``"none"`` returns the loss of each
    position, shape ``(N, ...)``.

    ``loss = mean_i( -sum_c t_ic * log softmax(z_i)_c )`` where ``t`` is one-hot of the label or a
    probability row; the softmax is fused in (no overflow for large logits).

    Shapes: logits ``(N, ..., C)``; target either integer labels ``(N, ...)`` of any integer dtype,
    with values in ``[0, C)``, or one-hot / probabilities with the logits' shape.
    The gradient is ``(softmax(z) * sum_c t_c - t) / M`` with ``M`` the number of positions.
    """

    name = "cross_entropy"

    def __init__(self, reduction="mean"):
        super().__init__(reduction)
        self._cache = None
        self._probs = None

    def _buffer(self, shape, dtype):
        if self._probs is None or self._probs.shape != shape or self._probs.dtype != dtype:
            self._probs = np.empty(shape, dtype=dtype)
        return self._probs

    def forward(self, pred, target):
        logits = _as_float_array("CrossEntropy", "logits", pred)
        if logits.ndim < 2 or logits.shape[-1] == 0 or logits.size == 0:
            raise ValueError(f"CrossEntropy: logits must have shape (N, ..., C) with C >= 1 and "
                             f"N >= 1, got {logits.shape}")
        target = np.asarray(target)
        classes = logits.shape[-1]
        logits2 = logits.reshape(-1, classes)
        probs = self._buffer(logits2.shape, logits.dtype)
        rows = np.empty(logits2.shape[0]) if self.reduction == "none" else None
        if target.shape == logits.shape[:-1] and target.dtype.kind in "iu":
            if target.size and (target.min() < 0 or target.max() >= classes):
                raise ValueError(
                    f"CrossEntropy: labels must be in [0, {classes}) for logits of shape "
                    f"{logits.shape}, got labels in [{target.min()}, {target.max()}] with shape "
                    f"{target.shape}")
            labels = np.ascontiguousarray(target.reshape(-1), dtype=np.int64)
            value = _core.softmax_cross_entropy_forward(logits2, labels, probs, rows)
            self._cache = ("hard", labels, logits.shape)
        elif target.shape == logits.shape and target.dtype.kind in "fiub":
            soft = np.ascontiguousarray(target.reshape(-1, classes), dtype=logits.dtype)
            value = _core.soft_cross_entropy_forward(logits2, soft, probs, rows)
            self._cache = ("soft", soft, logits.shape)
        elif target.shape == logits.shape[:-1]:
            raise TypeError(f"CrossEntropy: class labels with shape {target.shape} must be "
                            f"integers, got dtype {target.dtype} (logits {logits.shape})")
        else:
            raise ValueError(f"CrossEntropy: target must be integer labels of shape "
                             f"{logits.shape[:-1]} or probabilities of shape {logits.shape} for "
                             f"logits of shape {logits.shape}, got {target.shape}")
        if self.reduction == "none":
            return rows.astype(logits.dtype).reshape(logits.shape[:-1])
        return float(value) * (logits2.shape[0] if self.reduction == "sum" else 1)

    def backward(self, dy=None):
        kind, target, shape = self._need_forward(self._cache)
        g = self._upstream(dy, shape[:-1], self._probs.dtype)
        rows = self._probs.shape[0]
        # the kernels divide by the row count M: "sum" and "none" scale it back
        scale = 1.0 if self.reduction == "mean" else float(rows)
        if self.reduction != "none" and g is not None:
            scale *= g
        dlogits = np.empty_like(self._probs)
        if kind == "hard":
            _core.softmax_cross_entropy_backward(self._probs, target, scale, dlogits)
        else:
            _core.soft_cross_entropy_backward(self._probs, target, scale, dlogits)
        if self.reduction == "none":
            dlogits *= g.reshape(rows, 1)
        return dlogits.reshape(shape)


class BCE(Loss):
    """Binary cross-entropy on probabilities (``torch.nn.BCELoss()``):
    ``mean( -(t * log p + (1 - t) * log(1 - p)) )`` with each log clamped at -100, as PyTorch,
    so ``p = 0`` or ``1`` gives a finite loss (``reduction``: mean, sum or per element).
    ``p`` must lie in ``[0, 1]``; ``t`` has ``p``'s shape.
    Gradient (PyTorch's): ``(p - t) / max(p * (1 - p), 1e-12) / n`` (``n`` = 1 unless "mean").
    """

    name = "bce"

    def __init__(self, reduction="mean"):
        super().__init__(reduction)
        self._cache = None

    def forward(self, pred, target):
        p, t = self._pred_and_same_shape_target(pred, target)
        lo, hi = p.min(), p.max()
        if not (lo >= 0 and hi <= 1):
            raise ValueError(f"BCE: pred must be probabilities in [0, 1] (use BCEWithLogits for "
                             f"logits), got values in [{lo}, {hi}] with shape {p.shape}")
        with np.errstate(divide="ignore"):
            log_p = np.maximum(np.log(p), -100.0)
            log_1mp = np.maximum(np.log1p(-p), -100.0)
        self._cache = (p, t)
        if self.reduction == "none":
            return -(t * (log_p - log_1mp) + log_1mp).astype(p.dtype)
        total = -float(np.vdot(t, log_p - log_1mp) + log_1mp.sum())
        return total / p.size if self.reduction == "mean" else total

    def backward(self, dy=None):
        p, t = self._need_forward(self._cache)
        g = self._upstream(dy, p.shape, p.dtype)
        denom = np.maximum(p * (1 - p), p.dtype.type(1e-12))
        if self.reduction == "none":
            return ((p - t) / denom) * g
        scale = (1.0 / p.size if self.reduction == "mean" else 1.0) * (1.0 if g is None else g)
        return ((p - t) / denom) * p.dtype.type(scale)


class BCEWithLogits(Loss):
    """Binary cross-entropy on logits (``torch.nn.BCEWithLogitsLoss()``), stable for any logit:
    ``mean( max(z, 0) - z * t + log(1 + exp(-|z|)) )`` (``reduction``: mean, sum or per
    element); gradient ``(sigmoid(z) - t) / n`` (``n`` = 1 unless "mean")."""

    name = "bce_with_logits"

    def __init__(self, reduction="mean"):
        super().__init__(reduction)
        self._cache = None

    def forward(self, pred, target):
        z, t = self._pred_and_same_shape_target(pred, target)
        self._cache = (z, t)
        losses = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
        return self._reduce(losses)

    def backward(self, dy=None):
        z, t = self._need_forward(self._cache)
        g = self._upstream(dy, z.shape, z.dtype)
        dz = np.empty_like(z)
        _core.sigmoid_forward(z, dz)
        dz -= t
        if self.reduction == "none":
            dz *= g
        else:
            scale = (1.0 / z.size if self.reduction == "mean" else 1.0) * (1.0 if g is None else g)
            dz *= dz.dtype.type(scale)
        return dz


class KLDivergenceNormal(Loss):
    """The VAE's KL term ``KL(N(mu, exp(logvar)) || N(0, I))``, summed over the latent axes and
    averaged over the batch (axis 0):

        loss = (1/N) * sum_i -0.5 * sum_j (1 + logvar_ij - mu_ij**2 - exp(logvar_ij))

    ``forward(mu, logvar) -> float``; ``backward() -> (dmu, dlogvar)`` with
    ``dmu = mu / N`` and ``dlogvar = 0.5 * (exp(logvar) - 1) / N``. Shapes: ``(N, ...)`` each.
    ``reduction="sum"`` sums over the batch too; ``"none"`` returns the per-sample terms
    ``(N,)`` and ``backward(dy)`` takes their upstream gradient ``(N,)``.
    """

    name = "kl_divergence_normal"

    def __init__(self, reduction="mean"):
        super().__init__(reduction)
        self._cache = None

    def forward(self, mu, logvar):
        mu = _as_float_array("KLDivergenceNormal", "mu", mu)
        logvar = _as_float_array("KLDivergenceNormal", "logvar", logvar, dtype=mu.dtype)
        if mu.shape != logvar.shape or mu.ndim < 1 or mu.shape[0] == 0:
            raise ValueError(f"KLDivergenceNormal: mu and logvar must share a shape (N, ...) with "
                             f"N >= 1, got {mu.shape} and {logvar.shape}")
        var = np.exp(logvar)
        self._cache = (mu, var)
        n = mu.shape[0]
        if self.reduction == "none":
            return -0.5 * (1 + logvar - mu * mu - var).reshape(n, -1).sum(1)
        total = -0.5 * float((1 + logvar - mu * mu - var).sum())
        return total / n if self.reduction == "mean" else total

    def backward(self, dy=None):
        mu, var = self._need_forward(self._cache)
        g = self._upstream(dy, mu.shape[:1], mu.dtype)
        if self.reduction == "none":
            scale = g.reshape((-1,) + (1,) * (mu.ndim - 1))
            return mu * scale, (var - 1) * (scale * mu.dtype.type(0.5))
        s = (1.0 / mu.shape[0] if self.reduction == "mean" else 1.0) * (1.0 if g is None else g)
        scale = mu.dtype.type(s)
        return mu * scale, (var - 1) * (scale * mu.dtype.type(0.5))


_BY_NAME = {
    "mse": MSE,
    "cross_entropy": CrossEntropy,
    "crossentropy": CrossEntropy,
    "bce": BCE,
    "bce_with_logits": BCEWithLogits,
    "kl_divergence_normal": KLDivergenceNormal,
}


def get(name):
    """A new loss by name (``"mse"``, ``"cross_entropy"``, ``"bce"``, ``"bce_with_logits"``),
    mean reduction; a ``Loss`` instance is returned as is."""
    if isinstance(name, Loss):
        return name
    if isinstance(name, type) and issubclass(name, Loss):
        return name()
    if not isinstance(name, str) or name.lower() not in _BY_NAME:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(_BY_NAME)}")
    return _BY_NAME[name.lower()]()
