"""Optimizers with PyTorch's update rules and defaults, so one model, data set and set of
hyperparameters give the same trajectory in both.

    opt = fnn.optim.Adam(model.parameters(), lr=1e-3)
    model.zero_grad(); model.backward(loss.backward()); opt.step()

Every optimizer has ``step()``, ``zero_grad()``, an ``lr`` attribute a schedule may change, and
``state_dict()`` / ``load_state_dict()`` so training can resume. The update of each parameter is
one fused pass of a kernel from ``fastnn._core``. Look-up by name:
``fnn.optim.get("adam", params, lr=1e-3)``.
"""
import functools
import importlib
import math
import operator

import numpy as np

from . import _core
from .inference import weights_changed as _weights_changed

__all__ = ["Optimizer", "SGD", "AdaGrad", "RMSProp", "Adam", "AdamW", "get",
           "clip_grad_norm", "clip_weights"]


def _as_param_list(where, params):
    params = list(params)
    if not params:
        raise ValueError(f"{where}: got an empty parameter list")
    for i, p in enumerate(params):
        if not (hasattr(p, "data") and hasattr(p, "grad") and isinstance(p.data, np.ndarray)):
            raise TypeError(f"{where}: parameter {i} must be a fastnn Parameter (with .data and "
                            f".grad arrays), got {type(p).__name__}")
    if len({id(p) for p in params}) != len(params):
        raise ValueError(f"{where}: a parameter appears more than once in the parameter list")
    return params


def _check_nonneg(where, **values):
    for name, v in values.items():
        if not (isinstance(v, (int, float, np.floating, np.integer)) and v >= 0):
            raise ValueError(f"{where}: {name} must be a number >= 0, got {v!r}")


_KERNEL_MODULES = {}


def _kernels(name):
    """The fastnn._core module ``name``, imported on first use (as _core loads its kernels)."""
    module = _KERNEL_MODULES.get(name)
    if module is None:
        module = _KERNEL_MODULES[name] = importlib.import_module("._core." + name, __package__)
    return module


