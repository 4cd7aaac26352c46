"""The inference path of ``Sequential.predict`` and ``forward(training=False)``.

A model's layer list is compiled once into a list of steps (an :class:`InferencePlan`, cached
on the model and rebuilt when its layer list changes; a graph ``fnn.Model``'s nodes into a
:class:`GraphPlan`, chains of such plans, see there):

- a batch norm after a Dense, Conv2D or ConvTranspose2D is folded into that layer's weight and
  bias (``W' = W * s``, ``b' = (b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``);
- an activation after them is fused into the kernel's epilogue where the kernel has one (Dense:
  ReLU, LeakyReLU, Sigmoid, Tanh; Conv2D and a lone batch norm: ReLU, LeakyReLU with slope >= 0),
  else applied in place on the step's own buffer;
- Dropout and Identity disappear, Flatten and Reshape are views;
- every step writes into a buffer of its own, reused from call to call (the last step's output
  is a fresh array: it is handed to the caller), and keeps nothing for a backward pass.

Other layers (Embedding, the recurrent layers, a user's own) run their own
``forward(x, training=False)``.

Folded weights are cached and recomputed when the weights may have changed: an optimizer step,
``load_state_dict``, ``astype``, weight clipping or a training-mode forward of a ``Sequential``
call :func:`weights_changed`. Code that writes parameters in place by hand (``p.data[...] = v``)
and then predicts with a batch-norm model calls it too.

``ENABLED = False`` makes ``Sequential`` run its layers one by one instead (for A/B tests).
"""
import math

import numpy as np

from . import _core

__all__ = ["InferencePlan", "GraphPlan", "plan_for", "graph_plan_for", "run", "weights_changed", "ENABLED"]

ENABLED = True

_generation = 0


def weights_changed():
    """Mark every cached folded weight as stale (they are recomputed on the next inference)."""
    global _generation
    _generation += 1


def _cls(name):
    from . import layers
    return layers.get(name)


def _is(layer, *names):
    return any(type(layer) is _cls(n) for n in names)


