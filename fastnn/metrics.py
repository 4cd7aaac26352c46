"""Evaluation metrics: ``metric(pred, target) -> float``.

    fnn.metrics.accuracy(logits, labels)          # fraction of argmax predictions that match
    fnn.metrics.get("accuracy")
    fnn.metrics.psnr(a, b, data_range)            # image quality (defined in fastnn._imaging)
    fnn.metrics.ssim(a, b, data_range)
"""
import numpy as np

from ._imaging import psnr, ssim

__all__ = ["accuracy", "psnr", "ssim", "get"]


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
