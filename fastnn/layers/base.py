"""The layer interface every fastnn layer (and a user's own) implements.

A layer owns its parameters (``Parameter``: ``name``, ``data``, ``grad``) and buffers, validates
its input, and calls kernels from ``fastnn._core``; it has no element loops of its own.

    forward(x, training=True) -> y        caches what backward needs
    backward(dy) -> dx                    accumulates parameter gradients into ``p.grad``
    parameters(), named_parameters(), zero_grad(), state_dict(), load_state_dict(d)
    config() -> dict                      constructor arguments, so save/load can rebuild it

Every layer takes ``name=`` (default: the class name in snake case with a counter, ``conv2d``,
``conv2d_1``, ...). Called on a symbolic tensor (``layer(fnn.Input(shape))``) a layer records a
node of a graph model instead of computing (see ``fastnn.graph``). A layer that holds other layers
as attributes owns their parameters, with state-dict keys prefixed by the attribute name, as
``torch.nn.Module``. A layer may absorb the activation that follows it into its own pass
(``activation_fusion``); ``Sequential`` and ``Model`` ask every pair through that one method.
"""
import functools
import itertools
import re
import sys
from collections import OrderedDict, defaultdict

import numpy as np

from .._core import FLOAT_DTYPES
from ..inference import weights_changed

_ndarray = np.ndarray

def workspace(layer, name, shape, dtype):
    """An internal buffer of ``layer`` reused from step to step; reallocated when the shape or
    dtype changes. Only for arrays the layer never hands out (masks, argmax, statistics)."""
    cache = layer.__dict__.setdefault("_workspaces", {})
    buf = cache.get(name)
    shape = tuple(shape)
    if buf is None or buf.shape != shape or buf.dtype != np.dtype(dtype):
        buf = cache[name] = np.empty(shape, dtype=dtype)
    return buf


def drop_workspaces(layer):
    layer.__dict__.pop("_workspaces", None)
    layer.__dict__.pop("_recycled", None)


def recycled(layer, name, shape, dtype, keep=1):
    """An array ``layer`` hands out (a gradient), reused from an earlier step once nothing but
    this cache refers to it (no caller, layer or view holds it), else a new one; up to ``keep``
    are kept. Unlike ``workspace``, the array may be given away: a new step allocates (and
    faults in) no new memory once the last step's array is let go. For arrays let go within
    the step (a dx the layer before consumes); one that lives on (an output, saved by the next
    layer until its next forward) would stay pinned in the heap instead."""
    bufs = layer.__dict__.setdefault("_recycled", {}).setdefault(name, [])
    shape, dtype = tuple(shape), np.dtype(dtype)
    for i in range(len(bufs)):
        if _refs(bufs, i) <= _UNREFERENCED and bufs[i].shape == shape and bufs[i].dtype == dtype:
            return bufs[i]
    buf = np.empty(shape, dtype=dtype)
    if len(bufs) >= keep:
        bufs.pop(0)
    bufs.append(buf)
    return buf


def _refs(bufs, i):
    return sys.getrefcount(bufs[i])


_UNREFERENCED = _refs([np.empty(1)], 0)  # the list's reference and the call's own


def check_positive_int(where, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
    return int(value)


class Parameter:
    """A learnable array and its gradient (same shape and dtype).

    ``zero_grad()`` marks the gradient zero without writing it: the array is zeroed when
    ``.grad`` is next read, or overwritten whole by a layer whose backward can write instead of
    add (``grad_targets``), which saves a pass over it each step. As with PyTorch's default
    ``zero_grad(set_to_none=True)``, an array taken from ``.grad`` before ``zero_grad()`` keeps
    its old values until ``.grad`` is read again."""

    __slots__ = ("name", "data", "_grad", "_zeroed")

    def __init__(self, name, data):
        self.name = name
        self.data = np.ascontiguousarray(data)
        self.grad = np.zeros_like(self.data)

    @property
    def grad(self):
        if self._zeroed:
            self._grad.fill(0)
            self._zeroed = False
        return self._grad

    @grad.setter
    def grad(self, array):
        self._grad = array
        self._zeroed = False

    def zero_grad(self):
        self._zeroed = True

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.data.shape}, dtype={self.data.dtype})"


def grad_targets(weight, bias=None):
    """The gradient arrays of ``weight`` and ``bias`` (None stays None) for one kernel call that
    writes both, and whether it adds into them: it overwrites only when zero_grad marked both
    zero (the common training step; a layer called twice adds its second call)."""
    if weight._zeroed and (bias is None or bias._zeroed):
        weight._zeroed = False
        if bias is None:
            return weight._grad, None, False
        bias._zeroed = False
        return weight._grad, bias._grad, False
    return weight.grad, None if bias is None else bias.grad, True