class _Buffer:
    """One reusable output array per step; ``final`` hands out a fresh one instead."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def get(self, shape, dtype, final):
        if final:
            return np.empty(shape, dtype=dtype)
        a = self.array
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self.array = np.empty(shape, dtype=dtype)
        return a


# --- activations -----------------------------------------------------------------------------------
def _activation_of(layer):
    """(kind, slope) of an elementwise activation layer, else None."""
    if _is(layer, "ReLU"):
        return ("relu", None)
    if _is(layer, "LeakyReLU"):
        return ("leaky_relu", layer.negative_slope)
    if _is(layer, "Sigmoid"):
        return ("sigmoid", None)
    if _is(layer, "Tanh"):
        return ("tanh", None)
    return None


def _apply_activation(act, x, out):
    kind, slope = act
    if kind == "relu":
        _core.relu_forward(x, out)
    elif kind == "leaky_relu":
        _core.leaky_relu_forward(x, slope, out)
    elif kind == "sigmoid":
        _core.sigmoid_forward(x, out)
    else:
        _core.tanh_forward(x, out)


class _Activation:
    def __init__(self, layer, act):
        self.layer, self.act, self.buf = layer, act, _Buffer()

    def __call__(self, x, owned, final):
        x = self.layer.as_input(x)
        out = x if owned and not final else self.buf.get(x.shape, x.dtype, final)
        if x.size:
            _apply_activation(self.act, x, out)
        return out, not final


# --- layers with weights, batch norm folded in -----------------------------------------------------
def _bn_scale_shift(bn):
    """s and t with bn(z) = z * s + t in inference mode, in float64."""
    var = bn.running_var.astype(np.float64)
    s = bn.weight.data.astype(np.float64) / np.sqrt(var + bn.eps)
    t = bn.bias.data.astype(np.float64) - bn.running_mean.astype(np.float64) * s
    return s, t


class _Affine:
    """Dense, Conv2D or ConvTranspose2D, then an optional batch norm folded into its weights and
    an optional activation (in the kernel's epilogue where it has one)."""

    def __init__(self, layer, bn, act):
        self.layer, self.bn, self.act = layer, bn, act
        self.kind = type(layer).__name__
        self.buf = _Buffer()
        self._folded = None  # (key, weight, bias)
        if self.kind == "Dense":
            self.epilogue = act is not None
        elif self.kind == "Conv2D":
            self.epilogue = act is not None and (
                act[0] == "relu" or (act[0] == "leaky_relu" and act[1] >= 0))
        else:
            self.epilogue = False

    def _weights(self):
        layer, bn = self.layer, self.bn
        if bn is None:
            return layer.weight.data, layer._bias_data
        sources = (layer.weight.data, layer._bias_data, bn.weight.data, bn.bias.data,
                   bn.running_mean, bn.running_var)
        key = (_generation, bn.eps) + tuple(id(a) for a in sources)
        if self._folded is not None and self._folded[0] == key:
            return self._folded[1], self._folded[2]
        s, t = _bn_scale_shift(bn)
        w = layer.weight.data.astype(np.float64)
        # the output channel axis of the weight: 0, or 1 for a transposed convolution's
        axis = 1 if self.kind == "ConvTranspose2D" else 0
        shape = [1] * w.ndim
        shape[axis] = -1
        w = w * s.reshape(shape)
        b = t if layer.bias is None else layer.bias.data.astype(np.float64) * s + t
        dtype = layer.weight.data.dtype
        w, b = np.ascontiguousarray(w, dtype=dtype), np.ascontiguousarray(b, dtype=dtype)
        self._folded = (key, w, b)
        return w, b

    def __call__(self, x, owned, final):
        layer = self.layer
        if self.kind == "Dense":
            x = layer.as_input(x)
            if x.ndim < 1 or x.shape[-1] != layer.in_features:
                raise layer.shape_error(f"(*, {layer.in_features})", x.shape)
            if self.bn is not None and x.ndim != 2:  # BatchNorm1D's channels are then not ours
                return self._unfolded(x, final)
            w, b = self._weights()
            lead = x.shape[:-1]
            out = self.buf.get((*lead, layer.out_features), x.dtype, final)
            kind, slope = self.act if self.act is not None else ("none", 0.01)
            if out.size:
                _core.dense_forward(x.reshape(-1, layer.in_features), w, b,
                                    out.reshape(-1, layer.out_features), kind,
                                    0.01 if slope is None else slope)
            return out, not final
        x = layer._image(x)
        out = self.buf.get(layer.output_shape(x.shape), x.dtype, final)
        w, b = self._weights()
        if self.kind == "Conv2D":
            relu = self.epilogue
            slope = self.act[1] if relu and self.act[0] == "leaky_relu" else None
            # a Conv2D on its dense kernels has symmetric pads, "same" resolved to numbers
            padding = (layer._pads[0], layer._pads[2]) if hasattr(layer, "_pads") else layer.padding
            _core.conv2d_forward(x, w, b, out, layer.stride, padding, relu=relu,
                                 negative_slope=slope)
        else:
            _core.conv_transpose2d_forward(x, w, b, out, layer.stride, layer.padding)
        if self.act is not None and not self.epilogue and out.size:
            _apply_activation(self.act, out, out)
        return out, not final

    def _unfolded(self, x, final):
        """Dense then batch norm as two passes (a (N, C, L) batch norm after a Dense)."""
        y = self.buf.get((*x.shape[:-1], self.layer.out_features), x.dtype, False)
        if y.size:
            _core.dense_forward(x.reshape(-1, self.layer.in_features), self.layer.weight.data,
                                self.layer._bias_data, y.reshape(-1, self.layer.out_features))
        if getattr(self, "_bn_step", None) is None:
            self._bn_step = _BatchNorm(self.bn, self.act)
        return self._bn_step(y, True, final)


class _BatchNorm:
    def __init__(self, bn, act):
        self.bn, self.buf = bn, _Buffer()
        self.fused = act is not None and (act[0] == "relu" or (act[0] == "leaky_relu" and act[1] >= 0))
        self.act = act

    def __call__(self, x, owned, final):
        bn = self.bn
        x = bn.as_input(x)
        if x.ndim not in bn._ranks or x.shape[1] != bn.num_features:
            raise bn.shape_error(bn._expected.format(C=bn.num_features), x.shape)
        out = self.buf.get(x.shape, x.dtype, final)
        if x.size:
            x3 = x.reshape(x.shape[0], bn.num_features, math.prod(x.shape[2:]))
            slope = self.act[1] if self.fused and self.act[0] == "leaky_relu" else None
            _core.batchnorm_forward_eval(x3, bn.weight.data, bn.bias.data, bn.running_mean,
                                         bn.running_var, bn.eps, out.reshape(x3.shape),
                                         relu=self.fused, negative_slope=slope)
            if self.act is not None and not self.fused:
                _apply_activation(self.act, out, out)
        return out, not final


# --- pooling, shapes, softmax, residual, the rest --------------------------------------------------
class _Pool:
    def __init__(self, layer):
        self.layer, self.buf, self.argmax = layer, _Buffer(), _Buffer()
        self.kind = type(layer).__name__

    def __call__(self, x, owned, final):
        layer = self.layer
        if self.kind == "Upsample2D":
            x = layer.as_input(x)
            if x.ndim != 4:
                raise layer.shape_error("(N, C, H, W)", x.shape)
            s = layer.scale_factor
            n, c, h, w = x.shape
            out = self.buf.get((n, c, h * s, w * s), x.dtype, final)
            _core.upsample_nearest2d_forward(x, s, out)
            return out, not final
        x = layer._image(x)
        out = self.buf.get(layer.y_shape, x.dtype, final)
        if self.kind == "MaxPool2D":
            if x.size:
                argmax = self.argmax.get(layer.y_shape, np.int64, False)
                _core.maxpool2d_forward(x, layer.kernel_size, layer.stride, layer.padding, out,
                                        argmax)
        else:
            _core.avgpool2d_forward(x, layer.kernel_size, layer.stride, layer.padding, out)
        return out, not final


class _Reshape:
    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x, owned, final):
        x = self.layer.as_input(x)
        if x.ndim < 1:
            raise self.layer.shape_error("(N, ...)", x.shape)
        return x.reshape(self.layer._target(x.shape)), owned


