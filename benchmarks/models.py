"""Whole training steps of the suite's models: fastnn, PyTorch and the pure-NumPy reference path.

A training step is ``zero_grad, forward, loss forward, loss backward, model backward, Adam step``
in float32 on one fixed batch. The three contenders of a model start from the same weights (torch
gets fastnn's ``state_dict``, whose keys are ``torch.nn.Sequential``'s), see the same data and run
in the same process; fastnn and torch interleaved sample by sample so machine noise hits both
alike, the reference afterwards on its own (see :func:`bench_model`).

The reference path is fastnn's own step with every kernel that layers, losses and optimizers call
as ``fastnn._core.<name>`` swapped for ``fastnn._core.reference.<name>`` (see
:func:`reference_kernels`); the GEMMs a layer does itself with ``numpy.matmul`` (the recurrent
input projection and weight gradients) are NumPy on both paths.
"""
import contextlib
import math
import time
import traceback
from collections import Counter

import numpy as np

import fastnn as fnn
from fastnn import _core, zoo
from fastnn._core import reference

# name -> batch size (DESIGN.md, "The benchmark suite")
BATCH = {"mlp": 128, "seed-mlp": 32, "lenet5": 64, "vgg-bn": 64, "ae": 128, "dcgan-g": 64,
         "dcgan-d": 64, "rnn": 32, "lstm": 32, "transformer": 32, "resnet": 64}
MODELS = tuple(BATCH)
KERNEL_NAMES = tuple(n for n in _core.__all__ if n != "ACTIVATIONS")


# ---- kernel routing -------------------------------------------------------------------------------
@contextlib.contextmanager
def reference_kernels(counts=None, names=KERNEL_NAMES):
    """Inside the block, ``fastnn._core.<kernel>`` is the NumPy reference version (for each of
    ``names``, default all).

    Layers call kernels through the module attribute (``_core.dense_forward(...)``), so replacing
    the attribute routes a whole training step through ``reference.py``. ``counts`` (a Counter),
    when given, receives the number of calls of each reference kernel."""
    originals = {name: getattr(_core, name) for name in names}
    try:
        for name in names:
            fn = getattr(reference, name)
            if counts is not None:
                fn = _counting(fn, name, counts)
            setattr(_core, name, fn)
        yield
    finally:
        for name, fn in originals.items():
            setattr(_core, name, fn)


def _counting(fn, name, counts):
    def counted(*args, **kwargs):
        counts[name] += 1
        return fn(*args, **kwargs)
    return counted


@contextlib.contextmanager
def count_compiled_kernels(counts):
    """Count the calls of each compiled kernel made through ``fastnn._core`` inside the block."""
    originals = {name: getattr(_core, name) for name in KERNEL_NAMES}
    try:
        for name, fn in originals.items():
            setattr(_core, name, _counting(fn, name, counts))
        yield
    finally:
        for name, fn in originals.items():
            setattr(_core, name, fn)


# ---- data and FLOPs -------------------------------------------------------------------------------
def make_batch(model, input_shape, loss_name, batch, seed=0):
    """A fixed (x, target) batch that fits ``model`` and its loss (the content is irrelevant for
    timing; the shapes and dtypes are the real ones)."""
    rng = np.random.default_rng(seed)
    first = _layers(model)[0]
    if type(first).__name__ == "Embedding":
        x = rng.integers(0, first.num_embeddings, (batch,) + tuple(input_shape), dtype=np.int64)
    elif loss_name == "mse":
        x = rng.random((batch,) + tuple(input_shape), dtype=np.float32)  # images in [0, 1]
    else:
        x = rng.standard_normal((batch,) + tuple(input_shape), dtype=np.float32)
    out_shape = model.forward(x, training=False).shape
    if loss_name == "cross_entropy":
        target = rng.integers(0, out_shape[-1], out_shape[:-1], dtype=np.int64)
    elif loss_name == "mse":
        # the autoencoder reconstructs its input; the generator chases a random image in [-1, 1]
        target = x.copy() if out_shape == x.shape else rng.uniform(-1, 1, out_shape).astype(np.float32)
    elif loss_name == "bce_with_logits":
        target = rng.integers(0, 2, out_shape).astype(np.float32)
    else:
        raise ValueError(f"make_batch: no target rule for loss {loss_name!r}")
    return x, target


