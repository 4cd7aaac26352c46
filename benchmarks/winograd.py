"""The Winograd routes (winograd's F(2x2,3x3) and F(4x4,3x3); F2s: winograd/small) against
fastnn's other stride-1 route and PyTorch's conv, on vgg-bn's 3x3 convolutions at the suite
batch (``--models``: also resnet's): each forward, and each backward-data pass (the forward of
dy with the flipped, transposed weight; none for the first layer), interleaved call by call
in one process, medians. Then the weight gradients (dW and db): winograd_dw against the exact
route the planner takes without it (dwt_s1) and PyTorch's (torch.nn.grad.conv2d_weight).
Effective GFLOP/s count the direct convolution's FLOPs (2*N*O*C*9*OH*OW), so a route past the
GEMM roofline shows above the measured GEMM peak (``system.gemm_peak``: the best of numpy's,
fastnn's and torch's float32 GEMM, same run).

Accuracy: the error against the float64 reference (fastnn._core.reference), as the largest
absolute error over the largest absolute output, and the root-mean-square relative error, for
both fastnn routes (torch's for comparison).

Run: ``python -m benchmarks.winograd [--repeats N] [--threads 2] [--no-torch] [--extra]
[--models vgg-bn resnet]`` (--extra adds wider VGG-style layers, 64..512 channels at
32x32..4x4).
"""
import argparse
import time

import numpy as np

from fastnn._core import _conv, reference
from fastnn._core.tuning import tuning

from . import report, system
from .convs import conv_layers


def vgg_layers(extra=False, models=("vgg-bn",)):
    """[(label, n, c, o, h, w, first)] of the models' distinct 3x3 stride-1 convolutions
    (padding 1; and wider ones)."""
    found = []
    for name in models:
        for layer, x_shape, _, first in conv_layers(name):
            if (type(layer).__name__ != "Conv2D" or tuple(layer.kernel_size) != (3, 3)
                    or tuple(layer.stride) != (1, 1) or tuple(layer.padding) != (1, 1)):
                continue
            entry = (f"conv {layer.in_channels}->{layer.out_channels} {x_shape[2]}x{x_shape[3]}",
                     x_shape[0], layer.in_channels, layer.out_channels, x_shape[2], x_shape[3],
                     first)
            if entry not in found:
                found.append(entry)
    if extra:
        n = found[0][1]
        for c, o, s in ((64, 128, 32), (128, 128, 16), (256, 256, 8), (512, 512, 4)):
            found.append((f"conv {c}->{o} {s}x{s}", n, c, o, s, s, False))
    return found


def _median(times):
    return float(np.median(times))


def errors(got, ref):
    """(max abs error / max |ref|, RMS of the error / RMS of ref)."""
    d = got.astype(np.float64) - ref
    return (float(np.abs(d).max() / np.abs(ref).max()),
            float(np.sqrt(np.mean(d * d) / np.mean(ref * ref))))


