"""The convolutions of the conv-heavy models, at the models' own shapes: every Conv2D and
ConvTranspose2D of vgg-bn, dcgan-g, dcgan-d and resnet, forward and backward as the training step calls
them (no dx for a model's first layer, whose input needs no gradient), fastnn's kernels against
the ones PyTorch's step runs (``aten::convolution`` / ``aten::convolution_backward``, oneDNN on
the CPU), interleaved call by call in one process.

This is the measure behind "the convolutions run at N% of the GEMM peak": a model's conv
GFLOP/s is the FLOPs of all its convolutions (2 per multiply-add: forward, dX and dW each
2*N*O*C*KH*KW*P over the smaller side's P pixels) divided by the sum of their median times. It
leaves out what sits between the convolutions (batch norm, activations, pooling) and is divided
by the run's best-of float32 GEMM peak (numpy, torch.mm or fastnn's own GEMM, whichever is
fastest), so it is the stricter of the two readings.

Run on its own: ``python -m benchmarks.convs [--models vgg-bn ...] [--repeats N]``.
"""
import argparse

import numpy as np

import fastnn as fnn
from fastnn import _core, zoo

from .models import BATCH, make_batch, measure_interleaved

CONV_MODELS = ("vgg-bn", "dcgan-g", "dcgan-d", "resnet")


def conv_layers(name):
    """``[(layer, x_shape, y_shape, first)]`` of model ``name`` at its suite batch size (``first``:
    the layer reads the model's input, so the training step needs no dx)."""
    model, shape, loss_name = zoo.build(name)
    x, _ = make_batch(model, shape, loss_name, BATCH[name])
    return [(layer, a.shape, y.shape, first) for layer, a, y, first in _layer_calls(model, x)
            if type(layer).__name__ in ("Conv2D", "ConvTranspose2D")]


def _layer_calls(model, x):
    """``(layer, input, output, reads_the_model_input)`` of each layer call of an inference
    forward, for a Sequential and a graph model (a merge's input: its first)."""
    if not hasattr(model, "_steps"):
        for i, layer in enumerate(model):
            y = layer.forward(x, training=False)
            yield layer, x, y, i == 0
            x = y
        return
    source = id(model._inputs[0])
    values = {source: x}
    for step in model._steps:
        node = step.node
        args = [values[id(t)] for t in node.inputs]
        y = step.runner.forward(args if node.as_list else args[0], training=False)
        values[id(node.output)] = y
        yield step.runner, args[0], y, id(node.inputs[0]) == source


def _describe(layer, x_shape):
    kind = "convT" if type(layer).__name__ == "ConvTranspose2D" else "conv"
    (kh, kw), (sh, _), (ph, _) = layer.kernel_size, layer.stride, layer.padding
    text = f"{kind} {layer.in_channels}->{layer.out_channels} k{kh}"
    text += f" s{sh}" if sh != 1 else ""
    text += f" p{ph}" if ph else ""
    return text + f" {x_shape[2]}x{x_shape[3]}"


def _forward_flops(layer, x_shape, y_shape):
    kh, kw = layer.kernel_size
    n, _, h, w = x_shape if type(layer).__name__ == "ConvTranspose2D" else y_shape
    return 2.0 * n * layer.in_channels * layer.out_channels * kh * kw * h * w


def _contenders(layer, x_shape, y_shape, first, use_torch, rng):
    """{label: zero-argument call}: fastnn and torch forward and backward of one layer. The
    forwards return the output, the backwards (dx, dW, db) as torch's does (fastnn's dW and db
    are accumulated into, from zero)."""
    transposed = type(layer).__name__ == "ConvTranspose2D"
    w = layer.weight.data
    b = None if layer.bias is None else layer.bias.data
    x = rng.standard_normal(x_shape, dtype=np.float32)
    dy = rng.standard_normal(y_shape, dtype=np.float32)
    out = np.empty(y_shape, np.float32)
    dx = None if first else np.empty_like(x)
    dw, db = np.zeros_like(w), None if b is None else np.zeros_like(b)
    s, p = layer.stride, layer.padding
    fwd_kernel = _core.conv_transpose2d_forward if transposed else _core.conv2d_forward
    bwd_kernel = _core.conv_transpose2d_backward if transposed else _core.conv2d_backward
    calls = {"fastnn fwd": lambda: fwd_kernel(x, w, b, out, s, p),
             "fastnn bwd": lambda: (bwd_kernel(x, w, dy, dx, dw, db, s, p), dw, db)}
    if use_torch:
        import torch

        tx, tw, tdy = (torch.from_numpy(a) for a in (x, w, dy))
        tb = None if b is None else torch.from_numpy(b)
        out_pad = [0, 0]
        if transposed:
            out_pad = [y_shape[2 + d] - ((x_shape[2 + d] - 1) * s[d] - 2 * p[d] + layer.kernel_size[d])
                       for d in range(2)]
        geometry = (list(s), list(p), [1, 1], transposed, out_pad, 1)
        bias_sizes = [layer.out_channels] if b is not None else None
        mask = [not first, True, b is not None]
        calls["torch fwd"] = lambda: torch.ops.aten.convolution(tx, tw, tb, *geometry)
        calls["torch bwd"] = lambda: torch.ops.aten.convolution_backward(tdy, tx, tw, bias_sizes, *geometry, mask)
    return calls