def _is_graph(model):
    return hasattr(model, "_steps")  # fastnn.graph.Model: nodes run in topological order


def _layers(model):
    """The layers of a Sequential, or of a graph model in its run order."""
    return list(model.layers) if _is_graph(model) else list(model)


def layer_forward_flops(layer, x_shape, y_shape):
    """Multiply-add FLOPs (2 per MAC) of a layer's GEMM-like forward work, every input position
    counted (a recurrent layer's input projection too); 0 for elementwise layers."""
    kind = type(layer).__name__
    if kind == "Dense":
        rows = math.prod(x_shape[:-1])
        return 2 * rows * layer.in_features * layer.out_features
    if kind == "Conv2D":
        n, o, oh, ow = y_shape
        kh, kw = layer.kernel_size
        return 2 * n * o * oh * ow * layer.in_channels * kh * kw
    if kind == "ConvTranspose2D":  # every input pixel scatters a Cout x KH x KW patch
        n, c, h, w = x_shape
        kh, kw = layer.kernel_size
        return 2 * n * h * w * c * layer.out_channels * kh * kw
    if kind == "TransformerEncoderLayer":  # Q/K/V and output projections, Q K^T, P V, FF
        n, t, e = x_shape
        return 2 * n * t * (4 * e * e + 2 * t * e + 2 * e * layer.dim_feedforward)
    if kind in ("RNN", "LSTM", "GRU"):
        n, t, f = x_shape
        gh = layer._gates * layer.hidden_size
        return 2 * n * t * gh * (f + layer.hidden_size)
    return 0


def recurrent_step_flops(layer, x_shape, prev=None, first=False):
    """FLOPs of a recurrent layer's training step as fastnn computes it, asked of the layer right
    after its forward on ``prev``'s output.

    The recurrent side (h_{t-1} @ W_hh^T, its dX and dW_hh) is 3 products of 2*N*T*G*H. The input
    side depends on the path the forward took. Fed by an Embedding (V, F) (``layer._embedded``
    set), the forward projects the table's V rows once, not every position, and dW_ih is
    per_id.T @ table over V rows too; the Embedding's gradient is then either per_id @ W_ih over
    V rows (``takes_table_backward``: no dX at all) or the whole dX = dpre @ W_ih over N*T rows,
    scatter-added into the table. Otherwise the input side is 3 products over N*T rows (2 for the
    first layer with weights: no dX)."""
    n, t, f = x_shape
    g = layer._gates * layer.hidden_size
    positions = n * t
    total = 3 * 2 * positions * g * layer.hidden_size
    embedded = getattr(layer, "_embedded", None)
    if embedded is None:
        return total + (2 if first else 3) * 2 * positions * g * f
    vocab = embedded[0].shape[0]
    table_grad = prev is not None and layer.takes_table_backward(prev)
    dx_rows = vocab if table_grad else positions
    return total + 2 * vocab * g * f * 2 + 2 * dx_rows * g * f


def step_flops(model, x):
    """FLOPs of one training step, counting only the products fastnn computes: 3x the GEMM-like
    forward FLOPs (forward, dX and dW), 2x for the first layer with parameters, whose dX neither
    library computes (the batch needs no gradient: ``Sequential.backward(input_grad=False)``,
    torch's input without requires_grad); recurrent layers as :func:`recurrent_step_flops`."""
    if _is_graph(model):
        return _graph_step_flops(model, x)
    total = 0
    first = next((i for i, layer in enumerate(model) if layer.parameters()), None)
    prev = None
    for i, layer in enumerate(model):
        y = layer.forward(x, training=False)
        if type(layer).__name__ in ("RNN", "LSTM", "GRU"):
            total += recurrent_step_flops(layer, x.shape, prev, i == first)
        else:
            total += (2 if i == first else 3) * layer_forward_flops(layer, x.shape, y.shape)
        x, prev = y, layer
    return total


def _graph_step_flops(model, x):
    """:func:`step_flops` of a graph model, node by node: 2x the forward FLOPs for a layer with
    nothing trainable upstream (the graph's backward skips its dX), 3x otherwise."""
    values = {id(model._inputs[0]): x}
    total = 0
    for step in model._steps:
        args = [values[id(t)] for t in step.node.inputs]
        arg = args if step.node.as_list else args[0]
        y = step.runner.forward(arg, training=False)
        if not step.node.as_list:
            total += (3 if step.param_upstream else 2) * layer_forward_flops(step.runner, arg.shape, y.shape)
        values[id(step.node.output)] = y
    return total


