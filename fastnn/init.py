"""Weight initialisation: PyTorch's schemes, drawn from fastnn's one generator.

Every initialiser has the signature ``init(shape, fan_in=None, fan_out=None, dtype=np.float32)``
and returns a new array. The fans default to PyTorch's rule for ``shape`` (see
:func:`fan_in_and_fan_out`); a layer initialising a bias passes its weight's fans, which is how
PyTorch's default bias bound ``1/sqrt(fan_in)`` is reproduced. ``fastnn.seed(n)`` makes every
draw reproducible.

    name             distribution                                    PyTorch equivalent
    torch_default    U(-1/sqrt(fan_in), 1/sqrt(fan_in))              nn.Linear / nn.Conv2d default
    he_normal        N(0, 2/fan_in)                                  kaiming_normal_(relu)
    he_uniform       U(-sqrt(6/fan_in), sqrt(6/fan_in))              kaiming_uniform_(relu)
    xavier_normal    N(0, 2/(fan_in + fan_out))                      xavier_normal_
    xavier_uniform   U(-sqrt(6/(fan_in+fan_out)), +sqrt(...))        xavier_uniform_
    zeros, ones      constants                                       zeros_, ones_

Layers with weights take ``weight_init=`` and ``bias_init=`` (a name above or a callable with
the same signature); :func:`get` resolves either.

Example::

    w = fnn.init.he_normal((256, 784))                 # std sqrt(2/784)
    layer = L.Dense(784, 256, weight_init="xavier_uniform", bias_init="zeros")
"""
import math

import numpy as np

from ._random import rng

__all__ = ["fan_in_and_fan_out", "torch_default", "he_normal", "he_uniform", "xavier_normal",
           "xavier_uniform", "zeros", "ones", "get"]


def fan_in_and_fan_out(shape):
    """PyTorch's ``_calculate_fan_in_and_fan_out``: for ``(d0, d1, *k)``, fan_in = d1 * prod(k),
    fan_out = d0 * prod(k).

    So Dense ``(out, in)`` gives (in, out), Conv2D ``(out, in, kh, kw)`` gives (in*kh*kw,
    out*kh*kw), and ConvTranspose2D ``(in, out, kh, kw)`` gives (out*kh*kw, in*kh*kw), exactly
    as PyTorch computes them for its ConvTranspose2d weight. A 1-D shape has fan_in = fan_out =
    its length (PyTorch refuses; a bias on its own has no better answer).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        raise ValueError("init: cannot compute fans of a scalar shape ()")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fans(shape, fan_in, fan_out):
    default_in, default_out = fan_in_and_fan_out(shape)
    fan_in = default_in if fan_in is None else int(fan_in)
    fan_out = default_out if fan_out is None else int(fan_out)
    return fan_in, fan_out


def _uniform(shape, bound, dtype):
    return rng().uniform(-bound, bound, size=tuple(shape)).astype(dtype, copy=False)


def _normal(shape, std, dtype):
    return (rng().standard_normal(size=tuple(shape)) * std).astype(dtype, copy=False)


def _positive(name, fan):
    if fan <= 0:
        raise ValueError(f"init.{name}: fan must be positive, got {fan}")
    return fan


def torch_default(shape, fan_in=None, fan_out=None, dtype=np.float32):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Linear/Conv weights
    (``kaiming_uniform_(a=sqrt(5))``) and, given the weight's fan_in, for their biases."""
    fan_in, _ = _fans(shape, fan_in, fan_out)
    return _uniform(shape, 1.0 / math.sqrt(_positive("torch_default", fan_in)), dtype)


def he_normal(shape, fan_in=None, fan_out=None, dtype=np.float32):
    """N(0, std^2) with std = sqrt(2 / fan_in) (Kaiming/He, for ReLU networks)."""
    fan_in, _ = _fans(shape, fan_in, fan_out)
    return _normal(shape, math.sqrt(2.0 / _positive("he_normal", fan_in)), dtype)


def he_uniform(shape, fan_in=None, fan_out=None, dtype=np.float32):
    """U(-b, b) with b = sqrt(6 / fan_in) (Kaiming/He uniform, for ReLU networks)."""
    fan_in, _ = _fans(shape, fan_in, fan_out)
    return _uniform(shape, math.sqrt(6.0 / _positive("he_uniform", fan_in)), dtype)


def xavier_normal(shape, fan_in=None, fan_out=None, dtype=np.float32):
    """N(0, std^2) with std = sqrt(2 / (fan_in + fan_out)) (Glorot)."""
    fan_in, fan_out = _fans(shape, fan_in, fan_out)
    return _normal(shape, math.sqrt(2.0 / _positive("xavier_normal", fan_in + fan_out)), dtype)


def xavier_uniform(shape, fan_in=None, fan_out=None, dtype=np.float32):
    """U(-b, b) with b = sqrt(6 / (fan_in + fan_out)) (Glorot uniform)."""
    fan_in, fan_out = _fans(shape, fan_in, fan_out)
    return _uniform(shape, math.sqrt(6.0 / _positive("xavier_uniform", fan_in + fan_out)), dtype)


def zeros(shape, fan_in=None, fan_out=None, dtype=np.float32):
    """All zeros."""
    return np.zeros(tuple(shape), dtype=dtype)


def ones(shape, fan_in=None, fan_out=None, dtype=np.float32):
    """All ones."""
    return np.ones(tuple(shape), dtype=dtype)


_BY_NAME = {f.__name__: f for f in (torch_default, he_normal, he_uniform, xavier_normal,
                                    xavier_uniform, zeros, ones)}


def get(init, where="init"):
    """The initialiser called ``init``, or ``init`` itself if it is callable."""
    if callable(init):
        return init
    if isinstance(init, str) and init in _BY_NAME:
        return _BY_NAME[init]
    raise ValueError(f"{where}: unknown initialiser {init!r}; use a callable "
                     f"init(shape, fan_in, fan_out, dtype) or one of {sorted(_BY_NAME)}")
