"""Kernel benchmark of the compiled core: GEMM, dense forward, conv2d and conv_transpose2d
forward/backward, the LSTM recurrence, multi-head attention and its masked softmax, max/avg
pooling and batch norm forward/backward.

Run from the repository root: ``python -m benchmarks.kernels [--quick] [--sweep-chunk]``.
Prints Markdown tables; every number is the median of repeated calls after a warm-up, with
fastnn and its comparison measured side by side in the same process.

Figures:
- GEMM-like kernels report GFLOP/s = 2*M*N*K per product, and the fraction of the float32 GEMM
  peak measured at the start of the run (the best of numpy, torch.mm and fastnn's own GEMM,
  ``system.gemm_peak``). conv2d / conv_transpose2d: 2*N*O*C*KH*KW*(spatial size of
  the smaller side: conv's output, conv-transpose's input) forward, twice that backward (dX and
  dW). LSTM (``lstm_forward`` / ``lstm_backward``, the whole sequence): the recurrent products
  only, 2*T*N*4H*H forward (h_t @ W_hh.T) and the same backward (dpre_t @ W_hh); the input
  projection xw and dW_hh are the caller's GEMMs and not part of these kernels.
- Memory-bound kernels (pooling, batch norm) report GB/s = bytes moved / time, counting the
  compulsory traffic: every array the kernel reads plus every array it writes, each once at its
  nbytes (an accumulated ``+=`` output counts twice: read and written; argmax is int64; the
  per-channel vectors of batch norm are included). A kernel that sweeps an array twice (batch
  norm: statistics, then normalisation) is not credited twice.
Baselines: numpy for gemm and dense, ``fastnn._core.reference`` (the NumPy oracle) for the rest.
"""
import argparse
import time

import numpy as np

from fastnn import _core
from fastnn._core import reference
from fastnn._core.tuning import tuning


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


CONVT_LAYERS = [
    # name, N, Cin, H, W, Cout, K, stride, padding: the layers of dcgan-g (output (H-1)*s - 2p + K)
    ("dcgan-g 128->64 k4 s2 p1 7x7", 64, 128, 7, 7, 64, 4, 2, 1),
    ("dcgan-g 64->128 k7 1x1", 64, 64, 1, 1, 128, 7, 1, 0),
    ("dcgan-g 64->1 k4 s2 p1 14x14", 64, 64, 14, 14, 1, 4, 2, 1),
]


def bench_conv_transpose(layers, repeats, ref_repeats):
    """conv_transpose2d forward and backward, GFLOP/s: 2*N*Cin*Cout*K*K*H*W forward (H, W of the
    input), twice that backward."""
    rows = []
    rng = np.random.default_rng(4)
    for name, n, c, h, w, o, k, s, p in layers:
        oh = (h - 1) * s - 2 * p + k
        ow = (w - 1) * s - 2 * p + k
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        wt = rng.standard_normal((c, o, k, k), dtype=np.float32)
        b = rng.standard_normal(o, dtype=np.float32)
        out = np.empty((n, o, oh, ow), np.float32)
        dy = rng.standard_normal(out.shape, dtype=np.float32)
        dx, dw, db = np.empty_like(x), np.zeros_like(wt), np.zeros_like(b)
        flops = 2.0 * n * c * o * k * k * h * w
        t_f = median_seconds(lambda: _core.conv_transpose2d_forward(x, wt, b, out, s, p), repeats, 0.3)
        t_r = median_seconds(lambda: reference.conv_transpose2d_forward(x, wt, b, out, s, p), ref_repeats)
        rows.append((f"convT fwd {name}", flops / t_f / 1e9, flops / t_r / 1e9, t_r / t_f))
        t_f = median_seconds(lambda: _core.conv_transpose2d_backward(x, wt, dy, dx, dw, db, s, p), repeats, 0.3)
        t_r = median_seconds(lambda: reference.conv_transpose2d_backward(x, wt, dy, dx, dw, db, s, p),
                             ref_repeats)
        rows.append((f"convT bwd {name}", 2 * flops / t_f / 1e9, 2 * flops / t_r / 1e9, t_r / t_f))
    return rows


LSTM_SHAPES = [
    # T, N, H: the lstm model's LSTM(32, 128) on 32 sequences of 32 steps
    (32, 32, 128),
]