# ---- the three steps ------------------------------------------------------------------------------
class FastnnStep:
    """One fastnn training step on a fixed batch; ``__call__`` returns the loss."""

    def __init__(self, model, loss_name, x, target):
        self.model, self.x, self.target = model, x, target
        self.loss = fnn.losses.get(loss_name)
        self.optimizer = fnn.optim.Adam(model.parameters(), lr=1e-3)

    def __call__(self):
        self.optimizer.zero_grad()
        out = self.model.forward(self.x, training=True)
        value = self.loss.forward(out, self.target)
        # PyTorch's batch does not require grad either: neither side computes d(loss)/d(input)
        self.model.backward(self.loss.backward(), input_grad=False)
        self.optimizer.step()
        return value


class ReferenceStep(FastnnStep):
    """The same step with every ``_core`` kernel replaced by its NumPy reference."""

    def __call__(self):
        with reference_kernels():
            return super().__call__()


def torch_module(model):
    """The torch twin of a fastnn model, built from each layer's configuration: a
    ``torch.nn.Sequential`` for a Sequential (same layer order, so the same state-dict keys),
    for a graph model a module holding each layer under its name (keys ``<name>.weight``, as
    fastnn's) whose forward runs the graph's nodes in fastnn's order."""
    import torch.nn as tnn

    if _is_graph(model):
        return _torch_graph(model, {layer.name: _torch_layer(layer) for layer in model.layers
                                    if type(layer).__name__ != "Add"})
    return tnn.Sequential(*(_torch_layer(layer) for layer in model))


def _torch_graph(model, modules):
    import torch.nn as tnn

    nodes = [(step.node.layer.name, type(step.node.layer).__name__ == "Add",
              [id(t) for t in step.node.inputs], id(step.node.output)) for step in model._steps]
    source, result = id(model._inputs[0]), id(model._outputs[0])

    class Graph(tnn.Module):
        def __init__(self):
            super().__init__()
            for name, module in modules.items():
                self.add_module(name, module)

        def forward(self, x):
            values = {source: x}
            for name, is_add, inputs, output in nodes:
                args = [values[i] for i in inputs]
                values[output] = sum(args[1:], args[0]) if is_add else getattr(self, name)(args[0])
            return values[result]

    return Graph()


def _torch_layer(layer):
    """The torch module of one fastnn layer, from its configuration."""
    import torch.nn as tnn

    def recurrent(cls, layer):
        class Outputs(cls):  # a subclass, not a wrapper: keys stay "1.weight_ih_l0"
            def forward(self, x):
                out, _ = super().forward(x)
                return out if layer.return_sequences else out[:, -1]
        return Outputs(layer.input_size, layer.hidden_size, batch_first=True)

    kind = type(layer).__name__
    if kind == "Dense":
        return tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    if kind == "Conv2D":
        return tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                          layer.padding, bias=layer.bias is not None)
    if kind == "ConvTranspose2D":
        return tnn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                   layer.stride, layer.padding, layer.output_padding,
                                   bias=layer.bias is not None)
    if kind in ("BatchNorm1D", "BatchNorm2D"):
        cls = tnn.BatchNorm1d if kind == "BatchNorm1D" else tnn.BatchNorm2d
        return cls(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    if kind == "MaxPool2D":
        return tnn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
    if kind == "AvgPool2D":
        return tnn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding)
    if kind == "AdaptiveAvgPool2D":
        return tnn.AdaptiveAvgPool2d(layer.output_size)
    if kind == "LeakyReLU":
        return tnn.LeakyReLU(layer.negative_slope)
    if kind in ("ReLU", "Sigmoid", "Tanh", "Identity", "Flatten"):
        return getattr(tnn, kind)()
    if kind == "Embedding":
        return tnn.Embedding(layer.num_embeddings, layer.embedding_dim)
    if kind in ("RNN", "LSTM", "GRU"):
        return recurrent(getattr(tnn, kind), layer)
    if kind == "TransformerEncoderLayer":
        return tnn.TransformerEncoderLayer(
            layer.d_model, layer.nhead, layer.dim_feedforward, dropout=layer.p,
            activation=layer.activation_name, layer_norm_eps=layer.layer_norm_eps,
            batch_first=True, norm_first=layer.norm_first)
    raise NotImplementedError(f"torch_module: no torch twin for {kind}")


