"""Graph models, Keras-functional style: ``fnn.Input``, layers called on symbolic tensors, and
``fnn.Model(inputs, outputs)`` with the whole ``Sequential`` API.

    inp = fnn.Input(shape=(1, 28, 28))
    a = L.Conv2D(1, 8, 3, padding=1, name="conv")(inp)
    b = L.Conv2D(1, 8, 1, name="proj")(inp)
    y = L.ReLU()(L.Add()([a, b]))
    model = fnn.Model(inputs=inp, outputs=y)

Calling a layer on a symbolic tensor records a node; the layer runs once on a zero batch of one
sample so that a wrong shape is reported where the layer is called. ``Model`` runs the nodes in
topological order; ``backward`` runs them in reverse, summing the gradients of a tensor used
more than once. A layer called twice shares its parameters (the same ``Parameter`` objects, so
both calls' gradients accumulate) and, for its second call, runs as a twin: a shallow copy with
its own caches and buffers, so the two calls' forward state does not collide.
"""
import copy
import sys

import numpy as np

from . import inference as _inference
from .layers.base import layer_from_spec, layer_to_spec, unique_name
from .layers.merge import Add
from .model import ModelBase, _layer_registry, _no_hook, backward_params_only

__all__ = ["Input", "Model", "SymbolicTensor"]


class SymbolicTensor:
    """A placeholder for an array in a graph being built: ``shape`` excludes the batch axis."""

    __slots__ = ("shape", "dtype", "node", "name")

    def __init__(self, shape, dtype, node, name):
        self.shape, self.dtype, self.node, self.name = tuple(shape), np.dtype(dtype), node, name

    def __repr__(self):
        return f"SymbolicTensor(name={self.name!r}, shape=(None, {', '.join(map(str, self.shape))}))"


class _Node:
    """One call of a layer: its input tensors (``as_list`` when it was called on a list) and
    its output tensor. An ``Input`` is a node without a layer."""

    __slots__ = ("layer", "inputs", "as_list", "output")

    def __init__(self, layer, inputs, as_list):
        self.layer, self.inputs, self.as_list, self.output = layer, inputs, as_list, None


def Input(shape, dtype="float32", name=None):
    """A model input of ``shape`` (without the batch axis); integer ``dtype`` for token ids."""
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"Input: shape must be a tuple of ints (without the batch axis), "
                        f"got {shape!r}") from None
    if any(s < 1 for s in shape):
        raise ValueError(f"Input: shape must be positive sizes (without the batch axis), got {shape}")
    dtype = np.dtype(dtype)
    if dtype.kind not in "fiu":
        raise TypeError(f"Input: dtype must be a float or integer dtype, got {dtype}")
    node = _Node(None, [], False)
    node.output = SymbolicTensor(shape, dtype, node, name if name is not None else unique_name("input"))
    return node.output


def is_symbolic(x):
    if isinstance(x, SymbolicTensor):
        return True
    return (isinstance(x, (list, tuple)) and len(x) > 0
            and all(isinstance(t, SymbolicTensor) for t in x))


def symbolic_call(layer, x):
    """``layer(x)`` on symbolic tensors: a new node and its output tensor. The layer runs on a
    batch of one zero sample (inference mode) to find the output shape and report a mismatch
    here, naming the layer and the shapes."""
    as_list = not isinstance(x, SymbolicTensor)
    inputs = list(x) if as_list else [x]
    probes = [np.zeros((1, *t.shape), dtype=t.dtype) for t in inputs]
    try:
        out = layer.forward(probes if as_list else probes[0], training=False)
    except (ValueError, TypeError) as e:
        shapes = ", ".join(f"(None, {', '.join(map(str, t.shape))})" for t in inputs)
        raise type(e)(f"calling {layer.describe()} on {shapes}: {e}") from e
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{layer.describe()}: a layer in a graph model returns one array, "
                        f"got {type(out).__name__}")
    node = _Node(layer, inputs, as_list)
    node.output = SymbolicTensor(out.shape[1:], out.dtype, node, f"{layer.name}:{id(node):x}")
    return node.output


def _twin(layer):
    """A second runner for a layer called again: the same Parameter objects and buffers, its own
    caches and buffers for the forward state (arrays it holds are copied, dicts besides the
    parameters and buffers too)."""
    twin = copy.copy(layer)
    for key, value in vars(layer).items():
        if key in ("_params", "_buffers"):
            continue
        if isinstance(value, np.ndarray):
            setattr(twin, key, value.copy())
        elif isinstance(value, (dict, list)):
            setattr(twin, key, copy.copy(value))
    twin.__dict__.pop("_workspaces", None)
    twin.__dict__.pop("_recycled", None)
    return twin


