"""Which compiled route a kernel call took: a read-only trace for the tests that check that the
fuzz and AddressSanitizer shapes reach every route (tests/fuzz/test_fuzz_routes.py, tests/kernels/test_asan.py).

The dispatch code of ``_conv.pyx`` (the routes fastnn._core.conv_plan chooses), ``_blas.pyx``
and ``_recurrent.pyx`` names the route it takes (``took("...")``, one trace in ``_blas``) when a
trace is on, and does nothing else with it: the trace never changes a route. Off (the default) it costs one pointer comparison per call::

    with fastnn._core.routes.traced() as taken:
        layer.forward(x)
    taken  # Counter({'direct_s2_forward/per_sample': 1})
"""
import collections
import contextlib

# Every route the dispatch can name, with the lowest ISA level that has it (fastnn._core.isa:
# "avx2" routes run on the GEMM microkernel and the convolution kernels, AVX2 or AVX-512; "any"
# at every level) and what it runs.
ROUTES = {
    # _conv.pyx: conv2d / conv_transpose2d, chosen by conv_plan.py
    "s1_implicit": ("avx2", "stride-1 same-width forward, panels packed from x (fnn_mk_conv_s1)"),
    "s1_across_samples": ("avx2", "the same, panels running on across samples (fnn_mk_conv_s1x)"),
    "s1_widened": ("avx2", "a stride-1 forward wider than x, on a widened copy of x"),
    "direct_s2_forward/per_sample": ("avx2", "stride-2 forward, 32-channel tiles (fnn_d2_block)"),
    "direct_s2_forward/batch": ("avx2", "the same on one padded copy of a small batch"),
    "strided_gathered": ("avx2", "strided forward on gathered panels (fnn_mk_conv_sn)"),
    "winograd": ("avx2", "3x3 stride-1 float32 by Winograd F(2x2,3x3)"),
    "winograd/small": ("avx2", "the same F(2x2,3x3) for few channels, products in registers"),
    "winograd/f4": ("avx2", "the same by F(4x4,3x3): fewer multiplies, about 20x the error"),
    "winograd/small4": ("avx2", "winograd/f4's F(4x4,3x3) for few channels, products in "
                        "registers (the same bits)"),
    "winograd_s2": ("avx2", "4x4 stride-2 float32 by Winograd F(4x4,2x2) over the 4 phases"),
    "winograd_s2/3x3": ("avx2", "3x3 stride-2 float32 the same way (weight zero-padded to 4x4)"),
    "im2col_forward/f32": ("any", "im2col + the microkernel's GEMM (sgemm at the baseline level)"),
    "im2col_forward/f64": ("any", "im2col + dgemm"),
    "winograd_s2_dx": ("avx2", "4x4 stride-2 float32 dx (convT forward) by F(4x4,2x2) per phase"),
    "winograd_s2_dx/3x3": ("avx2", "3x3 stride-2 float32 dx (convT forward) the same way"),
    "subpixel": ("avx2", "strided backward-data pass by phases (conv2d dx, convT forward)"),
    "subpixel/beside_dw": ("avx2", "the same in one pool of tasks with the implicit dW"),
    "subpixel_phase/implicit": ("avx2", "a phase packed straight from dy (fnn_mk_subpixel)"),
    "subpixel_phase/im2col": ("avx2", "a phase through a stride-1 im2col + fnn_mk_sgemm_nn"),
    "subpixel_phase/no_taps": ("avx2", "a phase no kernel tap reaches (kernel < stride)"),
    "col2im/f32": ("any", "the microkernel's GEMM (sgemm at the baseline level) + col2im"),
    "col2im/f64": ("any", "dgemm + col2im"),
    "dwt_s1/rows": ("avx2", "stride-1 same-width dW, threads on rows (fnn_mk_conv_dwt_s1)"),
    "dwt_s1/samples": ("avx2", "the same, threads on samples (few im2col rows)"),
    "implicit_dw/panels": ("avx2", "dW on gathered panels, threads on panels (fnn_mk_conv_dw)"),
    "implicit_dw/pixels": ("avx2", "the same, threads on ranges of pixels (one or two panels)"),
    "direct_s2_dw": ("avx2", "stride-2 dW from a padded copy of x (fnn_dw2_rows)"),
    "winograd_dw": ("avx2", "3x3 stride-1 float32 dW by Winograd F(2x2,3x3), roles swapped"),
    "winograd_s2_dw": ("avx2", "4x4 stride-2 float32 dW by F(2x2,4x4) per phase, roles swapped"),
    "im2col_dw/nt": ("avx2", "im2col dW += G @ col.T on the microkernel"),
    "im2col_dw/tn": ("avx2", "im2col dW.T = col @ G.T on the microkernel"),
    "im2col_dw/blas": ("any", "im2col dW on BLAS (float64, or the baseline level)"),
    "pixel_transpose": ("any", "conv_transpose2d of a 1x1 image as one dense GEMM"),
    # _blas.pyx: gemm / dense
    "microkernel/nn": ("avx2", "C := A @ B on the microkernel (8x32 AVX-512 or 6x16 AVX2 tiles)"),
    "microkernel/nt": ("avx2", "C := A @ B.T (x @ W.T: B packed from W's rows)"),
    "microkernel/tn": ("avx2", "C := A.T @ B with A read in place"),
    "microkernel/tn_packed": ("avx2", "C := A.T @ B with A.T packed (dW of > 64 inputs)"),
    "microkernel/tt": ("avx2", "C := A.T @ B.T"),
    "blas_gemm": ("any", "sgemm/dgemm (float64, or a size under the microkernel's minimum)"),
    "attention/head_gemm": ("avx2", "float32 attention heads' products on head_gemm.h's small "
                                    "GEMM (per-thread scratch, op(A) in place)"),
    # _recurrent.pyx: whole sequences
    "recurrent/packed": ("avx2", "float32 recurrence on packed W_hh panels (fnn_rec_mm)"),
    "recurrent/blas": ("any", "recurrence on BLAS (float64, or the baseline level)"),
    "recurrent/row_blocks": ("any", "the batch's rows split over several threads"),
    "recurrent/table_input": ("any", "input rows read from a projected embedding table"),
    "recurrent/table_grads": ("any", "an LSTM's input-side dW from a table, in its region"),
    "recurrent/table_backward": ("any", "an LSTM's backward_table: the embedding's dW, no dx"),
    "embedded_projection": ("any", "an embedding table projected through W_ih"),
    "embedded_input_grads": ("any", "input-side dW from per-id sums of dpre"),
}


def available(route):
    """Whether the ISA level in use has ``route``."""
    from . import isa

    need = ROUTES[route][0]
    return need == "any" or isa.LEVELS.index(isa.LEVEL) >= isa.LEVELS.index(need)


def _modules():
    from . import _blas

    return (_blas,)


@contextlib.contextmanager
def traced():
    """Inside the block, every compiled dispatch adds the name of its route to the yielded
    Counter. Not reentrant across threads: one trace at a time, for tests."""
    taken = collections.Counter()
    olds = [m._set_route_trace(taken) for m in _modules()]
    try:
        yield taken
    finally:
        for m, old in zip(_modules(), olds):
            m._set_route_trace(old)