def load_fastnn_weights(tmodel, model):
    """Copy fastnn's state_dict into the torch twin; every key must match."""
    import torch

    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.state_dict().items()}
    missing, unexpected = tmodel.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"torch twin: state-dict mismatch, missing {missing}, unexpected {unexpected}")


# PyTorch's CPU setups, timed side by side: label -> (Adam(fused=...), torch.compile the module)
TORCH_SETUPS = {
    "eager": (False, False),     # torch.optim.Adam's default: the for-loop kernel on CPU tensors
    "fused": (True, False),      # Adam(fused=True): one fused kernel over all parameters
    "compiled": (True, True),    # torch.compile(module) (inductor, C++ codegen, allow_rnn) + Adam(fused=True)
}
TORCH_LABELS = {"eager": "torch eager", "fused": "torch fused Adam", "compiled": "torch.compile"}


class TorchStep:
    """The same step in PyTorch, float32, in one of :data:`TORCH_SETUPS`: ``torch.optim.Adam``
    with torch's defaults (``eager``), with ``fused=True`` (``fused``), or that on the
    ``torch.compile``d module (``compiled``; ``compile_backend`` is inductor unless a test asks
    for another; dynamo's ``allow_rnn`` on while it traces, so recurrent layers compile too). The
    module is built and loaded with fastnn's weights here; compiling happens lazily, in the first
    call."""

    def __init__(self, model, loss_name, x, target, setup="eager", compile_backend="inductor"):
        import torch
        import torch.nn as tnn

        if setup not in TORCH_SETUPS:
            raise ValueError(f"TorchStep: setup must be one of {', '.join(TORCH_SETUPS)}, got {setup!r}")
        fused, compile_module = TORCH_SETUPS[setup]
        self.torch = torch
        self.setup = setup
        self.module = torch_module(model)
        load_fastnn_weights(self.module, model)
        self.module.train()
        self.x = torch.from_numpy(x)
        self.target = torch.from_numpy(target)
        self.loss_name = loss_name
        self.loss = {"cross_entropy": tnn.CrossEntropyLoss, "mse": tnn.MSELoss,
                     "bce_with_logits": tnn.BCEWithLogitsLoss}[loss_name]()
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=1e-3, fused=fused or None)
        self._traced = False
        # static shapes: each model is compiled for its one batch shape, as a fresh process would
        self.forward = (torch.compile(self.module, backend=compile_backend, dynamic=False) if compile_module
                        else self.module)

    def __call__(self):
        if self.forward is not self.module and not self._traced:
            # dynamo leaves nn.RNN/LSTM/GRU to eager unless allow_rnn (its graph-break hint);
            # with it the whole model compiles, the setup a user following that hint gets
            config = self.torch._dynamo.config
            with config.patch(allow_rnn=True) if hasattr(config, "allow_rnn") else contextlib.nullcontext():
                value = self._step()
            self._traced = True
            return value
        return self._step()

    def _step(self):
        self.optimizer.zero_grad()
        out = self.forward(self.x)
        if self.loss_name == "cross_entropy":  # classes on the last axis, as fastnn
            value = self.loss(out.reshape(-1, out.shape[-1]), self.target.reshape(-1))
        else:
            value = self.loss(out, self.target)
        value.backward()
        self.optimizer.step()
        return float(value.item())


# ---- timing ---------------------------------------------------------------------------------------
def _stats(times, batch):
    t = np.asarray(times)
    q1, med, q3 = np.percentile(t, [25, 50, 75])
    return {"median_s": float(med), "q1_s": float(q1), "q3_s": float(q3), "iqr_s": float(q3 - q1),
            "min_s": float(t.min()), "samples": len(t), "samples_per_s": batch / float(med)}