def bench_lstm(shapes, repeats, ref_repeats):
    """lstm_forward / lstm_backward over the whole sequence, GFLOP/s of the recurrent products:
    2*T*N*4H*H each way."""
    rows = []
    rng = np.random.default_rng(5)
    for t, n, h in shapes:
        xw = rng.standard_normal((t, n, 4 * h), dtype=np.float32)
        w_hh = (rng.standard_normal((4 * h, h), dtype=np.float32) / np.sqrt(h)).astype(np.float32)
        b_hh = rng.standard_normal(4 * h, dtype=np.float32)
        hs = np.zeros((t + 1, n, h), np.float32)
        cs = np.zeros((t + 1, n, h), np.float32)
        hs[0] = rng.standard_normal((n, h), dtype=np.float32)
        cs[0] = rng.standard_normal((n, h), dtype=np.float32)
        gates = np.empty((t, n, 4 * h), np.float32)
        dhs = rng.standard_normal((t, n, h), dtype=np.float32)
        dpre = np.empty((t, n, 4 * h), np.float32)
        dh0, dc0 = np.empty((n, h), np.float32), np.empty((n, h), np.float32)
        flops = 2.0 * t * n * 4 * h * h
        name = f"T={t} N={n} H={h}"
        t_f = median_seconds(lambda: _core.lstm_forward(xw, w_hh, b_hh, hs, cs, gates), repeats, 0.3)
        t_r = median_seconds(lambda: reference.lstm_forward(xw, w_hh, b_hh, hs, cs, gates), ref_repeats)
        rows.append((f"lstm fwd {name}", flops / t_f / 1e9, flops / t_r / 1e9, t_r / t_f))
        _core.lstm_forward(xw, w_hh, b_hh, hs, cs, gates)  # cs and gates of the compiled forward
        t_f = median_seconds(lambda: _core.lstm_backward(w_hh, cs, gates, dhs, dpre, dh0, dc0), repeats, 0.3)
        t_r = median_seconds(lambda: reference.lstm_backward(w_hh, cs, gates, dhs, dpre, dh0, dc0),
                             ref_repeats)
        rows.append((f"lstm bwd {name}", flops / t_f / 1e9, flops / t_r / 1e9, t_r / t_f))
    return rows


# the compiled kernels MultiheadAttention calls (its batched products are numpy.matmul)
ATTENTION_KERNELS = ("dense_forward", "dense_backward", "masked_softmax_forward", "masked_softmax_backward")
ATTENTION_SHAPES = [
    # N, T, E, heads: the suite's transformer model (batch 32, T 64, d_model 128, 4 heads)
    (32, 64, 128, 4),
]


def bench_attention(shapes, repeats, ref_repeats):
    """MultiheadAttention forward and backward (self-attention, causal mask), GFLOP/s: forward
    2*N*T*E*(4E) for the Q/K/V and output projections plus 4*N*T*T*E for Q K^T and P V;
    backward twice that (dX and dW of the projections, the four batched products). The
    baseline is the same layer on the NumPy reference kernels."""
    from fastnn import layers as L

    from .models import reference_kernels

    rows = []
    rng = np.random.default_rng(7)
    for n, t, e, h in shapes:
        mha = L.MultiheadAttention(e, h)
        x = rng.standard_normal((n, t, e), dtype=np.float32)
        dy = rng.standard_normal((n, t, e), dtype=np.float32)
        mask = L.causal_mask(t)
        flops = 2.0 * n * t * e * 4 * e + 4.0 * n * t * t * e
        name = f"N={n} T={t} E={e} heads={h}"

        def forward():
            mha.forward(x, attn_mask=mask)

        def backward():  # the forward's cache stays: backward can repeat (gradients accumulate)
            mha.backward(dy)

        def on_reference(fn):
            def run():
                with reference_kernels(names=ATTENTION_KERNELS):
                    fn()
            return run

        t_f = median_seconds(forward, repeats, 0.3)
        t_r = median_seconds(on_reference(forward), ref_repeats)
        rows.append((f"attention fwd {name}", flops / t_f / 1e9, flops / t_r / 1e9, t_r / t_f))
        forward()
        t_f = median_seconds(backward, repeats, 0.3)
        on_reference(forward)()
        t_r = median_seconds(on_reference(backward), ref_repeats)
        rows.append((f"attention bwd {name}", 2 * flops / t_f / 1e9, 2 * flops / t_r / 1e9, t_r / t_f))
    return rows