class _Step:
    __slots__ = ("node", "runner", "has_params", "param_upstream")

    def __init__(self, node, runner):
        self.node, self.runner = node, runner
        self.has_params = bool(runner.parameters())
        self.param_upstream = False


class Model(ModelBase):
    """A model given by its input and output tensors; the layers in between are those reached
    from the outputs. ``forward``/``backward``/``fit``/``evaluate``/``predict`` take one array
    or a list (one per input, in order) and return one array or a list (one per output).

    Args:
        inputs: an ``fnn.Input`` tensor or a list of them.
        outputs: a tensor made by calling layers on the inputs, or a list of them.
        name: the model's name (default ``model``, ``model_1``, ...).

    State: each layer's parameters and buffers, prefixed by the layer's name (``conv.weight``);
    the layers' names must be unique within a model.
    """

    def __init__(self, inputs, outputs, name=None):
        super().__init__(name=name)
        self._inputs = _tensor_list("inputs", inputs)
        self._outputs = _tensor_list("outputs", outputs)
        for t in self._inputs:
            if t.node.layer is not None:
                raise ValueError(f"Model: inputs must be fnn.Input tensors, {t!r} is the output "
                                 f"of {t.node.layer.describe()}")
        self.n_inputs, self.n_outputs = len(self._inputs), len(self._outputs)
        self._nodes = _topological(self._outputs)
        reached = [n.output for n in self._nodes if n.layer is None]
        missing = [t for t in reached if all(t is not i for i in self._inputs)]
        if missing:
            raise ValueError(f"Model: the outputs depend on {missing}, which is not among the "
                             f"inputs {self._inputs}")
        unused = [t for t in self._inputs if all(t is not r for r in reached)]
        if unused:
            raise ValueError(f"Model: input {unused[0]!r} does not reach any output")
        self._nodes = [n for n in self._nodes if n.layer is not None]
        self.layers = []
        for node in self._nodes:
            if all(node.layer is not seen for seen in self.layers):
                self.layers.append(node.layer)
        names = {}
        for layer in self.layers:
            if layer.name in names:
                raise ValueError(f"Model: two layers are named {layer.name!r} "
                                 f"({names[layer.name].describe()} and {layer.describe()}); "
                                 f"names key the state_dict, give one another name=")
            names[layer.name] = layer
        params = self.parameters()
        if params:
            self._dtype = params[0].data.dtype
        self._build_plan()

    def _build_plan(self):
        """One step per node; a layer's second and later calls run on twins."""
        first = set()
        steps = []
        for node in self._nodes:
            runner = node.layer if id(node.layer) not in first else _twin(node.layer)
            first.add(id(node.layer))
            steps.append(_Step(node, runner))
        producer = {id(s.node.output): s for s in steps}
        for s in steps:
            s.param_upstream = any(
                p is not None and (p.has_params or p.param_upstream)
                for p in (producer.get(id(t)) for t in s.node.inputs))
        consumers = {}
        for s in steps:
            for t in s.node.inputs:
                consumers.setdefault(id(t), []).append(s)
        self._steps = steps
        self._producer = producer
        self._consumers = consumers
        self._output_ids = {id(t) for t in self._outputs}

    # --- the layer interface -------------------------------------------------------------------
    def children(self):
        return [(layer.name, layer) for layer in self.layers]

    def astype(self, dtype):
        super().astype(dtype)
        self._build_plan()  # twins hold the old dtype
        return self

    def _fusion(self, step):
        """The step fused into ``step`` (its only consumer, an activation it can run in its own
        pass) and the fusion's ``(kwargs, takes_backward)``, or None."""
        out = step.node.output
        users = self._consumers.get(id(out), ())
        if len(users) != 1 or id(out) in self._output_ids:
            return None
        nxt = users[0]
        if nxt.node.as_list or len(nxt.node.inputs) != 1:
            return None
        fusion = step.runner.activation_fusion(nxt.runner)
        return None if fusion is None else (nxt, fusion)

    def _sum_fusion(self, step, values, arg):
        """When ``step`` (training) can run the two-input Add it alone feeds in its own pass
        (``forward_add``: a batch norm), the Add's other input already computed, contiguous
        and of the same shape and dtype: the Add's step, that input's tensor and its value,
        else None."""
        runner = step.runner
        if not hasattr(runner, "forward_add") or step.node.as_list:
            return None
        out = step.node.output
        users = self._consumers.get(id(out), ())
        if len(users) != 1 or id(out) in self._output_ids:
            return None
        add = users[0]
        if type(add.runner) is not Add or len(add.node.inputs) != 2:
            return None
        others = [t for t in add.node.inputs if t is not out]
        other = values.get(id(others[0])) if len(others) == 1 else None
        if (not isinstance(other, np.ndarray) or not isinstance(arg, np.ndarray)
                or other.shape != arg.shape or other.dtype != runner.dtype
                or add.runner.dtype != runner.dtype or not other.flags.c_contiguous
                or getattr(runner, "sync", None) is not None):
            return None
        return add, others[0], other

    def _inference_forward(self, x):
        """Through the model's cached :class:`fastnn.inference.GraphPlan`."""
        outs = _inference.graph_plan_for(self)(self._as_inputs("forward", x))
        return outs if self.n_outputs > 1 else outs[0]

    def _forward_each(self, x, training):
        """The nodes one by one (an activation fused into the layer before it where it can)."""
        xs = self._as_inputs("forward", x)
        values = {id(t): v for t, v in zip(self._inputs, xs)}
        done = set()
        folded = set()
        summed, absorbed = {}, {}  # the layer that ran an Add: the Add's other input; the Add
        for step in self._steps:
            if id(step) in done:
                continue
            node = step.node
            args = [values[id(t)] for t in node.inputs]
            arg = args if node.as_list else args[0]
            pair = self._sum_fusion(step, values, arg) if training else None
            if pair is not None:  # the layer runs the residual sum after it (and its ReLU)
                add, other_tensor, other = pair
                fused = self._fusion(add)
                kwargs = fused[1][0] if fused is not None else {}
                out = step.runner.forward_add(arg, other, training=True, relu=fused is not None,
                                              **kwargs)
                values[id(node.output)] = values[id(add.node.output)] = out
                done.add(id(add))
                absorbed[id(add)] = node.output
                summed[id(step)] = other_tensor
                if fused is not None:  # the activation's backward is the layer's too
                    nxt = fused[0]
                    nxt.runner.fused_output(out)
                    values[id(nxt.node.output)] = out
                    done.add(id(nxt))
                    folded.add(id(nxt))
                continue
            fused = self._fusion(step)
            if fused is not None:
                nxt, (kwargs, takes_backward) = fused
                out = step.runner.forward_relu(arg, training=training, **kwargs)
                nxt.runner.fused_output(out)
                values[id(node.output)] = out
                values[id(nxt.node.output)] = out
                done.add(id(nxt))
                if takes_backward:
                    folded.add(id(nxt))
            else:
                values[id(node.output)] = step.runner.forward(arg, training=training)
        self._folded = folded
        self._summed, self._absorbed = summed, absorbed
        outs = [values[id(t)] for t in self._outputs]
        return outs if self.n_outputs > 1 else outs[0]

    def backward(self, dy, input_grad=True):
        """Gradients of the inputs (one array, or a list; None for an integer input) from
        ``dy`` (one array, or a list with one per output); parameter gradients accumulate.
        ``input_grad=False`` skips the work only the inputs' gradients need.
        ``self.after_layer_backward`` (if set) is called with each layer (a shared layer's
        second runner for its second call) after the backward of its call, as in Sequential."""
        self._replay_for_backward()
        dys = _arrays("backward", "dy", dy, self.n_outputs)
        done = getattr(self, "after_layer_backward", None) or _no_hook
        grads = {}
        for t, g in zip(self._outputs, dys):
            _accumulate(grads, t, g)
        folded = getattr(self, "_folded", set())
        summed = getattr(self, "_summed", {})
        absorbed = getattr(self, "_absorbed", {})
        for step in reversed(self._steps):
            g = grads.pop(id(step.node.output), None)
            if g is None:
                continue
            node = step.node
            if id(step) in folded:  # the layer before takes this activation's backward
                grads[id(node.inputs[0])] = g
                continue
            if id(step) in absorbed:  # and a batch norm this Add's
                grads[id(absorbed[id(step)])] = g
                continue
            two = type(g) is _TwoGrads
            if two and not (g.inplace and getattr(step.runner, "sums_two_dy", False)
                            and (input_grad or step.param_upstream or id(step) in summed)):
                g, two = g.total(), False  # (the _TwoGrads goes: g alone holds the sum)
            if id(step) in summed:  # the layer ran the Add after it: both summands' gradients
                # into g itself when nothing but this loop holds it (no caller, layer or view)
                # two: summed into the first (free to overwrite), dresidual over it; _sole
                # reads g here, not within the call (its arguments hold g too)
                first, second, sole = (g.first, g.second, True) if two else (g, None, _sole(g))
                g = None
                dx, dres = step.runner.backward_add(first, overwrite_dy=sole, dy2=second)
                done(step.runner)
                _accumulate(grads, node.inputs[0], dx)
                _accumulate(grads, summed[id(step)], dres)
                dx = dres = first = second = None
                continue
            if not two and not input_grad and not step.param_upstream:
                if step.has_params:
                    backward_params_only(step.runner, g)
                    done(step.runner)
                continue
            # two: a batch norm sums them into the first, in its own passes
            dx = step.runner.backward(g.first, dy2=g.second) if two else step.runner.backward(g)
            done(step.runner)
            dxs = dx if node.as_list else [dx]
            for t, d in zip(node.inputs, dxs):
                if d is not None:
                    _accumulate(grads, t, d)
            dx = dxs = d = g = None  # grads alone holds them now (see _accumulate, _sole)
        if not input_grad:
            return None
        dxs = [_total(grads.get(id(t))) for t in self._inputs]
        return dxs if self.n_inputs > 1 else dxs[0]

    def _as_inputs(self, where, x):
        return _arrays(where, "x", x, self.n_inputs)

    def _layer_outputs(self, x):
        """(position, layer, output) of each node in turn, unfused, in training mode."""
        values = {id(t): v for t, v in zip(self._inputs, self._as_inputs("forward", x))}
        for step in self._steps:
            args = [values[id(t)] for t in step.node.inputs]
            out = step.runner.forward(args if step.node.as_list else args[0], training=True)
            values[id(step.node.output)] = out
            yield f"layer {step.runner.name!r}", step.runner, out

    # --- description and saving ----------------------------------------------------------------
    def config(self):
        index = {id(layer): i for i, layer in enumerate(self.layers)}
        refs = {id(t): ["input", i] for i, t in enumerate(self._inputs)}
        nodes = []
        for k, node in enumerate(self._nodes):
            nodes.append({"layer": index[id(node.layer)], "as_list": node.as_list,
                          "inputs": [refs[id(t)] for t in node.inputs]})
            refs[id(node.output)] = ["node", k]
        return {"layers": [layer_to_spec(layer) for layer in self.layers],
                "inputs": [{"shape": list(t.shape), "dtype": str(t.dtype), "name": t.name}
                           for t in self._inputs],
                "nodes": nodes, "outputs": [refs[id(t)] for t in self._outputs]}

    def extra_repr(self):
        return f"{len(self.layers)} layers, {self.n_inputs} input(s), {self.n_outputs} output(s)"

    def __repr__(self):
        lines = [f"  ({layer.name}): {layer!r}" for layer in self.layers]
        return "Model(\n" + "\n".join(lines) + "\n)"

    def summary(self, print_fn=print):
        """A table of the nodes: layer, output shape, parameters and the layers it is fed by;
        printed and returned. A layer called twice shows its parameters once."""
        names = {id(t): t.name for t in self._inputs}
        rows = [("layer (type)", "output shape", "params", "connected to")]
        for t in self._inputs:
            rows.append((f"{t.name} (Input)", _fmt_shape(t.shape), "0", ""))
        counted = set()
        total = 0
        for node in self._nodes:
            layer = node.layer
            count = 0 if id(layer) in counted else sum(p.data.size for p in layer.parameters())
            counted.add(id(layer))
            total += count
            names[id(node.output)] = layer.name
            rows.append((f"{layer.name} ({type(layer).__name__})", _fmt_shape(node.output.shape),
                         f"{count:,}", ", ".join(names[id(t)] for t in node.inputs)))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        fmt = lambda r: "  ".join(r[c].rjust(widths[c]) if c == 2 else r[c].ljust(widths[c])
                                  for c in range(4)).rstrip()
        rule = "-" * max(len(fmt(r)) for r in rows)
        text = "\n".join([fmt(rows[0]), rule, *(fmt(r) for r in rows[1:]), rule,
                          f"total parameters: {total:,} ({self.dtype})"])
        if print_fn is not None:
            print_fn(text)
        return text