def interleaved_calls(calls, repeats):
    """{label: [seconds]} of ``repeats`` single calls of each of ``calls`` (label -> call), in
    alternation, the order reversed every round, each timed call after an untimed one of the same
    contender (:func:`benchmarks.models.measure_interleaved` with one call per sample)."""
    timed = measure_interleaved({k: (call, repeats) for k, call in calls.items()}, warmup=1,
                                min_sample_s=0)
    return {k: times for k, (times, _) in timed.items()}


def bench_model_convs(model_names, repeats=20, use_torch=True, sgemm_size=1024, gemm="numpy"):
    """Per model: every conv layer's fastnn and torch median forward/backward seconds and FLOPs,
    and the totals. Samples alternate between the contenders (and reverse their order every
    other round), one call each after an untimed one, so machine noise falls on all of them.
    One more contender is a float32 GEMM of two ``sgemm_size`` squares by ``gemm`` (numpy,
    fastnn or torch: the suite passes the winner of its GEMM peak): its median over the model's
    rounds is the GEMM rate under the same conditions (``sgemm_gflops``), beside the run's
    best-of peak, which a busy spell on a shared machine leaves far above what anything reaches
    while it lasts. (numpy's OpenBLAS workers must not spin on after a call: fastnn's
    OPENBLAS_THREAD_TIMEOUT, see fastnn/_core/threads.py.)"""
    from . import system

    rng = np.random.default_rng(8)
    sgemm = system.gemm_call(gemm, sgemm_size, rng)
    if use_torch:
        import torch

        torch.set_num_threads(fnn.get_num_threads())
    result = {}
    for name in model_names:
        layers, sgemm_times = [], []
        for layer, x_shape, y_shape, first in conv_layers(name):
            calls = _contenders(layer, x_shape, y_shape, first, use_torch, rng)
            calls["sgemm"] = sgemm
            samples = interleaved_calls(calls, repeats)
            fwd = _forward_flops(layer, x_shape, y_shape)
            row = {"layer": _describe(layer, x_shape), "fwd_flops": fwd, "bwd_flops": fwd * (1 if first else 2)}
            sgemm_times += samples.pop("sgemm")
            for label, times in samples.items():
                row[label.replace(" ", "_") + "_s"] = float(np.median(times))
            layers.append(row)
        total = {"layers": layers, "flops": sum(r["fwd_flops"] + r["bwd_flops"] for r in layers),
                 "sgemm_contender": gemm,
                 "sgemm_gflops": 2.0 * sgemm_size ** 3 / float(np.median(sgemm_times)) / 1e9}
        for who in ("fastnn", "torch") if use_torch else ("fastnn",):
            seconds = sum(r[f"{who}_fwd_s"] + r[f"{who}_bwd_s"] for r in layers)
            total[f"{who}_s"] = seconds
            total[f"{who}_gflops"] = total["flops"] / seconds / 1e9
        result[name] = total
    return result


def main(argv=None):
    from . import report, system

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(CONV_MODELS), choices=CONV_MODELS)
    args, use_torch = system.layer_bench_setup(parser, argv)
    peak = system.gemm_peak(with_torch=use_torch)
    result = bench_model_convs(args.models, args.repeats, use_torch, gemm=peak["best"])
    print(f"{fnn.get_num_threads()} threads; " + report.peak_text(peak) + "\n")
    print(report.model_convs_table(result, peak["gflops"]))


if __name__ == "__main__":
    main()