def measure_interleaved(contenders, warmup, min_sample_s=0.002, settle=1):
    """Per-step times of several steps measured in alternation.

    ``contenders`` maps a name to ``(step, repeats)``. After ``warmup`` calls of each, every round
    times one sample of each contender that still needs samples (the order reverses every round);
    a sample is ``inner`` back-to-back steps, ``inner`` chosen so a sample lasts ``min_sample_s``
    (tiny steps would otherwise measure the timer). Each sample follows ``settle`` untimed steps
    of the same contender: both libraries keep worker threads spinning for a while after a
    parallel region (OpenMP, OpenBLAS), and right after a switch those threads steal the cores the
    other side needs. Timed back to back, a step sees what it sees inside a training loop; without
    the settling step PyTorch's LSTM step measured 10-11 ms instead of 4.5 ms, and fastnn's vgg-bn
    step 95 ms instead of 56 ms. Returns name -> (per-step times, inner)."""
    inner = {}
    for name, (step, _) in contenders.items():
        for _ in range(max(warmup, 1)):
            t0 = time.perf_counter()
            step()
            dt = time.perf_counter() - t0
        inner[name] = max(1, math.ceil(min_sample_s / max(dt, 1e-9)))
    times = {name: [] for name in contenders}
    order = list(contenders)
    while any(len(times[n]) < contenders[n][1] for n in order):
        for name in order:
            if len(times[name]) >= contenders[name][1]:
                continue
            step, k = contenders[name][0], inner[name]
            for _ in range(settle):
                step()
            t0 = time.perf_counter()
            for _ in range(k):
                step()
            times[name].append((time.perf_counter() - t0) / k)
        order.reverse()
    return {name: (times[name], inner[name]) for name in contenders}


def _error_text(exc):
    return f"{type(exc).__name__}: {exc}".strip()[:500]


def _two_losses(step):
    """The losses of two steps: the first checks the starting weights and the forward, the
    second the gradients and the optimizer update that the first step made."""
    return [step(), step()]


def _dynamo_start():
    """Forget what torch.compile compiled before (a new model then compiles from scratch instead of
    recompiling the shared Sequential.forward with dynamic shapes) and zero its counters."""
    import torch
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()


def _dynamo_summary():
    """What torch.compile did since :func:`_dynamo_start`: graphs compiled, graph breaks (with the
    first line of each reason) and inductor's FX-graph cache hits and misses (a miss compiles
    C++; a hit reuses the on-disk cache of an earlier run)."""
    from torch._dynamo.utils import counters

    breaks = counters.get("graph_break", {})
    inductor = counters.get("inductor", {})
    return {"graphs": int(counters.get("stats", {}).get("unique_graphs", 0)),
            "graph_breaks": int(sum(breaks.values())),
            "break_reasons": sorted({str(k).strip().splitlines()[0] for k in breaks}),
            "fx_cache_hits": int(inductor.get("fxgraph_cache_hit", 0)),
            "fx_cache_misses": int(inductor.get("fxgraph_cache_miss", 0))}