def layer_cases(layers):
    """[(label, x, w, bias or None)] forwards and backward-data passes of the layers."""
    rng = np.random.default_rng(0)
    cases = []
    for label, n, c, o, h, w, first in layers:
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = (rng.standard_normal((o, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        b = rng.standard_normal(o).astype(np.float32)
        cases.append((label + " fwd", x, wt, b))
        if not first:
            dy = rng.standard_normal((n, o, h, w)).astype(np.float32)
            flipped = np.ascontiguousarray(wt.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
            cases.append((label + " dx", dy, flipped, None))
    return cases


ROUTES = {  # label -> tile, or None: fastnn's planner with Winograd off (the implicit route
    "implicit": None, "F2": 2, "F2s": "small", "F4": 4}  # on AVX-512, im2col below; the tile:
# the route's knob; "small": F(2x2,3x3) on winograd/small, the kernel for few channels)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--extra", action="store_true", help="wider VGG-style layers too")
    p.add_argument("--models", nargs="+", default=["vgg-bn"], help="suite models (vgg-bn, resnet)")
    args, use_torch = system.layer_bench_setup(p, argv)
    torch = None
    if use_torch:
        import torch
        if args.threads is not None:
            torch.set_num_threads(args.threads)
    print(report.peak_text(system.gemm_peak(with_torch=use_torch)))
    routes = {k: t for k, t in ROUTES.items()
              if t is None or _conv._winograd_available(2 if t == "small" else t)}
    names = list(routes) + (["torch"] if torch is not None else [])
    print(f"{'layer':24s} " + " ".join(f"{k + ' ms':>10s}" for k in names) + "   effective GFLOP/s"
          + "   error vs float64, max/max (rms/rms)")
    layers = vgg_layers(args.extra, args.models)
    for label, x, wt, b in layer_cases(layers):
        n, c, h, w = x.shape
        o = wt.shape[0]
        out = {k: np.empty((n, o, h, w), np.float32) for k in routes}
        calls = {}
        for k, tile in routes.items():
            if tile is None:
                calls[k] = lambda k=k: _without_winograd(
                    lambda: _conv.conv2d_forward(x, wt, b, out[k], 1, 1))
            elif tile == "small":
                calls[k] = lambda k=k: _conv._winograd_small_forward(x, wt, b, out[k], 1, 1)
            else:
                calls[k] = lambda k=k, tile=tile: _conv._winograd_forward(
                    x, wt, b, out[k], 1, 1, 0, 0.0, 0, tile)
        if torch is not None:
            tx, tw = torch.from_numpy(x), torch.from_numpy(wt)
            tb = None if b is None else torch.from_numpy(b)
            calls["torch"] = lambda: torch.nn.functional.conv2d(tx, tw, tb, 1, 1)
        results = {k: f() for k, f in calls.items()}
        times = {k: [] for k in calls}
        for _ in range(args.repeats):
            for k, f in calls.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        ref = np.empty((n, o, h, w), np.float64)
        reference.conv2d_forward(x.astype(np.float64), wt.astype(np.float64),
                                 None if b is None else b.astype(np.float64), ref, 1, (1, 1))
        flops = 2.0 * n * o * c * 9 * h * w
        med = {k: _median(v) for k, v in times.items()}
        errs = {k: errors(results[k] if k in routes else results[k].numpy(), ref) for k in names}
        print(f"{label:24s} " + " ".join(f"{med[k] * 1e3:10.2f}" for k in names) + "   "
              + " ".join(f"{flops / med[k] / 1e9:5.0f}" for k in names) + "   "
              + " ".join(f"{k} {e[0]:.1e} ({e[1]:.1e})" for k, e in errs.items()))


    weight_gradients(layers, args.repeats, torch)


def weight_gradients(layers, repeats, torch=None):
    """The dW (and db) table: winograd_dw, the exact route (tuning conv_winograd_dw=False:
    dwt_s1) and torch, interleaved, medians, effective GFLOP/s and the error of dW against
    the float64 reference (max/max, rms/rms)."""
    names = ["exact", "winograd_dw"] + (["torch"] if torch is not None else [])
    print(f"\n{'weight gradient':24s} " + " ".join(f"{k + ' ms':>14s}" for k in names)
          + "   effective GFLOP/s   error vs float64, max/max (rms/rms)")
    rng = np.random.default_rng(1)
    for label, n, c, o, h, w, _ in layers:
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        dy = rng.standard_normal((n, o, h, w)).astype(np.float32)
        wt = np.zeros((o, c, 3, 3), np.float32)
        dws = {k: np.zeros((o, c, 3, 3), np.float32) for k in names}
        dbs = {k: np.zeros(o, np.float32) for k in names}

        def ours(k, winograd):
            def call():
                dws[k][...] = 0
                dbs[k][...] = 0
                with tuning(conv_winograd_dw=winograd):
                    _conv.conv2d_backward(x, wt, dy, None, dws[k], dbs[k], 1, 1)
                return dws[k]
            return call

        calls = {"exact": ours("exact", False), "winograd_dw": ours("winograd_dw", True)}
        if torch is not None:
            tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
            calls["torch"] = lambda: torch.nn.grad.conv2d_weight(tx, wt.shape, tdy, 1, 1)
        results = {k: f() for k, f in calls.items()}
        times = {k: [] for k in calls}
        for i in range(repeats):
            for k, f in (calls.items() if i % 2 == 0 else reversed(calls.items())):
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        ref = np.zeros((o, c, 3, 3))
        reference.conv2d_backward(x.astype(np.float64), wt.astype(np.float64),
                                  dy.astype(np.float64), None, ref, None, 1, (1, 1))
        flops = 2.0 * n * o * c * 9 * h * w
        med = {k: _median(v) for k, v in times.items()}
        errs = {k: errors(np.asarray(results[k]), ref) for k in names}
        print(f"{label:24s} " + " ".join(f"{med[k] * 1e3:14.2f}" for k in names) + "   "
              + " ".join(f"{flops / med[k] / 1e9:5.0f}" for k in names) + "   "
              + " ".join(f"{k} {e[0]:.1e} ({e[1]:.1e})" for k, e in errs.items()))


def _without_winograd(call):
    """call() with the planner's Winograd route off (fastnn's exact stride-1 route)."""
    with tuning(conv_winograd=False):
        return call()


if __name__ == "__main__":
    main()