def _fmt_shape(shape):
    return "(None, " + ", ".join(str(s) for s in shape) + ")"


def _tensor_list(what, tensors):
    items = list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]
    if not items or not all(isinstance(t, SymbolicTensor) for t in items):
        raise TypeError(f"Model: {what} must be a symbolic tensor (from fnn.Input or a layer "
                        f"called on one) or a list of them, got {tensors!r}")
    return items


def _topological(outputs):
    """The nodes the outputs depend on, each after the nodes it reads (depth-first)."""
    order, state = [], {}
    for out in outputs:
        stack = [(out.node, False)]
        while stack:
            node, expanded = stack.pop()
            if state.get(id(node)) == "done":
                continue
            if expanded:
                state[id(node)] = "done"
                order.append(node)
                continue
            state[id(node)] = "open"
            stack.append((node, True))
            for t in reversed(node.inputs):
                if state.get(id(t.node)) != "done":
                    stack.append((t.node, False))
    return order


def _arrays(where, what, x, n):
    if n == 1:
        if isinstance(x, (list, tuple)) and len(x) == 1:
            x = x[0]
        return [x]
    if not isinstance(x, (list, tuple)) or len(x) != n:
        raise TypeError(f"Model.{where}: the model has {n} {'inputs' if what == 'x' else 'outputs'}; "
                        f"{what} must be a list of {n} arrays, got {type(x).__name__}")
    return list(x)


