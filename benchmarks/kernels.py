"""Kernel benchmark of the Cython core: GEMM, dense forward, conv2d forward/backward.

Run from the repository root: ``python -m benchmarks.kernels [--quick] [--sweep-chunk]``.
Prints Markdown tables; every number is the median of repeated calls after a warm-up, with
fastnn and its comparison measured side by side in the same process.
"""
import argparse
import time

import numpy as np

from fastnn import _core
from fastnn._core import _conv, reference


def median_seconds(fn, repeats, min_time=0.0):
    fn()  # warm-up (page faults, BLAS thread start)
    times = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_gemm(sizes, repeats):
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        out = np.empty((n, n), np.float32)
        flops = 2.0 * n ** 3
        t_f = median_seconds(lambda: _core.gemm(a, b, out), repeats, 0.3)
        t_n = median_seconds(lambda: np.matmul(a, b, out=out), repeats, 0.3)
        rows.append((f"gemm {n}x{n}x{n}", flops / t_f / 1e9, flops / t_n / 1e9, t_n / t_f))
    return rows


def bench_dense(shapes, repeats):
    rows = []
    rng = np.random.default_rng(1)
    for m, k, n in shapes:
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        b = rng.standard_normal(n, dtype=np.float32)
        out = np.empty((m, n), np.float32)

        def numpy_dense():
            np.matmul(x, w.T, out=out)
            np.add(out, b, out=out)
            np.maximum(out, 0, out=out)

        flops = 2.0 * m * n * k
        t_f = median_seconds(lambda: _core.dense_forward(x, w, b, out, "relu"), repeats, 0.2)
        t_n = median_seconds(numpy_dense, repeats, 0.2)
        rows.append((f"dense+relu {m}x{k} -> {n} ({t_f * 1e6:.1f} us vs {t_n * 1e6:.1f} us)",
                     flops / t_f / 1e9, flops / t_n / 1e9, t_n / t_f))
    return rows


CONV_LAYERS = [
    # name, N, C, H, W, O, K, stride, padding
    ("lenet conv1 1->6 k5 p2 28x28", 64, 1, 28, 28, 6, 5, 1, 2),
    ("lenet conv2 6->16 k5 14x14", 64, 6, 14, 14, 16, 5, 1, 0),
    ("vgg 32->32 k3 p1 28x28", 64, 32, 28, 28, 32, 3, 1, 1),
    ("vgg 64->64 k3 p1 14x14", 64, 64, 14, 14, 64, 3, 1, 1),
]


def bench_conv(layers, repeats, ref_repeats):
    rows = []
    rng = np.random.default_rng(2)
    for name, n, c, h, w, o, k, s, p in layers:
        oh = (h + 2 * p - k) // s + 1
        ow = (w + 2 * p - k) // s + 1
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        wt = rng.standard_normal((o, c, k, k), dtype=np.float32)
        b = rng.standard_normal(o, dtype=np.float32)
        out = np.empty((n, o, oh, ow), np.float32)
        dy = rng.standard_normal(out.shape, dtype=np.float32)
        dx, dw, db = np.empty_like(x), np.zeros_like(wt), np.zeros_like(b)
        flops = 2.0 * n * o * c * k * k * oh * ow
        t_f = median_seconds(lambda: _core.conv2d_forward(x, wt, b, out, s, p), repeats, 0.3)
        t_r = median_seconds(lambda: reference.conv2d_forward(x, wt, b, out, s, p), ref_repeats)
        rows.append((f"conv fwd {name}", flops / t_f / 1e9, flops / t_r / 1e9, t_r / t_f))
        t_f = median_seconds(lambda: _core.conv2d_backward(x, wt, dy, dx, dw, db, s, p), repeats, 0.3)
        t_r = median_seconds(lambda: reference.conv2d_backward(x, wt, dy, dx, dw, db, s, p), ref_repeats)
        rows.append((f"conv bwd {name}", 2 * flops / t_f / 1e9, 2 * flops / t_r / 1e9, t_r / t_f))
    return rows


def sweep_chunk(layers, repeats):
    """Conv forward+backward GFLOP/s against the im2col chunk size (the tuning behind _conv)."""
    print("\n| layer | " + " | ".join(f"{c >> 10} KiB" for c in CHUNKS) + " |")
    print("|---|" + "---|" * len(CHUNKS))
    rng = np.random.default_rng(3)
    old = _conv._set_col_chunk_bytes(1 << 22)
    try:
        for name, n, c, h, w, o, k, s, p in layers:
            oh = (h + 2 * p - k) // s + 1
            ow = (w + 2 * p - k) // s + 1
            x = rng.standard_normal((n, c, h, w), dtype=np.float32)
            wt = rng.standard_normal((o, c, k, k), dtype=np.float32)
            out = np.empty((n, o, oh, ow), np.float32)
            dx, dw = np.empty_like(x), np.zeros_like(wt)
            flops = 6.0 * n * o * c * k * k * oh * ow
            cells = []
            for chunk in CHUNKS:
                _conv._set_col_chunk_bytes(chunk)

                def step():
                    _core.conv2d_forward(x, wt, None, out, s, p)
                    _core.conv2d_backward(x, wt, out, dx, dw, None, s, p)

                cells.append(f"{flops / median_seconds(step, repeats, 0.3) / 1e9:.1f}")
            print(f"| {name} | " + " | ".join(cells) + " |")
    finally:
        _conv._set_col_chunk_bytes(old)


CHUNKS = [1, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 1 << 30]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--sweep-chunk", action="store_true", help="also sweep the im2col chunk size")
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else 15
    sizes = [256, 512, 1024] if args.quick else [256, 512, 1024, 2048]
    print(f"fastnn kernels, float32, {_core.threads.get_num_threads()} threads\n")
    gemm_rows = bench_gemm(sizes, repeats)
    peak = max(r[1] for r in gemm_rows)
    print("| kernel | fastnn GFLOP/s | numpy GFLOP/s | speed-up |")
    print("|---|---|---|---|")
    for name, f, nref, ratio in gemm_rows:
        print(f"| {name} | {f:.1f} | {nref:.1f} | {ratio:.2f}x |")
    dense_shapes = [(32, 25, 3), (128, 784, 256), (128, 256, 10), (1024, 1024, 1024)]
    for name, f, nref, ratio in bench_dense(dense_shapes, repeats * 20):
        print(f"| {name} | {f:.2f} | {nref:.2f} | {ratio:.2f}x |")
    print(f"\nsgemm peak measured above: {peak:.1f} GFLOP/s\n")
    print("| kernel (batch 64) | fastnn GFLOP/s | % of sgemm peak | NumPy reference GFLOP/s | speed-up |")
    print("|---|---|---|---|---|")
    for name, f, nref, ratio in bench_conv(CONV_LAYERS, repeats, 2 if args.quick else 3):
        print(f"| {name} | {f:.1f} | {100 * f / peak:.0f}% | {nref:.2f} | {ratio:.1f}x |")
    if args.sweep_chunk:
        sweep_chunk(CONV_LAYERS, repeats)


if __name__ == "__main__":
    main()