def bench_masked_softmax(shapes, repeats, ref_repeats):
    """The scaled, masked softmax over the scores (N*heads, T, T) and its backward, GB/s: forward
    scores + mask (T, T) + out, backward p + dp + ds."""
    rows = []
    rng = np.random.default_rng(8)
    for n, t, _, h in shapes:
        scores = rng.standard_normal((n * h, t, t), dtype=np.float32)
        mask = np.triu(np.full((1, t, t), -np.inf, np.float32), 1)
        out, dp, ds = np.empty_like(scores), rng.standard_normal(scores.shape, dtype=np.float32), np.empty_like(scores)
        name = f"{n * h}x{t}x{t} causal"
        nbytes = _nbytes(scores, mask, out)
        t_f = median_seconds(lambda: _core.masked_softmax_forward(scores, 0.17, mask, out), repeats, 0.2)
        t_r = median_seconds(lambda: reference.masked_softmax_forward(scores, 0.17, mask, out), ref_repeats)
        rows.append((f"masked softmax fwd {name}", nbytes / t_f / 1e9, nbytes / t_r / 1e9, t_r / t_f))
        nbytes = _nbytes(out, dp, ds)
        t_f = median_seconds(lambda: _core.masked_softmax_backward(out, dp, 0.17, ds), repeats, 0.2)
        t_r = median_seconds(lambda: reference.masked_softmax_backward(out, dp, 0.17, ds), ref_repeats)
        rows.append((f"masked softmax bwd {name}", nbytes / t_f / 1e9, nbytes / t_r / 1e9, t_r / t_f))
    return rows


def _nbytes(*arrays):
    return float(sum(a.nbytes for a in arrays))


POOL_LAYERS = [
    # name, N, C, H, W, K (stride K, no padding): the 2x2 pools of vgg-bn and lenet5
    ("vgg-bn 2x2 32ch 28x28", 64, 32, 28, 28, 2),
    ("vgg-bn 2x2 64ch 14x14", 64, 64, 14, 14, 2),
    ("lenet 2x2 6ch 28x28", 64, 6, 28, 28, 2),
    ("lenet 2x2 16ch 10x10", 64, 16, 10, 10, 2),
]


def bench_pool(layers, repeats, ref_repeats, kinds=("max", "avg")):
    """Max and avg pooling forward and backward, GB/s. Bytes: max fwd x + out + argmax (int64),
    max bwd dy + argmax + dx, avg fwd x + out, avg bwd dy + dx."""
    rows = []
    rng = np.random.default_rng(6)
    for name, n, c, h, w, k in layers:
        oh, ow = (h - k) // k + 1, (w - k) // k + 1
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        out = np.empty((n, c, oh, ow), np.float32)
        argmax = np.empty(out.shape, np.int64)
        dy = rng.standard_normal(out.shape, dtype=np.float32)
        dx = np.empty_like(x)
        if "max" in kinds:
            moved = _nbytes(x, out, argmax)
            t_f = median_seconds(lambda: _core.maxpool2d_forward(x, k, k, 0, out, argmax), repeats, 0.2)
            t_r = median_seconds(lambda: reference.maxpool2d_forward(x, k, k, 0, out, argmax), ref_repeats)
            rows.append((f"maxpool fwd {name}", moved / t_f / 1e9, moved / t_r / 1e9, t_r / t_f))
            _core.maxpool2d_forward(x, k, k, 0, out, argmax)
            moved = _nbytes(dy, argmax, dx)
            t_f = median_seconds(lambda: _core.maxpool2d_backward(dy, argmax, dx), repeats, 0.2)
            t_r = median_seconds(lambda: reference.maxpool2d_backward(dy, argmax, dx), ref_repeats)
            rows.append((f"maxpool bwd {name}", moved / t_f / 1e9, moved / t_r / 1e9, t_r / t_f))
        if "avg" in kinds:
            moved = _nbytes(x, out)
            t_f = median_seconds(lambda: _core.avgpool2d_forward(x, k, k, 0, out), repeats, 0.2)
            t_r = median_seconds(lambda: reference.avgpool2d_forward(x, k, k, 0, out), ref_repeats)
            rows.append((f"avgpool fwd {name}", moved / t_f / 1e9, moved / t_r / 1e9, t_r / t_f))
            moved = _nbytes(dy, dx)
            t_f = median_seconds(lambda: _core.avgpool2d_backward(dy, k, k, 0, dx), repeats, 0.2)
            t_r = median_seconds(lambda: reference.avgpool2d_backward(dy, k, k, 0, dx), ref_repeats)
            rows.append((f"avgpool bwd {name}", moved / t_f / 1e9, moved / t_r / 1e9, t_r / t_f))
    return rows