def bench_model(name, repeats=20, warmup=3, torch_enabled=True, ref_repeats=5, seed=0,
                torch_setups=tuple(TORCH_SETUPS), compile_backend="inductor"):
    """Measure one model; failures of a contender are recorded, never raised.

    Every contender starts from the same weights and batch; the losses of its first two steps
    are kept (``step_losses``) and their largest relative difference from fastnn's
    (``loss_rel_diff_<who>``) is flagged in the table above 1e-4. fastnn and every torch setup
    are timed interleaved; "vs torch" is against the fastest torch setup that ran. The compiled
    setup's first step (dynamo tracing, inductor codegen, the C++ compiler) is timed on its own
    as ``compile_s`` and the timing starts after its warm-up steps."""
    batch = BATCH[name]
    result = {"model": name, "batch": batch, "threads": fnn.get_num_threads(), "status": "ok"}
    try:
        fnn.seed(seed)
        model, input_shape, loss_name = zoo.build(name)
        x, target = make_batch(model, input_shape, loss_name, batch, seed)
        result.update(loss=loss_name, input_shape=list(input_shape),
                      parameters=int(sum(p.data.size for p in model.parameters())),
                      flops_per_step=int(step_flops(model, x)))
        weights = model.state_dict()
        fast = FastnnStep(model, loss_name, x, target)
        compiled = Counter()
        with count_compiled_kernels(compiled):
            losses = {"fastnn": [fast()]}
        losses["fastnn"].append(fast())
        result["kernel_calls"] = dict(sorted(compiled.items()))
    except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the suite
        result.update(status="error", error=_error_text(exc), traceback=traceback.format_exc())
        return result

    contenders = {"fastnn": (fast, repeats)}
    try:
        ref_model = zoo.build(name)[0]
        ref_model.load_state_dict(weights)
        ref = ReferenceStep(ref_model, loss_name, x, target)
        calls = Counter()
        with reference_kernels(calls):
            first = FastnnStep.__call__(ref)
        result["reference_kernel_calls"] = dict(sorted(calls.items()))
        losses["reference"] = [first, ref()]
        contenders["reference"] = (ref, ref_repeats)
    except Exception as exc:  # noqa: BLE001
        result["reference"] = {"status": "error", "error": _error_text(exc)}
    if torch_enabled:
        import torch

        torch.set_num_threads(fnn.get_num_threads())
        for setup in torch_setups:
            who = "torch_" + setup
            try:
                twin = zoo.build(name)[0]
                twin.load_state_dict(weights)
                compiles = TORCH_SETUPS[setup][1]
                if compiles:
                    _dynamo_start()
                tstep = TorchStep(twin, loss_name, x, target, setup, compile_backend)
                t0 = time.perf_counter()
                first = tstep()
                compile_s = time.perf_counter() - t0
                losses[who] = [first, tstep()]
                contenders[who] = (tstep, repeats)
                if compiles:
                    result[who] = {"compile_s": compile_s, "backend": compile_backend, **_dynamo_summary()}
            except Exception as exc:  # noqa: BLE001 - e.g. no C++ compiler for inductor
                result[who] = {"status": "error", "error": _error_text(exc)}
    result["step_losses"] = losses
    result["first_step_loss"] = {who: v[0] for who, v in losses.items()}

    # fastnn and torch alternate sample by sample; the NumPy reference is timed afterwards on its
    # own, because numpy's OpenBLAS threads keep spinning for a while after each call and would
    # slow whichever contender came next (measured: torch's rnn step 4.5 ms alone, 14-30 ms
    # right after a NumPy matmul).
    reference = contenders.pop("reference", None)
    try:
        measured = measure_interleaved(contenders, warmup)
        if reference is not None:
            measured.update(measure_interleaved({"reference": reference}, warmup))
    except Exception as exc:  # noqa: BLE001
        result.update(status="error", error=_error_text(exc), traceback=traceback.format_exc())
        return result
    for who, (times, inner) in measured.items():
        result[who] = {**result.get(who, {}), "status": "ok", "inner": inner, **_stats(times, batch)}
    fast_t = result["fastnn"]["median_s"]
    result["gflops"] = result["flops_per_step"] / fast_t / 1e9
    ran = [s for s in torch_setups if result.get("torch_" + s, {}).get("status") == "ok"]
    if ran:
        best = min(ran, key=lambda s: result["torch_" + s]["median_s"])
        result["torch"] = {**result["torch_" + best], "setup": best}
    elif torch_enabled:
        errors = "; ".join(f"{s}: {result['torch_' + s].get('error')}" for s in torch_setups)
        result["torch"] = {"status": "error", "error": errors or "no torch setup asked for"}
    for who in ["torch"] + ["torch_" + s for s in torch_setups] + ["reference"]:
        if result.get(who, {}).get("status") == "ok":
            result[f"speedup_vs_{who}"] = result[who]["median_s"] / fast_t
            result[f"{who}_gflops"] = result["flops_per_step"] / result[who]["median_s"] / 1e9
    for who, values in losses.items():
        if who != "fastnn":
            result[f"loss_rel_diff_{who}"] = max(abs(a - b) / max(abs(b), 1e-12)
                                                 for a, b in zip(values, losses["fastnn"]))
    return result


def time_step(name, repeats=10, warmup=2, seed=0):
    """Median seconds of a fastnn step alone (thread scaling and other single-contender uses)."""
    fnn.seed(seed)
    model, input_shape, loss_name = zoo.build(name)
    x, target = make_batch(model, input_shape, loss_name, BATCH[name], seed)
    step = FastnnStep(model, loss_name, x, target)
    times, _ = measure_interleaved({"fastnn": (step, repeats)}, warmup)["fastnn"]
    return float(np.median(times))