class _Softmax:
    def __init__(self, layer):
        self.layer, self.buf = layer, _Buffer()

    def __call__(self, x, owned, final):
        x = self.layer.as_input(x)
        if x.ndim == 0 or self.layer.axis % x.ndim != x.ndim - 1 or not x.size:
            return _Fallback(self.layer)(x, owned, final)
        out = self.buf.get(x.shape, x.dtype, final)
        _core.softmax_forward(x.reshape(-1, x.shape[-1]), out.reshape(-1, x.shape[-1]))
        return out, not final


class _Residual:
    def __init__(self, layer):
        self.layer, self.buf = layer, _Buffer()
        inner = layer.inner
        self.inner = InferencePlan(_inner_layers(inner)) if _plannable(inner) else None

    def __call__(self, x, owned, final):
        layer = self.layer
        x = layer.as_input(x)
        if self.inner is not None:
            fx, _ = self.inner.steps_run(x, False)
        else:
            fx = layer.inner.forward(x, training=False)
        if not isinstance(fx, np.ndarray) or fx.shape != x.shape:
            raise ValueError(f"{layer.describe()}: the inner layer must keep the shape: input "
                             f"{x.shape}, inner output {getattr(fx, 'shape', type(fx).__name__)}")
        out = self.buf.get(x.shape, x.dtype, final)
        np.add(x, fx, out=out, dtype=x.dtype)
        return out, not final


class _Fallback:
    """Any other layer: its own inference-mode forward."""

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x, owned, final):
        y = self.layer.forward(x, training=False)
        # a view of our own buffer (a layer that returns its input) is still ours
        return y, bool(owned and isinstance(y, np.ndarray) and isinstance(x, np.ndarray)
                       and np.may_share_memory(y, x))


def _plain_conv(layer):
    """No dilation and one group: what the steps' kernel calls compute (other convolutions run
    their own forward)."""
    if hasattr(layer, "_dense"):  # Conv2D decides once whether its dense kernels apply
        return bool(layer._dense)
    dilation = getattr(layer, "dilation", 1)
    return (dilation in (1, (1, 1), [1, 1])) and getattr(layer, "groups", 1) == 1


def _inner_layers(layer):
    from .model import Sequential
    return list(layer.layers) if type(layer) is Sequential else [layer]


def _plannable(layer):
    from .layers.base import Layer
    return isinstance(layer, Layer)


def _flatten(layers):
    """Nested plain Sequentials inlined; Dropout and Identity dropped (identities in inference)."""
    from .model import Sequential
    out = []
    for layer in layers:
        if type(layer) is Sequential:
            out.extend(_flatten(layer.layers))
        elif _is(layer, "Dropout", "Identity"):
            continue
        else:
            out.append(layer)
    return out


