"""Validation in front of every compiled entry point.

Compiled code runs with bounds checks off, so nothing malformed may reach it: every public kernel
wrapper calls these first. Errors name the kernel (or layer) and the shapes involved.
"""
import math

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES
_ndarray = np.ndarray


def _shape(a):
    return tuple(a.shape) if hasattr(a, "shape") else type(a).__name__


def check_float(where, name, a, ndim=None, dtype=None):
    """``a`` is a C-contiguous float32/float64 ndarray (of rank ``ndim``, of ``dtype``)."""
    # the common case in a few identity tests (a small model's step makes dozens of these calls);
    # anything else goes through the checks below, which raise the errors
    if (type(a) is _ndarray and ((dt := a.dtype) is _F32 or dt is _F64)
            and (dtype is None or dt == dtype) and (ndim is None or a.ndim == ndim)
            and a.flags.c_contiguous):
        return a
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{where}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{where}: {name} must be float32 or float64, got {a.dtype} with shape {a.shape}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{where}: {name} has dtype {a.dtype} with shape {a.shape}, expected {np.dtype(dtype)}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{where}: {name} must have {ndim} dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{where}: {name} with shape {a.shape} must be C-contiguous")
    return a


def check_index(where, name, a, shape=None, dtype=np.int64):
    """``a`` is a C-contiguous integer ndarray of exactly ``dtype`` (and ``shape``)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{where}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != np.dtype(dtype):
        raise TypeError(f"{where}: {name} must be {np.dtype(dtype)}, got {a.dtype} with shape {a.shape}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{where}: {name} must have shape {tuple(shape)}, got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{where}: {name} with shape {a.shape} must be C-contiguous")
    return a


def check_like(where, name, a, shape, dtype, context=""):
    """``a`` is a C-contiguous array of exactly ``shape`` and ``dtype``."""
    check_float(where, name, a, dtype=dtype)
    if tuple(a.shape) != tuple(shape):
        extra = f" ({context})" if context else ""
        raise ValueError(f"{where}: {name} must have shape {tuple(shape)}{extra}, got {a.shape}")
    return a


def check_writable(where, name, a):
    if not a.flags.writeable:
        raise ValueError(f"{where}: output {name} with shape {a.shape} is read-only")
    return a


def check_out(where, name, a, shape, dtype, context=""):
    """An output buffer: right shape and dtype, C-contiguous and writable."""
    if (type(a) is _ndarray and ((dt := a.dtype) is _F32 or dt is _F64) and dt == dtype
            and a.shape == tuple(shape)):
        flags = a.flags
        if flags.c_contiguous and flags.writeable:
            return a
    check_like(where, name, a, shape, dtype, context)
    return check_writable(where, name, a)


def check_optional_out(where, name, a, shape, dtype, context=""):
    if a is None:
        return None
    return check_out(where, name, a, shape, dtype, context)


def check_pair(where, name, v, minimum):
    """An int or a pair of ints, each >= minimum; returns a tuple of two Python ints."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v), int(v))
    try:
        a, b = v
        a, b = int(a), int(b)
        if a != v[0] or b != v[1]:
            raise TypeError
    except (TypeError, ValueError):
        raise TypeError(f"{where}: {name} must be an int or a pair of ints, got {v!r}") from None
    if a < minimum or b < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {(a, b)}")
    return a, b


def conv_out_size(size, kernel, stride, padding):
    """Output length of a sliding window (floor mode, as PyTorch)."""
    return (size + 2 * padding - kernel) // stride + 1


def activation_code(where, relu, negative_slope):
    """(act, slope) for kernels with a fused activation: 0 none, 1 ReLU, 2 leaky ReLU (``relu``
    and a ``negative_slope``)."""
    if negative_slope is None:
        return (1 if relu else 0), 0.0
    if isinstance(negative_slope, bool):
        raise TypeError(f"{where}: negative_slope must be a number, got {negative_slope!r}")
    try:
        slope = float(negative_slope)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: negative_slope must be a number, got {negative_slope!r}") from None
    if not relu:
        raise ValueError(f"{where}: negative_slope needs relu=True (the fused leaky ReLU)")
    if not (slope >= 0 and math.isfinite(slope)):
        # a backward that reads the sign of the input off the output needs a slope >= 0
        raise ValueError(f"{where}: negative_slope must be finite and >= 0, got {negative_slope!r}")
    return 2, slope


def check_unary(where, x, out, names=("x", "out")):
    """An elementwise kernel's input ``x`` (float) and its output ``out`` (x's shape and dtype)."""
    if (type(x) is _ndarray and type(out) is _ndarray and ((dt := x.dtype) is _F32 or dt is _F64)
            and out.dtype is dt and out.shape == x.shape and x.flags.c_contiguous):
        flags = out.flags
        if flags.c_contiguous and flags.writeable:
            return
    check_float(where, names[0], x)
    check_out(where, names[1], out, x.shape, x.dtype, f"the shape of {names[0]}")


def check_binary(where, a, dy, dx, a_name):
    """An elementwise backward's saved ``a`` (named ``a_name``), ``dy`` and output ``dx``: all of
    a's shape and dtype."""
    if (type(a) is _ndarray and type(dy) is _ndarray and type(dx) is _ndarray
            and ((dt := a.dtype) is _F32 or dt is _F64) and dy.dtype is dt and dx.dtype is dt
            and dy.shape == a.shape and dx.shape == a.shape and a.flags.c_contiguous
            and dy.flags.c_contiguous):
        flags = dx.flags
        if flags.c_contiguous and flags.writeable:
            return
    check_float(where, a_name, a)
    check_float(where, "dy", dy, dtype=a.dtype)
    if dy.shape != a.shape:
        raise ValueError(f"{where}: dy must have the shape of {a_name} {a.shape}, got {dy.shape}")
    check_out(where, "dx", dx, a.shape, a.dtype, f"the shape of {a_name}")