class Optimizer:
    """Base class: holds the parameters, per-parameter state and the hyperparameters.

    Subclasses list their hyperparameters in ``_hyper`` and their per-parameter state arrays in
    ``_slots``, and implement ``_update(p, state)``. The built-in ones also name their ``_core``
    update and its compiled kernel (``_core_update``, ``_kernel_factory``) and give the kernel's
    scalars (``_kernel_scalars``): step() then checks a parameter once, binds the kernel to its
    flat arrays, and calls that each step (a checked ``_core`` call had cost ~10 us a parameter:
    SGD with momentum on seed-mlp's 4 parameters 33 -> 17 us a step).
    """

    _hyper = ("lr",)
    _slots = ()

    def __init__(self, params, lr):
        self.params = _as_param_list(type(self).__name__, params)
        _check_nonneg(type(self).__name__, lr=lr)
        self.lr = float(lr)
        self.state = [dict() for _ in self.params]

    def zero_grad(self):
        for p in self.params:
            if hasattr(p, "zero_grad"):  # a Parameter only marks it (see Parameter)
                p.zero_grad()
            else:
                p.grad.fill(0)

    # the _core update function step() calls, and the factory (in _core.<_kernel_module>) of
    # its compiled kernel, which step() calls directly on views bound when _prepare checks a parameter
    _core_update = None
    _kernel_factory = None
    _kernel_module = "optim"  # the fastnn._core module that defines both

    def step(self):
        """Apply one update to every parameter from its ``.grad``."""
        kernels = _kernels(self._kernel_module)

        # with _core's update replaced (the benchmarks' NumPy reference path swaps its
        # attributes), go through it, parameter by parameter
        direct = (self._core_update is not None
                  and getattr(_core, self._core_update) is getattr(kernels, self._core_update))
        numbers = self._step_numbers(kernels._number) if direct else None
        scalars = {}  # the kernel's scalar arguments depend on the dtype and the step count only
        for p, state in zip(self.params, self.state):
            checked = self._prepare(p, state)
            t = state["step"] = state.get("step", 0) + 1
            if not direct:
                self._update(p, state)
                continue
            if checked or "_kernel" not in state:
                kernel = getattr(kernels, self._kernel_factory)(p.data.size)
                state["_kernel"] = functools.partial(
                    kernel, *(a.reshape(-1) for a in self._kernel_arrays(p, state)))
            key = (p.data.dtype, t)
            args = scalars.get(key)
            if args is None:
                args = scalars[key] = self._kernel_scalars(kernels, p.data.dtype, t, numbers)
            state["_kernel"](*args)
        _weights_changed()

    _flags = ()  # hyperparameters that are not numbers

    def _step_numbers(self, number):
        """The hyperparameters as validated floats, once per step (for _kernel_scalars)."""
        return {name: number(type(self).__name__, name, getattr(self, name))
                for name in self._hyper if name not in self._flags}

    def _kernel_arrays(self, p, state):
        """The arrays the compiled kernel updates, in its order (p.data, p.grad, slots...)."""
        return (p.data, p.grad) + tuple(state[slot] for slot in self._slots)

    def _kernel_scalars(self, kernels, dtype, step, numbers):
        """The kernel's remaining arguments for the update of a ``dtype`` parameter whose step
        count is now ``step`` (``kernels``: the fastnn._core module ``_kernel_module``)."""
        raise NotImplementedError

    def _prepare(self, p, state):
        """Check p and make its state arrays, unless they are the arrays checked last time (and
        p.data is still writeable); returns whether it checked (a small model's per-parameter
        checks had cost more than its kernels)."""
        slots = self._slots
        seen = state.get("_checked")
        data = p.data
        if (seen is not None and seen[0] is data and seen[1] is p.grad and data.flags.writeable
                and len(seen) == 2 + len(slots)
                and all(map(operator.is_, map(state.get, slots), seen[2:]))):
            return False
        self._check_grad(p)
        self._init_state(p, state)
        state["_checked"] = (p.data, p.grad) + tuple(state[slot] for slot in slots)
        return True

    def _check_grad(self, p):
        # checked here so the error names the optimizer and the parameter, not a kernel
        data = p.data
        if not isinstance(data, np.ndarray) or data.dtype not in (np.float32, np.float64):
            raise TypeError(f"{type(self).__name__}: parameter {getattr(p, 'name', '?')!r} must be "
                            f"a float32 or float64 array, got {getattr(data, 'dtype', type(data))} "
                            f"with shape {np.shape(data)}")
        if not data.flags.c_contiguous or not data.flags.writeable:
            raise ValueError(f"{type(self).__name__}: parameter {getattr(p, 'name', '?')!r} with "
                             f"shape {data.shape} must be a C-contiguous, writeable array (it is "
                             f"updated in place)")
        if p.grad.shape != p.data.shape or p.grad.dtype != p.data.dtype:
            raise ValueError(f"{type(self).__name__}: parameter {getattr(p, 'name', '?')!r} has "
                             f"data {p.data.shape} {p.data.dtype} but grad {p.grad.shape} "
                             f"{p.grad.dtype}")

    def _init_state(self, p, state):
        for slot in self._slots:
            buf = state.get(slot)
            if buf is None or buf.shape != p.data.shape:
                state[slot] = np.zeros_like(p.data)
            elif buf.dtype != p.data.dtype:  # the model was cast with astype
                state[slot] = np.ascontiguousarray(buf, dtype=p.data.dtype)

    def _update(self, p, state):
        raise NotImplementedError

    def hyperparameters(self):
        out = {}
        for name in self._hyper:
            v = getattr(self, name)
            out[name] = list(v) if isinstance(v, tuple) else v
        return out

    def state_dict(self):
        """``{"class", "hyperparameters", "state"}``; ``state`` is one dict per parameter (in
        order) of its step count and state arrays (copies)."""
        state = []
        for s in self.state:
            state.append({k: (v.copy() if isinstance(v, np.ndarray) else v)
                          for k, v in s.items() if not k.startswith("_")})
        return {"class": type(self).__name__, "hyperparameters": self.hyperparameters(),
                "state": state}

    def load_state_dict(self, state_dict):
        """Restore ``state_dict()`` output; the parameter count and shapes must match."""
        where = type(self).__name__
        cls = state_dict.get("class")
        if cls != where:
            raise ValueError(f"{where}.load_state_dict: state is from a {cls} optimizer")
        state = state_dict["state"]
        if len(state) != len(self.params):
            raise ValueError(f"{where}.load_state_dict: state has {len(state)} parameters, "
                             f"this optimizer has {len(self.params)}")
        new_state = []
        for i, (p, s) in enumerate(zip(self.params, state)):
            entry = {}
            for k, v in s.items():
                if k == "step":
                    entry[k] = int(v)
                    continue
                v = np.asarray(v)
                if v.shape != p.data.shape:
                    raise ValueError(f"{where}.load_state_dict: state {k!r} of parameter {i} has "
                                     f"shape {v.shape}, the parameter has {p.data.shape}")
                entry[k] = np.array(v, dtype=p.data.dtype, order="C")
            new_state.append(entry)
        for name, v in state_dict.get("hyperparameters", {}).items():
            setattr(self, name, tuple(v) if isinstance(v, list) else v)
        self.state = new_state

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (PyTorch's rule):

        g = grad + weight_decay * p
        b = g (first step), else momentum * b + (1 - dampening) * g
        g = g + momentum * b if nesterov else b          (when momentum != 0)
        p = p - lr * g
    """

    _hyper = ("lr", "momentum", "dampening", "nesterov", "weight_decay")

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0):
        super().__init__(params, lr)
        _check_nonneg("SGD", momentum=momentum, dampening=dampening, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum requires momentum > 0 and dampening = 0")
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.nesterov, self.weight_decay = bool(nesterov), float(weight_decay)

    _core_update, _kernel_factory = "sgd_update", "sgd_kernel"
    _flags = ("nesterov",)

    @property
    def _slots(self):
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _kernel_arrays(self, p, state):
        # without momentum the kernel never reads its buffer argument: the parameter stands in
        buf = state["momentum_buffer"] if self.momentum != 0 else p.data
        return p.data, p.grad, buf

    def _kernel_scalars(self, kernels, dtype, step, n):
        return (kernels.sgd_scalars(dtype, n["lr"], n["momentum"], n["dampening"],
                                    n["weight_decay"]), bool(self.nesterov), step == 1)

    def _update(self, p, state):
        if self.momentum != 0:
            buf = state["momentum_buffer"]
        else:  # never read with momentum 0, but the kernel takes an array; allocated once
            buf = state.get("_unused")
            if buf is None or buf.shape != p.data.shape or buf.dtype != p.data.dtype:
                buf = state["_unused"] = np.empty_like(p.data)
        _core.sgd_update(p.data, p.grad, buf, self.lr, self.momentum, self.dampening,
                         self.nesterov, self.weight_decay, state["step"] == 1)


class AdaGrad(Optimizer):
    """AdaGrad (PyTorch's rule, ``initial_accumulator_value=0``):

        g = grad + weight_decay * p;  clr = lr / (1 + (step - 1) * lr_decay)
        sum = sum + g*g;  p = p - clr * g / (sqrt(sum) + eps)
    """

    _hyper = ("lr", "lr_decay", "weight_decay", "eps")
    _slots = ("sum",)

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10):
        super().__init__(params, lr)
        _check_nonneg("AdaGrad", lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)
        self.lr_decay, self.weight_decay, self.eps = float(lr_decay), float(weight_decay), float(eps)

    _core_update, _kernel_factory = "adagrad_update", "adagrad_kernel"

    def _kernel_scalars(self, kernels, dtype, step, n):
        return (kernels.adagrad_scalars(dtype, n["lr"], n["lr_decay"], n["weight_decay"], n["eps"],
                                        step),)

    def _update(self, p, state):
        _core.adagrad_update(p.data, p.grad, state["sum"], self.lr, self.lr_decay,
                             self.weight_decay, self.eps, state["step"])


class RMSProp(Optimizer):
    """RMSProp (PyTorch's rule, no momentum, not centred):

        g = grad + weight_decay * p
        v = alpha * v + (1 - alpha) * g*g;  p = p - lr * g / (sqrt(v) + eps)
    """

    _hyper = ("lr", "alpha", "eps", "weight_decay")
    _slots = ("square_avg",)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        _check_nonneg("RMSProp", alpha=alpha, eps=eps, weight_decay=weight_decay)
        if alpha > 1:
            raise ValueError(f"RMSProp: alpha must be in [0, 1], got {alpha}")
        self.alpha, self.eps, self.weight_decay = float(alpha), float(eps), float(weight_decay)

    _core_update, _kernel_factory = "rmsprop_update", "rmsprop_kernel"

    def _kernel_scalars(self, kernels, dtype, step, n):
        return (kernels.rmsprop_scalars(dtype, n["lr"], n["alpha"], n["eps"], n["weight_decay"]),)

    def _update(self, p, state):
        _core.rmsprop_update(p.data, p.grad, state["square_avg"], self.lr, self.alpha, self.eps,
                             self.weight_decay)


class Adam(Optimizer):
    """Adam (PyTorch's rule; weight decay is L2 added to the gradient):

        g = grad + weight_decay * p
        m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
        p = p - lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)
    """

    _hyper = ("lr", "betas", "eps", "weight_decay")
    _slots = ("exp_avg", "exp_avg_sq")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        name = type(self).__name__
        try:
            b1, b2 = (float(b) for b in betas)
        except (TypeError, ValueError):
            raise TypeError(f"{name}: betas must be a pair of floats, got {betas!r}") from None
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"{name}: betas must lie in [0, 1), got {betas!r}")
        _check_nonneg(name, eps=eps, weight_decay=weight_decay)
        self.betas, self.eps, self.weight_decay = (b1, b2), float(eps), float(weight_decay)

    _core_update, _kernel_factory, _kernel_module = "adam_update", "adam_kernel", "basic"

    def _step_numbers(self, number):
        name = type(self).__name__
        b1, b2 = (number(name, "betas", b) for b in self.betas)
        return {"lr": number(name, "lr", self.lr), "eps": number(name, "eps", self.eps),
                "weight_decay": number(name, "weight_decay", self.weight_decay), "b1": b1,
                "b2": b2}

    def _kernel_scalars(self, kernels, dtype, step, n):
        return (kernels.adam_scalars(dtype, n["lr"], n["b1"], n["b2"], n["eps"], n["weight_decay"],
                                     step, self._decoupled),)

    def _update(self, p, state):
        b1, b2 = self.betas
        _core.adam_update(p.data, p.grad, state["exp_avg"], state["exp_avg_sq"], self.lr, b1, b2,
                          self.eps, self.weight_decay, state["step"], self._decoupled)


class AdamW(Adam):
    """AdamW (PyTorch's rule): Adam with decoupled weight decay, ``p = p * (1 - lr*wd)`` before
    the Adam step; ``weight_decay`` defaults to 1e-2."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


_BY_NAME = {"sgd": SGD, "adagrad": AdaGrad, "rmsprop": RMSProp, "adam": Adam, "adamw": AdamW}


def get(name, params, **kwargs):
    """A new optimizer by name (``"sgd"``, ``"adagrad"``, ``"rmsprop"``, ``"adam"``, ``"adamw"``)
    over ``params`` with keyword hyperparameters, e.g. ``get("adam", model.parameters(), lr=1e-3)``."""
    if not isinstance(name, str) or name.lower() not in _BY_NAME:
        raise ValueError(f"unknown optimizer {name!r}; known: {sorted(_BY_NAME)}")
    return _BY_NAME[name.lower()](params, **kwargs)


def clip_grad_norm(params, max_norm, norm_type=2.0):
    """Scale all gradients together so their global norm is at most ``max_norm``; returns the
    norm before clipping (``torch.nn.utils.clip_grad_norm_``: scale ``max_norm / (norm + 1e-6)``
    applied only when it is below 1). ``norm_type`` may be a float or ``inf``."""
    params = _as_param_list("clip_grad_norm", params)
    _check_nonneg("clip_grad_norm", max_norm=max_norm)
    norm_type = float(norm_type)
    if norm_type == math.inf:
        total = max(float(np.abs(p.grad).max()) if p.grad.size else 0.0 for p in params)
    elif norm_type == 2.0:
        total = math.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params))
    else:
        total = sum(float((np.abs(p.grad) ** norm_type).sum()) for p in params) ** (1 / norm_type)
    coef = float(max_norm) / (total + 1e-6)
    if coef < 1:
        for p in params:
            p.grad *= p.grad.dtype.type(coef)
    return total


def clip_weights(params, c):
    """Clamp every parameter to ``[-c, c]`` in place (the WGAN critic's weight clipping)."""
    params = _as_param_list("clip_weights", params)
    _check_nonneg("clip_weights", c=c)
    for p in params:
        np.clip(p.data, -c, c, out=p.data)
    _weights_changed()
