"""Fused optimizer updates: SGD (momentum, dampening, Nesterov, weight decay), AdaGrad, RMSProp,
each one pass over a parameter and its state, with torch.optim's rules (Adam / AdamW is compiled
at install: :mod:`fastnn._core.basic`, with the validation helpers used here).

Why numba rather than Cython: an update is a flat elementwise loop with a few branches on
loop-invariant scalars; numba compiles it for float32/float64 from one source (``prange`` over
elements) with no build step. In NumPy, Adam alone is ~12 passes over the parameter with
temporaries; here every state array is read once and written once. Each kernel has a serial twin
for small parameters, because a small MLP's bias vectors are far below the size where waking the
thread pool pays (see :mod:`fastnn._core.activation`).

Arithmetic: per-step scalars (bias corrections, decayed learning rate) are computed once in
Python in float64, as torch.optim does. The element arithmetic runs in the parameter's own
dtype, as torch.optim's float32 kernels do, in their order (AdaGrad and RMSProp divide g by the
denominator before scaling, as addcdiv): each kernel takes its scalars as one array cast to that
dtype and holds no float literal, so float32 stays float32 (float64 sqrt and division ran at
half the SIMD width: Adam over 200k float32 values took 530 us on one thread, 2.5 cycles a
value; AdaGrad's 200k on two threads 195 -> 59 us). One array argument also keeps numba's
dispatcher cheap (nine numpy scalars cost it ~10 us a call).
"""
import math

import numpy as np

from numba import njit, prange

from . import threads
from .activation import pick, serial_twin
from .basic import _number, _param_and_grad, _state, _step

threads.sync_numba_threads()


# ----------------------------------------------------------------------------------------------
# compiled kernels on flat (n,) arrays; no validation here
# ----------------------------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _sgd_update(param, grad, momentum_buf, scalars, nesterov, first_step):
    """g := grad + wd*p; b := g (first step) or momentum*b + (1-dampening)*g;
    p -= lr * (g + momentum*b if nesterov else b)  (p -= lr*g without momentum).
    ``scalars`` (lr, momentum, 1 - dampening, weight_decay) in the parameter's dtype."""
    lr, momentum, keep, weight_decay = scalars[0], scalars[1], scalars[2], scalars[3]
    use_momentum = momentum != 0
    for i in prange(param.shape[0]):
        p = param[i]
        g = grad[i]
        if weight_decay != 0:
            g = g + weight_decay * p
        if use_momentum:
            if first_step:
                b = g
            else:
                b = momentum * momentum_buf[i] + keep * g
            momentum_buf[i] = b
            if nesterov:
                g = g + momentum * b
            else:
                g = b
        param[i] = p - lr * g


@njit(parallel=True, cache=True)
def _adagrad_update(param, grad, state_sum, scalars):
    """g := grad + wd*p; sum += g^2; p -= clr * (g / (sqrt(sum) + eps)).
    ``scalars`` (clr, weight_decay, eps) in the parameter's dtype."""
    clr, weight_decay, eps = scalars[0], scalars[1], scalars[2]
    for i in prange(param.shape[0]):
        p = param[i]
        g = grad[i]
        if weight_decay != 0:
            g = g + weight_decay * p
        s = state_sum[i] + g * g
        state_sum[i] = s
        param[i] = p - clr * (g / (math.sqrt(s) + eps))


@njit(parallel=True, cache=True)
def _rmsprop_update(param, grad, square_avg, scalars):
    """g := grad + wd*p; a := alpha*a + (1-alpha)*g^2; p -= lr * (g / (sqrt(a) + eps)).
    ``scalars`` (lr, alpha, 1 - alpha, eps, weight_decay) in the parameter's dtype."""
    lr, alpha, one_minus_alpha, eps = scalars[0], scalars[1], scalars[2], scalars[3]
    weight_decay = scalars[4]
    for i in prange(param.shape[0]):
        p = param[i]
        g = grad[i]
        if weight_decay != 0:
            g = g + weight_decay * p
        a = alpha * square_avg[i] + one_minus_alpha * g * g
        square_avg[i] = a
        param[i] = p - lr * (g / (math.sqrt(a) + eps))


_sgd_update_serial = serial_twin(_sgd_update)
_adagrad_update_serial = serial_twin(_adagrad_update)
_rmsprop_update_serial = serial_twin(_rmsprop_update)