class InferencePlan:
    """The fused inference steps of a list of layers (see the module docstring)."""

    def __init__(self, layers):
        layers = _flatten(layers)
        self.steps, self.kinds = [], []
        i = 0
        while i < len(layers):
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if _is(layer, "Dense", "Conv2D", "ConvTranspose2D") and _plain_conv(layer):
                bn = None
                bn_type = "BatchNorm1D" if _is(layer, "Dense") else "BatchNorm2D"
                if nxt is not None and _is(nxt, bn_type):
                    bn, i = nxt, i + 1
                    nxt = layers[i + 1] if i + 1 < len(layers) else None
                act = _activation_of(nxt) if nxt is not None else None
                if act is not None:
                    i += 1
                self._add(_Affine(layer, bn, act), type(layer).__name__ + ("+bn" if bn else "")
                          + (f"+{act[0]}" if act else ""))
            elif _is(layer, "BatchNorm1D", "BatchNorm2D"):
                act = _activation_of(nxt) if nxt is not None else None
                if act is not None:
                    i += 1
                self._add(_BatchNorm(layer, act), "BatchNorm" + (f"+{act[0]}" if act else ""))
            elif _activation_of(layer) is not None:
                self._add(_Activation(layer, _activation_of(layer)), type(layer).__name__)
            elif _is(layer, "MaxPool2D", "AvgPool2D", "Upsample2D"):
                self._add(_Pool(layer), type(layer).__name__)
            elif _is(layer, "Flatten", "Reshape"):
                self._add(_Reshape(layer), type(layer).__name__)
            elif _is(layer, "Softmax"):
                self._add(_Softmax(layer), "Softmax")
            elif _is(layer, "Residual"):
                self._add(_Residual(layer), "Residual")
            else:
                self._add(_Fallback(layer), type(layer).__name__ + " (own forward)")
            i += 1

    def _add(self, step, kind):
        self.steps.append(step)
        self.kinds.append(kind)

    def steps_run(self, x, final, owned=False):
        """``owned``: x is a buffer of the caller's plan that nothing else reads (a step may
        write over it); by default x is the caller's and never written."""
        last = len(self.steps) - 1
        for i, step in enumerate(self.steps):
            x, owned = step(x, owned, final and i == last)
        if final and owned:  # a view of a reused buffer (e.g. a trailing Flatten)
            x = np.array(x)
        return x, owned

    def __call__(self, x):
        """The output for ``x``: a fresh array, never one of the plan's buffers."""
        return self.steps_run(x, True)[0]

    def __repr__(self):
        return "InferencePlan(" + ", ".join(self.kinds) + ")"


def plan_for(model):
    """The cached plan of ``model`` (a ``Sequential``), rebuilt when its layer list changes."""
    # the steps read parameters and take the dtype from the (cast) input at each call, so only
    # a change of the layer list needs a new plan
    key = tuple(map(id, model.layers))
    cached = model.__dict__.get("_inference_plan")
    if cached is None or cached[0] != key:
        cached = model.__dict__["_inference_plan"] = (key, InferencePlan(model.layers))
    return cached[1]


def run(model, x):
    """``model.forward(x, training=False)`` through the model's plan."""
    return plan_for(model)(x)


# --- graph models ------------------------------------------------------------------------------------
class _Merge:
    """Add, Multiply (into a reused buffer, the inputs in the layer's order) or Concatenate
    (``np.concatenate(out=...)``): the layer's own arithmetic without its caches. An Add takes
    the ReLU (or LeakyReLU of slope >= 0) after it into its last sum (``act``)."""

    def __init__(self, layer, act=None):
        self.layer, self.kind, self.buf, self.act = layer, type(layer).__name__, _Buffer(), act

    def __call__(self, xs, final):
        layer = self.layer
        xs = layer._inputs(xs)
        if self.kind == "Concatenate":
            axis = layer._axis(xs[0].ndim)
            rest = [x.shape[:axis] + x.shape[axis + 1:] for x in xs]
            if any(x.ndim != xs[0].ndim for x in xs) or any(r != rest[0] for r in rest):
                return _ListFallback(layer)(xs, final)  # the layer's own error
            shape = list(xs[0].shape)
            shape[axis] = sum(x.shape[axis] for x in xs)
            out = self.buf.get(tuple(shape), xs[0].dtype, final)
            np.concatenate(xs, axis=axis, out=out)
            return out, not final
        layer._same_shapes(xs)
        out = self.buf.get(xs[0].shape, xs[0].dtype, final)
        op = np.add if self.kind == "Add" else np.multiply
        if self.act is None:
            op(xs[0], xs[1], out=out)
            for x in xs[2:]:
                op(out, x, out=out)
            return out, not final
        first = xs[0]
        if len(xs) > 2:  # the sum in the layer's order; the last add carries the activation
            first = op(xs[0], xs[1], out=out)
            for x in xs[2:-1]:
                op(out, x, out=out)
        _core.add_relu_forward(first, xs[-1], out, self.act[1])
        return out, not final