def settle_grads(params):
    """Write the zeros zero_grad only marked, for code that reads gradient arrays behind the
    parameters' backs (a flat buffer their arrays are views of)."""
    for p in params:
        p.grad  # noqa: B018  (reading .grad zeroes a marked gradient)


_NAME_COUNTERS = defaultdict(itertools.count)


def snake_case(class_name):
    """``Conv2D`` -> ``conv2d``, ``BatchNorm2D`` -> ``batch_norm2d``, ``LSTM`` -> ``lstm``."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def unique_name(base):
    """``base`` the first time, then ``base_1``, ``base_2``, ... (one counter per base)."""
    k = next(_NAME_COUNTERS[base])
    return base if k == 0 else f"{base}_{k}"


def _check_name(owner, name):
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"{owner}: name must be a non-empty string without '.', got {name!r}")
    return name


class Layer:
    """Base class: parameter and buffer bookkeeping, state dicts, dtype handling, errors."""

    def __init_subclass__(cls, **kwargs):
        # every subclass's constructor takes ``name=`` without spelling it out
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_takes_name", False):
            return

        @functools.wraps(init)
        def __init__(self, *args, name=None, **kw):
            init(self, *args, **kw)
            if name is not None:
                self.name = _check_name(type(self).__name__, name)

        __init__._takes_name = True
        cls.__init__ = __init__

    def __init__(self, name=None):
        self._params = OrderedDict()   # local name -> Parameter
        self._buffers = OrderedDict()  # local name -> ndarray (running statistics, ...)
        self._dtype = np.dtype(np.float32)
        if "name" not in self.__dict__:  # a subclass's super().__init__() runs once per level
            self.name = (_check_name(type(self).__name__, name) if name is not None
                         else unique_name(snake_case(type(self).__name__)))

    # --- the interface a subclass fills in ---------------------------------------------------
    def forward(self, x, training=True):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, dy):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def config(self):
        """Constructor keyword arguments that rebuild this layer (weights excluded)."""
        return {}

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())

    def children(self):
        """(name, layer) pairs of sub-layers; their state is prefixed ``name.``. By default the
        layers held as public attributes, in the order they were set (as ``torch.nn.Module``)."""
        return [(k, v) for k, v in vars(self).items()
                if isinstance(v, Layer) and not k.startswith("_")]

    # --- fusion with the activation that follows ----------------------------------------------
    def activation_fusion(self, following):
        """How this layer runs ``following`` (the next layer, fed only by this one) inside its
        own forward: None (the default: no fusion), or ``(kwargs, takes_backward)`` meaning
        ``self.forward_relu(x, training, **kwargs)`` computes ``following(self(x))``, after
        which ``following.fused_output(y)`` records the output. With ``takes_backward`` this
        layer's backward also takes ``following``'s, given the gradient of ``y``."""
        return None

    def fused_output(self, y):
        """Record that the layer before computed this layer's forward, with output ``y``."""
        raise TypeError(f"{self.describe()}: cannot be fused into the layer before it")

    # --- graph models ---------------------------------------------------------------------------
    def check_forwarded(self, cached):
        """Raise the error of a backward without a forward when ``cached`` (what the forward
        keeps for the backward) is None."""
        if cached is None:
            raise RuntimeError(f"{self.describe()}: backward called before forward")

    def checked_dy(self, dy, shape):
        """``dy`` for the backward of the latest forward, whose output had ``shape`` (None before
        any forward): the backward-before-forward error, the dtype cast, the shape check."""
        self.check_forwarded(shape)
        dy = self.as_input(dy, "dy")
        if dy.shape != tuple(shape):
            raise self.shape_error(tuple(shape), dy.shape, "dy")
        return dy

    # --- parameters and buffers ----------------------------------------------------------------
    def add_parameter(self, name, data):
        p = Parameter(name, np.asarray(data, dtype=self._dtype))
        self._params[name] = p
        return p

    def add_buffer(self, name, data):
        self._buffers[name] = np.ascontiguousarray(data, dtype=self._dtype)
        return self._buffers[name]

    def named_parameters(self, prefix=""):
        out = [(prefix + name, p) for name, p in self._params.items()]
        for child_name, child in self.children():
            out.extend(child.named_parameters(f"{prefix}{child_name}."))
        return out

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    # --- dtype -----------------------------------------------------------------------------------
    @property
    def dtype(self):
        return self._dtype

    def astype(self, dtype):
        """Cast parameters and buffers to float32 or float64 in place; returns self."""
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"{self.describe()}: dtype must be float32 or float64, got {dtype}")
        self._dtype = dtype
        for p in self._params.values():
            p.data = np.ascontiguousarray(p.data, dtype=dtype)
            p.grad = np.zeros_like(p.data)
        for name, b in self._buffers.items():
            self._buffers[name] = np.ascontiguousarray(b, dtype=dtype)
        for _, child in self.children():
            child.astype(dtype)
        self._on_dtype_change()
        weights_changed()
        return self

    def _on_dtype_change(self):
        """Hook: drop cached buffers that hold the old dtype."""

    # --- state dicts (PyTorch names and order: own params, own buffers, then children) ----------
    def state_dict(self, prefix=""):
        sd = OrderedDict()
        for name, p in self._params.items():
            sd[prefix + name] = p.data.copy()
        for name, b in self._buffers.items():
            sd[prefix + name] = b.copy()
        for child_name, child in self.children():
            sd.update(child.state_dict(f"{prefix}{child_name}."))
        return sd

    def _state_slots(self, prefix=""):
        """qualified name -> (owner layer, kind, local name) for every tensor of the state."""
        slots = OrderedDict()
        for name in self._params:
            slots[prefix + name] = (self, "param", name)
        for name in self._buffers:
            slots[prefix + name] = (self, "buffer", name)
        for child_name, child in self.children():
            slots.update(child._state_slots(f"{prefix}{child_name}."))
        return slots

    def load_state_dict(self, state_dict, strict=True):
        load_state(self._state_slots(), state_dict, self.describe(), strict)

    # --- input handling and errors --------------------------------------------------------------
    def describe(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def __repr__(self):
        return self.describe()

    def __call__(self, x, training=True):
        """``forward(x)``; on a symbolic tensor (or a list of them) a node of a graph model."""
        from ..graph import is_symbolic, symbolic_call

        if is_symbolic(x):
            return symbolic_call(self, x)
        return self.forward(x, training=training)

    def as_input(self, x, name="input"):
        """Check ``x`` is a real floating array and return it C-contiguous in this layer's dtype
        (cast once; a float64 layer is never downcast). A layer without state (activations,
        pooling, reshapes) given a float64 input becomes float64 instead, so float64 data
        passing through it is never rounded to float32 (as through a PyTorch module without
        parameters)."""
        if type(x) is _ndarray and x.dtype is self._dtype and x.flags.c_contiguous:
            return x  # already what the layer computes on: nothing to check or cast
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{self.describe()}: {name} must be a numpy.ndarray, got {type(x).__name__}")
        if x.dtype.kind != "f":
            raise TypeError(f"{self.describe()}: {name} must be a floating-point array, "
                            f"got dtype {x.dtype} with shape {x.shape}")
        if (name == "input" and x.dtype == np.float64 and self._dtype == np.float32
                and not self._params and not self._buffers and not self.children()):
            self.astype(x.dtype)
        return np.ascontiguousarray(x, dtype=self._dtype)

    def shape_error(self, expected, got, name="input"):
        return ValueError(f"{self.describe()}: expected {name} {expected}, got {tuple(got)}")


def load_state(slots, state_dict, owner, strict=True):
    """Copy ``state_dict`` into the tensors named by ``slots`` (see ``Layer._state_slots``).

    Strict: unknown, missing or mis-shaped keys raise ``KeyError``/``ValueError`` naming them;
    PyTorch's ``num_batches_tracked`` is accepted and ignored. Values are cast to each
    parameter's dtype. Nothing is written unless every key checks out.
    """
    given = OrderedDict((k, v) for k, v in state_dict.items() if not k.endswith("num_batches_tracked"))
    unknown = [k for k in given if k not in slots]
    missing = [k for k in slots if k not in given]
    if strict and (unknown or missing):
        raise KeyError(f"{owner}: state_dict does not match; missing keys {missing}, unexpected keys {unknown}")
    staged = []
    for key, (layer, kind, local) in slots.items():
        if key not in given:
            continue
        value = np.asarray(given[key])
        target = layer._params[local].data if kind == "param" else layer._buffers[local]
        if value.shape != target.shape:
            raise ValueError(f"{owner}: state_dict[{key!r}] has shape {value.shape}, "
                             f"expected {target.shape}")
        staged.append((target, value))
    for target, value in staged:
        target[...] = value
    weights_changed()  # folded copies (fastnn.inference) are stale


def layer_to_spec(layer):
    """A JSON-able description of a layer: class name and constructor arguments."""
    config = {}
    for key, value in layer.config().items():
        config[key] = layer_to_spec(value) if isinstance(value, Layer) else value
    return {"class": type(layer).__name__, "config": config, "name": layer.name}


def layer_from_spec(spec, registry):
    """Rebuild a layer from ``layer_to_spec`` output; ``registry`` maps class names to classes."""
    cls = registry(spec["class"])
    config = {}
    for key, value in spec["config"].items():
        is_layer = isinstance(value, dict) and {"class", "config"} <= set(value) <= _SPEC_KEYS
        config[key] = layer_from_spec(value, registry) if is_layer else value
    layer = cls(**config)
    if spec.get("name") is not None:
        layer.name = spec["name"]
    return layer


_SPEC_KEYS = {"class", "config", "name"}