# ----------------------------------------------------------------------------------------------
# public wrappers
# ----------------------------------------------------------------------------------------------

def sgd_update(param, grad, momentum_buf, lr, momentum, dampening, nesterov, weight_decay, first_step):
    """torch.optim.SGD's rule in one pass; on ``first_step`` the momentum buffer becomes the
    (decayed) gradient. ``momentum_buf`` may be None when momentum == 0."""
    where = "sgd_update"
    _param_and_grad(where, param, grad)
    lr = _number(where, "lr", lr)
    momentum = _number(where, "momentum", momentum)
    dampening = _number(where, "dampening", dampening)
    weight_decay = _number(where, "weight_decay", weight_decay)
    if momentum != 0.0 or momentum_buf is not None:
        if momentum_buf is None:
            raise ValueError(f"{where}: momentum {momentum} needs a momentum_buf of shape {param.shape}")
        buf = _state(where, "momentum_buf", momentum_buf, param)
    else:
        buf = param.reshape(-1)  # never touched when momentum == 0
    sgd_kernel(param.size)(param.reshape(-1), grad.reshape(-1), buf,
                           sgd_scalars(param.dtype, lr, momentum, dampening, weight_decay),
                           bool(nesterov), bool(first_step))


def adagrad_update(param, grad, state_sum, lr, lr_decay, weight_decay, eps, step):
    """torch.optim.Adagrad's rule: clr = lr / (1 + (step - 1) * lr_decay)."""
    where = "adagrad_update"
    _param_and_grad(where, param, grad)
    state = _state(where, "state_sum", state_sum, param)
    lr = _number(where, "lr", lr)
    lr_decay = _number(where, "lr_decay", lr_decay)
    step = _step(where, step)
    adagrad_kernel(param.size)(param.reshape(-1), grad.reshape(-1), state,
                               adagrad_scalars(param.dtype, lr, lr_decay,
                                               _number(where, "weight_decay", weight_decay),
                                               _number(where, "eps", eps), step))


def rmsprop_update(param, grad, square_avg, lr, alpha, eps, weight_decay):
    """torch.optim.RMSprop's rule (not centered, no momentum)."""
    where = "rmsprop_update"
    _param_and_grad(where, param, grad)
    state = _state(where, "square_avg", square_avg, param)
    rmsprop_kernel(param.size)(param.reshape(-1), grad.reshape(-1), state,
                               rmsprop_scalars(param.dtype, _number(where, "lr", lr),
                                               _number(where, "alpha", alpha),
                                               _number(where, "eps", eps),
                                               _number(where, "weight_decay", weight_decay)))


def sgd_scalars(dtype, lr, momentum, dampening, weight_decay):
    """The SGD kernel's scalar operand for a ``dtype`` parameter (validated floats)."""
    return np.array((lr, momentum, 1.0 - dampening, weight_decay), dtype=dtype)


def adagrad_scalars(dtype, lr, lr_decay, weight_decay, eps, step):
    """The AdaGrad kernel's scalar operand: clr = lr / (1 + (step - 1) * lr_decay), in float64
    as torch.optim forms it, then weight_decay and eps, in ``dtype``."""
    return np.array((lr / (1.0 + (step - 1) * lr_decay), weight_decay, eps), dtype=dtype)


def rmsprop_scalars(dtype, lr, alpha, eps, weight_decay):
    """The RMSProp kernel's scalar operand (lr, alpha, 1 - alpha, eps, weight_decay)."""
    return np.array((lr, alpha, 1.0 - alpha, eps, weight_decay), dtype=dtype)


def sgd_kernel(size):
    """The compiled SGD kernel for a parameter of ``size`` values, called as ``kernel(param,
    grad, momentum_buf, sgd_scalars(...), nesterov, first_step)`` on flat arrays sgd_update has
    validated (the buffer: the parameter itself when momentum is 0, never touched then)."""
    return pick(_sgd_update, _sgd_update_serial, size)


def adagrad_kernel(size):
    """The compiled AdaGrad kernel: ``kernel(param, grad, state_sum, adagrad_scalars(...))`` on
    validated flat arrays."""
    return pick(_adagrad_update, _adagrad_update_serial, size)


def rmsprop_kernel(size):
    """The compiled RMSProp kernel: ``kernel(param, grad, square_avg, rmsprop_scalars(...))`` on
    validated flat arrays."""
    return pick(_rmsprop_update, _rmsprop_update_serial, size)