def _accumulate(grads, tensor, g):
    key = id(tensor)
    prev = grads.get(key)
    if prev is None:
        grads[key] = g
        return
    if type(prev) is _TwoGrads:  # a third gradient: the first two summed now
        grads[key] = prev = prev.total()
    inplace = (_refcount(prev) <= _SOLE_REFS and prev.flags.owndata and prev.flags.writeable
               and prev.dtype == g.dtype and prev.shape == g.shape)
    if (type(prev) is np.ndarray and type(g) is np.ndarray and prev.shape == g.shape
            and prev.dtype == g.dtype):
        # summed later, by the layer that takes the gradient if it can (a batch norm, in its
        # own passes), else as below
        grads[key] = _TwoGrads(prev, g, inplace)
    elif inplace:
        # nothing but ``grads`` holds prev (no caller, layer or view of it): sum in place
        # instead of into a fresh array that has to be faulted in
        np.add(prev, g, out=prev)
    else:
        grads[key] = prev + g  # a new array: prev may be a layer's or the caller's


class _TwoGrads:
    """Two gradients of one tensor, not summed yet: where nothing but ``grads`` held the first
    (``inplace``), the layer that takes them sums them into it in its backward's own passes if
    it can (``sums_two_dy``: ``backward(dy, dy2=)``); else ``total`` gives the sum as
    ``_accumulate`` would have made it."""

    __slots__ = ("first", "second", "inplace")

    def __init__(self, first, second, inplace):
        self.first, self.second, self.inplace = first, second, inplace

    def total(self):
        first, second = self.first, self.second
        self.first = self.second = None
        if self.inplace:
            np.add(first, second, out=first)
            return first
        return first + second