BN_SHAPES = [
    # name, N, C, H, W: BatchNorm2D inputs of vgg-bn (the second also dcgan-g's)
    ("vgg-bn 32ch 28x28", 64, 32, 28, 28),
    ("vgg-bn 64ch 14x14", 64, 64, 14, 14),
]


def bench_batchnorm(shapes, repeats, ref_repeats):
    """batchnorm_forward_train and batchnorm_backward (batch statistics), GB/s. Bytes: forward
    x + out + weight + bias + running mean/var twice (updated) + saved mean/invstd; backward
    dy + x + weight + mean + invstd + dx + dweight/dbias twice (accumulated)."""
    rows = []
    rng = np.random.default_rng(7)
    for name, n, c, h, w in shapes:
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        weight = rng.standard_normal(c, dtype=np.float32)
        bias = rng.standard_normal(c, dtype=np.float32)
        rmean, rvar = np.zeros(c, np.float32), np.ones(c, np.float32)
        mean, invstd = np.empty(c, np.float32), np.empty(c, np.float32)
        out = np.empty_like(x)
        dy = rng.standard_normal(x.shape, dtype=np.float32)
        dx, dweight, dbias = np.empty_like(x), np.zeros(c, np.float32), np.zeros(c, np.float32)

        def forward(kernels):
            kernels.batchnorm_forward_train(x, weight, bias, rmean, rvar, 0.1, 1e-5, out, mean, invstd)

        def backward(kernels):
            kernels.batchnorm_backward(dy, x, weight, mean, invstd, dx, dweight, dbias, True)

        moved = _nbytes(x, out, weight, bias, rmean, rmean, rvar, rvar, mean, invstd)
        t_f = median_seconds(lambda: forward(_core), repeats, 0.2)
        t_r = median_seconds(lambda: forward(reference), ref_repeats)
        rows.append((f"bn train fwd {name}", moved / t_f / 1e9, moved / t_r / 1e9, t_r / t_f))
        forward(_core)
        moved = _nbytes(dy, x, weight, mean, invstd, dx, dweight, dweight, dbias, dbias)
        t_f = median_seconds(lambda: backward(_core), repeats, 0.2)
        t_r = median_seconds(lambda: backward(reference), ref_repeats)
        rows.append((f"bn bwd {name}", moved / t_f / 1e9, moved / t_r / 1e9, t_r / t_f))
    return rows


def suite_rows(quick):
    """Rows of the conv_transpose2d, LSTM, pooling and batch-norm benchmarks in the JSON format of
    ``python -m benchmarks`` (``benchmarks.__main__.run_kernels`` makes the gemm/dense/conv ones):
    ``{"kernel", "fastnn_gflops", "baseline_gflops", "speedup"}`` for GEMM-like kernels,
    ``{"kernel", "fastnn_gbps", "baseline_gbps", "speedup"}`` for memory-bound ones; baselines
    are the NumPy reference. Quick: the first layer of each list, fewer repeats."""
    repeats, ref_repeats = (3, 1) if quick else (10, 2)
    first = (lambda layers: layers[:1]) if quick else (lambda layers: layers)
    flop_rows = (bench_conv_transpose(first(CONVT_LAYERS), repeats, ref_repeats)
                 + bench_lstm(LSTM_SHAPES, repeats, ref_repeats)
                 + bench_attention(ATTENTION_SHAPES, repeats, ref_repeats))
    byte_rows = (bench_pool(first(POOL_LAYERS), repeats * 4, ref_repeats)
                 + bench_batchnorm(first(BN_SHAPES), repeats * 4, ref_repeats)
                 + bench_masked_softmax(ATTENTION_SHAPES, repeats * 4, ref_repeats))
    return ([{"kernel": k, "fastnn_gflops": f, "baseline_gflops": b, "speedup": r} for k, f, b, r in flop_rows]
            + [{"kernel": k, "fastnn_gbps": f, "baseline_gbps": b, "speedup": r} for k, f, b, r in byte_rows])


