"""Evaluation metrics: ``metric(pred, target) -> float``.

    fnn.metrics.accuracy(logits, labels)          # fraction of argmax predictions that match
    fnn.metrics.get("accuracy")
    fnn.metrics.psnr(a, b, data_range)            # image quality (defined in fastnn._imaging)
    fnn.metrics.ssim(a, b, data_range)
    fnn.metrics.kl_divergence(p, q)                # KL(p || q) of discrete distributions, nats
    fnn.metrics.js_divergence(p, q)                # Jensen-Shannon, symmetric, <= log 2
"""
import numpy as np
from scipy.special import rel_entr

from ._imaging import psnr, ssim

__all__ = ["accuracy", "psnr", "ssim", "kl_divergence", "js_divergence", "get"]


def _distributions(where, p, q, axis):
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    try:
        p, q = np.broadcast_arrays(p, q)
    except ValueError:
        raise ValueError(f"{where}: p {p.shape} and q {q.shape} do not broadcast") from None
    if p.ndim == 0:
        raise ValueError(f"{where}: p and q must have an axis of outcomes, got scalars")
    if not (np.all(p >= 0) and np.all(q >= 0)):
        raise ValueError(f"{where}: probabilities must be >= 0 (and not NaN)")
    np.sum(p, axis=axis)  # raises a clear AxisError for a bad axis
    return p, q


def _value(a):
    return float(a) if np.ndim(a) == 0 else a


def kl_divergence(p, q, axis=-1):
    r"""Kullback-Leibler divergence :math:`KL(p \| q) = \sum_i p_i \log(p_i / q_i)` (natural
    log) between discrete distributions along ``axis``; a float, or an array over the other axes.

    Terms with ``p_i = 0`` count 0; ``p_i > 0`` where ``q_i = 0`` gives ``inf``. The inputs are
    used as given (not renormalised: pass rows that sum to 1). Not symmetric:
    ``KL(p || q) != KL(q || p)`` in general.
    """
    p, q = _distributions("kl_divergence", p, q, axis)
    return _value(rel_entr(p, q).sum(axis=axis))


def js_divergence(p, q, axis=-1):
    r"""Jensen-Shannon divergence :math:`\frac12 KL(p \| m) + \frac12 KL(q \| m)` with
    :math:`m = (p + q) / 2` (natural log): symmetric, finite, between 0 and ``log 2``. The GAN
    objective at the optimal discriminator is ``2 * JSD(p_data || p_g) - log 4``.
    """
    p, q = _distributions("js_divergence", p, q, axis)
    m = 0.5 * (p + q)
    return _value(0.5 * rel_entr(p, m).sum(axis=axis) + 0.5 * rel_entr(q, m).sum(axis=axis))


def accuracy(pred, target, threshold=0.5):
    """Fraction of correct predictions.

    - ``pred (N, ..., C)`` with ``C > 1`` and integer labels ``(N, ...)``: argmax over the last axis;
    - ``pred (N, ..., C)`` with one-hot / probability targets of the same shape: argmax of both;
    - binary ``pred`` with ``target`` of the same shape (or ``C == 1``): ``pred > threshold``
      against ``target > 0.5`` (use ``threshold=0`` for logits, 0.5 for probabilities).
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.ndim >= 1 and pred.shape[-1] > 1 and target.shape == pred.shape[:-1]:
        if target.dtype.kind not in "iu":
            raise TypeError(f"accuracy: labels with shape {target.shape} must be integers, got "
                            f"dtype {target.dtype} (pred {pred.shape})")
        return float(np.mean(pred.argmax(-1) == target)) if target.size else 0.0
    if pred.ndim >= 2 and pred.shape[-1] > 1 and target.shape == pred.shape:
        return float(np.mean(pred.argmax(-1) == target.argmax(-1)))
    if pred.shape == target.shape or (pred.ndim >= 1 and pred.shape[-1] == 1
                                      and target.shape == pred.shape[:-1]):
        pred = pred.reshape(target.shape)
        return float(np.mean((pred > threshold) == (target > 0.5))) if target.size else 0.0
    raise ValueError(f"accuracy: target of shape {target.shape} does not fit predictions of "
                     f"shape {pred.shape} (expected labels {pred.shape[:-1]} or {pred.shape})")


_BY_NAME = {"accuracy": accuracy, "acc": accuracy}


def get(name):
    """The metric function called ``name``; a callable is returned as is."""
    if callable(name):
        return name
    if not isinstance(name, str) or name.lower() not in _BY_NAME:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(_BY_NAME)}")
    return _BY_NAME[name.lower()]