def _add_fusion(layer, following):
    """The (kind, slope) of the activation ``following`` when an Add can take it into its pass
    (a ReLU, or a LeakyReLU of slope >= 0), else None."""
    act = _activation_of(following) if _is(layer, "Add") else None
    if act is None or act[0] not in ("relu", "leaky_relu") or (act[1] or 0) < 0:
        return None
    return act


class _ListFallback:
    """A layer called on a list (a Transformer decoder layer, cross-attention): its own
    inference-mode forward."""

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, xs, final):
        return self.layer.forward(list(xs), training=False), False


class _Chain:
    """A node and the single-input nodes that follow it while each feeds only the next: one
    :class:`InferencePlan` (a node called on a list runs first, as a merge step or its own
    forward). ``inputs``: the tensors the head reads; ``output``: the last node's tensor."""

    def __init__(self, steps):
        head = steps[0]
        self.inputs = [id(t) for t in head.node.inputs]
        self.as_list = head.node.as_list
        self.output = id(steps[-1].node.output)
        self.final = False
        if self.as_list:
            runner = head.runner
            merge = type(runner).__name__ in ("Add", "Multiply", "Concatenate") and _is(
                runner, type(runner).__name__)
            act = _add_fusion(runner, steps[1].runner) if len(steps) > 1 else None
            self.head = _Merge(runner, act) if merge else _ListFallback(runner)
            steps = steps[1 if act is None else 2:]
            head_kind = type(runner).__name__ + (f"+{act[0]}" if act else "")
        else:
            self.head = None
        self.plan = InferencePlan([s.runner for s in steps])
        self.kinds = ([head_kind] if self.as_list else []) + self.plan.kinds

    def __call__(self, values):
        args = [values[i] for i in self.inputs]
        owned = False  # the head's input may be read by other chains: never written
        if self.head is not None:
            x, owned = self.head(args, self.final and not self.plan.steps)
        else:
            x = args[0]
        x, owned = self.plan.steps_run(x, self.final, owned)
        if self.final and any(isinstance(a, np.ndarray) and np.may_share_memory(x, a) for a in args):
            x = np.array(x)  # e.g. a trailing Dropout: the output is handed out, never an input
        return x


class GraphPlan:
    """The inference plan of a graph ``fnn.Model``: its nodes in topological order cut into
    chains (a node joins the chain of the node before it when it reads that node's output
    alone and nothing else reads it, so a batch norm folds into the convolution it follows and
    an activation fuses into its epilogue exactly as in a ``Sequential``), each chain an
    :class:`InferencePlan` with its own reused buffers; merges (Add, Multiply, Concatenate)
    write into reused buffers of their own, an Add with the ReLU that follows it in the same
    pass (a residual block's ``relu(f(x) + x)``); a layer called twice runs its twin. A chain's
    output read by several nodes is never written over; the model's outputs are fresh
    arrays."""

    def __init__(self, model):
        outputs = {id(t) for t in model._outputs}
        readers = {}
        for step in model._steps:
            for t in step.node.inputs:
                readers[id(t)] = readers.get(id(t), 0) + 1
        groups, chain_of = [], {}
        for step in model._steps:
            node = step.node
            src = id(node.inputs[0]) if len(node.inputs) == 1 else None
            if (not node.as_list and src in chain_of and readers.get(src) == 1
                    and src not in outputs):
                group = chain_of.pop(src)
            else:
                group = []
                groups.append(group)
            group.append(step)
            chain_of[id(node.output)] = group
        self.chains = [_Chain(group) for group in groups]
        for chain in self.chains:
            chain.final = chain.output in outputs
        self.inputs = [id(t) for t in model._inputs]
        self.outputs = [id(t) for t in model._outputs]

    def __call__(self, xs):
        """The outputs (a list) for the inputs ``xs`` (a list): fresh arrays."""
        values = dict(zip(self.inputs, xs))
        for chain in self.chains:
            values[chain.output] = chain(values)
        return [values[i] for i in self.outputs]

    @property
    def kinds(self):
        return [chain.kinds for chain in self.chains]

    def __repr__(self):
        return "GraphPlan(" + "; ".join(", ".join(k) for k in self.kinds) + ")"


def graph_plan_for(model):
    """The cached plan of a graph ``Model``, rebuilt when its steps are (``astype`` makes new
    twins)."""
    cached = model.__dict__.get("_inference_plan")
    if cached is None or cached[0] is not model._steps:
        cached = model.__dict__["_inference_plan"] = (model._steps, GraphPlan(model))
    return cached[1]