def sweep_chunk(layers, repeats):
    """Conv forward+backward GFLOP/s against the im2col chunk size (the tuning behind _conv)."""
    print("\n| layer | " + " | ".join(f"{c >> 10} KiB" for c in CHUNKS) + " |")
    print("|---|" + "---|" * len(CHUNKS))
    rng = np.random.default_rng(3)
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

            def step():
                _core.conv2d_forward(x, wt, None, out, s, p)
                _core.conv2d_backward(x, wt, out, dx, dw, None, s, p)

            with tuning(conv_col_chunk_bytes=chunk):
                cells.append(f"{flops / median_seconds(step, repeats, 0.3) / 1e9:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


CHUNKS = [1, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 1 << 30]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--sweep-chunk", action="store_true", help="also sweep the im2col chunk size")
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else 15
    sizes = [256, 512, 1024] if args.quick else [256, 512, 1024, 2048]
    print(f"fastnn kernels, float32, {_core.threads.get_num_threads()} threads\n")
    from . import report, system

    try:
        import torch  # noqa: F401
        with_torch = True
    except ImportError:
        with_torch = False
    best = system.gemm_peak((512, 1024, 2048) if not args.quick else (512, 1024), 3 if args.quick else 10, with_torch)
    peak = best["gflops"]
    gemm_rows = bench_gemm(sizes, repeats)
    print("| kernel | fastnn GFLOP/s | numpy GFLOP/s | speed-up |")
    print("|---|---|---|---|")
    for name, f, nref, ratio in gemm_rows:
        print(f"| {name} | {f:.1f} | {nref:.1f} | {ratio:.2f}x |")
    dense_shapes = [(32, 25, 3), (128, 784, 256), (128, 256, 10), (1024, 1024, 1024)]
    for name, f, nref, ratio in bench_dense(dense_shapes, repeats * 20):
        print(f"| {name} | {f:.2f} | {nref:.2f} | {ratio:.2f}x |")
    print("\n" + report.peak_text(best) + "\n")
    print("| kernel (batch 64) | fastnn GFLOP/s | % of GEMM peak | NumPy reference GFLOP/s | speed-up |")
    print("|---|---|---|---|---|")
    ref_repeats = 2 if args.quick else 3
    for name, f, nref, ratio in (bench_conv(CONV_LAYERS, repeats, ref_repeats)
                                 + bench_conv_transpose(CONVT_LAYERS, repeats, ref_repeats)):
        print(f"| {name} | {f:.1f} | {100 * f / peak:.0f}% | {nref:.2f} | {ratio:.1f}x |")
    print("\n| kernel (whole sequence) | fastnn GFLOP/s | % of GEMM peak | NumPy reference GFLOP/s | speed-up |")
    print("|---|---|---|---|---|")
    for name, f, nref, ratio in (bench_lstm(LSTM_SHAPES, repeats, ref_repeats)
                                 + bench_attention(ATTENTION_SHAPES, repeats, ref_repeats)):
        print(f"| {name} | {f:.1f} | {100 * f / peak:.0f}% | {nref:.2f} | {ratio:.1f}x |")
    print("\n| memory-bound kernel (batch 64) | fastnn GB/s | NumPy reference GB/s | speed-up |")
    print("|---|---|---|---|")
    for name, f, nref, ratio in (bench_pool(POOL_LAYERS, repeats * 4, ref_repeats)
                                 + bench_batchnorm(BN_SHAPES, repeats * 4, ref_repeats)
                                 + bench_masked_softmax(ATTENTION_SHAPES, repeats * 4, ref_repeats)):
        print(f"| {name} | {f:.1f} | {nref:.2f} | {ratio:.1f}x |")
    if args.sweep_chunk:
        sweep_chunk(CONV_LAYERS, repeats)


if __name__ == "__main__":
    main()