def _total(g):
    return g.total() if type(g) is _TwoGrads else g


def _refcount(a):
    return sys.getrefcount(a)


def _sole(g):
    """True when ``g`` (popped from the backward's table) is held by nobody else and owns its
    writable data: a layer may then write over it."""
    return (_refcount(g) <= _SOLE_POPPED and isinstance(g, np.ndarray) and g.flags.owndata
            and g.flags.writeable and g.flags.c_contiguous)


def _held_by_grads_only():
    """``_refcount`` of an array held by a dict and a local alone, read as ``_accumulate`` reads
    it: the interpreter's own references counted, whatever the Python version."""
    grads = {0: np.empty(1)}
    prev = grads.get(0)
    return _refcount(prev)


def _popped_only():
    """``_refcount`` of an array popped from a dict into a local, as ``_sole`` reads it."""
    grads = {0: np.empty(1)}
    g = grads.pop(0)
    return _sole_count(g)


def _sole_count(g):
    return _refcount(g)


_SOLE_REFS = _held_by_grads_only()
_SOLE_POPPED = _popped_only()


def _model_from_config(layers, inputs, nodes, outputs):
    built = [layer_from_spec(spec, _layer_registry) for spec in layers]
    tensors = {("input", i): Input(spec["shape"], spec["dtype"], name=spec["name"])
               for i, spec in enumerate(inputs)}
    for k, node in enumerate(nodes):
        args = [tensors[tuple(ref)] for ref in node["inputs"]]
        tensors[("node", k)] = built[node["layer"]](args if node["as_list"] else args[0])
    ins = [tensors[("input", i)] for i in range(len(inputs))]
    outs = [tensors[tuple(ref)] for ref in outputs]
    return Model(ins if len(ins) > 1 else ins[0], outs if len(outs) > 1 else outs[0])
