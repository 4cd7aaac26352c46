"""Grouped, depthwise and dilated convolutions (``fastnn._core.conv_general``) against PyTorch
(``aten::convolution`` / ``aten::convolution_backward``, eager), forward and backward (dx, dW,
db), float32, interleaved call by call in one process, medians. The depthwise cases also run on
the im2col route (a per-group im2col + GEMM: for one channel per group, a (m x k*k) @ (k*k x P)
product per plane), the formulation the depthwise route replaces.

Run: ``python -m benchmarks.conv_general [--threads 2] [--repeats 20]``; the page is
``benchmarks/conv_general.md``.
"""
import argparse

import numpy as np

import fastnn as fnn
from fastnn import _core

from .convs import interleaved_calls

# (label, N, C, O, k, stride, padding, dilation, groups, side)
CASES = (
    ("depthwise 3x3", 64, 32, 32, 3, 1, 1, 1, 32, 28),
    ("depthwise 3x3 s2", 64, 32, 32, 3, 2, 1, 1, 32, 28),
    ("depthwise 5x5 x2", 32, 16, 32, 5, 1, 2, 1, 16, 28),
    ("grouped 3x3 g4", 64, 64, 64, 3, 1, 1, 1, 4, 28),
    ("dilated 3x3 d2", 64, 32, 32, 3, 1, 2, 2, 1, 28),
)


def _contenders(case, use_torch, rng):
    _, n, c, o, k, s, p, d, g, side = case
    x = rng.standard_normal((n, c, side, side), dtype=np.float32)
    w = rng.standard_normal((o, c // g, k, k), dtype=np.float32)
    b = rng.standard_normal(o, dtype=np.float32)
    oh = (side + 2 * p - d * (k - 1) - 1) // s + 1
    out = np.empty((n, o, oh, oh), np.float32)
    dy = rng.standard_normal(out.shape, dtype=np.float32)
    dx, dw, db = np.empty_like(x), np.zeros_like(w), np.zeros_like(b)
    routes = ["depthwise", "im2col"] if g == c else ["im2col"]
    calls = {}
    for route in routes:
        calls[f"{route} fwd"] = lambda r=route: _core.conv2d_general_forward(
            x, w, b, out, s, p, d, g, route=r)
        calls[f"{route} bwd"] = lambda r=route: _core.conv2d_general_backward(
            x, w, dy, dx, dw, db, s, p, d, g, route=r)
    if use_torch:
        import torch

        tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, w, b, dy))
        geometry = ([s, s], [p, p], [d, d], False, [0, 0], g)
        calls["torch fwd"] = lambda: torch.ops.aten.convolution(tx, tw, tb, *geometry)
        calls["torch bwd"] = lambda: torch.ops.aten.convolution_backward(
            tdy, tx, tw, [o], *geometry, [True, True, True])
    return calls


def bench(repeats=20, use_torch=True):
    """{case label: {contender: median seconds}}; samples alternate between the contenders
    (reversed every other round), each timed call after an untimed one of the same contender."""
    if use_torch:
        import torch

        torch.set_num_threads(fnn.get_num_threads())
    rng = np.random.default_rng(0)
    result = {}
    for case in CASES:
        calls = _contenders(case, use_torch, rng)
        samples = interleaved_calls(calls, repeats)
        result[case[0]] = {k: float(np.median(v)) for k, v in samples.items()}
    return result


def table(result):
    lines = ["| case | shape | fastnn fwd | fastnn bwd | per-group GEMM fwd | per-group GEMM bwd "
             "| torch fwd | torch bwd |", "|---|---|---|---|---|---|---|---|"]
    for case in CASES:
        label, n, c, o, k, s, p, d, g, side = case
        r = result[label]
        main = "depthwise" if g == c else "im2col"

        def ms(key):
            return f"{r[key] * 1e3:.2f}" if key in r else "-"

        gemm = ("im2col fwd", "im2col bwd") if g == c else ("", "")
        lines.append(f"| {label} | N{n} {c}->{o} k{k} s{s} p{p} d{d} g{g} {side}x{side} | "
                     f"{ms(main + ' fwd')} | {ms(main + ' bwd')} | {ms(gemm[0])} | {ms(gemm[1])} | "
                     f"{ms('torch fwd')} | {ms('torch bwd')} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import system

    args, use_torch = system.layer_bench_setup(parser, argv)
    result = bench(args.repeats, use_torch)
    print(f"{fnn.get_num_threads()} threads, float32, median ms\n")
    print(table(result))


if __name__ == "__main__":
    main()
