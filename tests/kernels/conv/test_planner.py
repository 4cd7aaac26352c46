"""The convolution planner (fastnn._core.conv_plan) and the tuning knobs (fastnn._core.tuning):
the routes of representative geometries at each ISA level, the planner's choice is the route
the dispatch takes (the trace), every eligible route forced in turn matches the NumPy reference,
forcing refuses a route the geometry cannot run, and ``fastnn bench --routes`` on one model."""
import collections

import numpy as np
import pytest

import fastnn
from fastnn import _core, zoo
from fastnn._core import _conv, conv_plan, isa, reference, routes, tuning
from fastnn._core.tuning import tuning as tuned


def conv_shapes(name):
    """[(kind, x_shape, weight shape, stride, padding)] of the conv layers of zoo model ``name``
    at batch 64."""
    from benchmarks.convs import _layer_calls  # Sequential and graph models alike

    model, shape, _ = zoo.build(name)
    x = np.zeros((1,) + tuple(shape), np.float32)  # the shapes of one sample, then batch 64
    out = []
    for layer, a, _, _ in _layer_calls(model, x):
        kind = type(layer).__name__
        if kind in ("Conv2D", "ConvTranspose2D"):
            out.append((kind, (64,) + a.shape[1:], layer.weight.data.shape, layer.stride,
                        layer.padding))
    return out


# ---- the routes of representative geometries ----------------------------------------------------

def test_vgg_bn_stride_1_convolutions():
    for kind, x, w, s, p in conv_shapes("vgg-bn"):
        assert kind == "Conv2D" and s == (1, 1)
        plan = conv_plan.plan_conv2d(x, w, s, p, level="avx512", threads=2)
        # panels across samples where a sample's ragged last panel idles over 5% of the FMAs:
        # 14x14 (28 of 224 columns), not 28x28 (16 of 800)
        layout = "s1_across_samples" if x[2] == 14 else "s1_implicit"
        # Winograd where both channel counts are >= 16 (all but the first layer), forward and
        # dx (the flipped kernel's forward), and the weight gradient (winograd_dw)
        # (F(4x4,3x3) at the AVX-512 level from 32 channels each side: every such layer's
        # output is 12x12 or more; with at most 64 channels on winograd/small4)
        wino = x[1] >= 16 and w[0] >= 16
        assert plan.forward == ("winograd/small4" if wino else layout), (x, w, plan)
        assert plan.dx == ("winograd/small4" if wino else layout)
        # the weight gradient: winograd_dw where both channel counts are >= 16, else dwt_s1 with
        # its threads on samples (the batch gives each thread some), on rows of dW on one thread
        exact_dw = "dwt_s1/samples"
        assert plan.dw == ("winograd_dw" if wino else exact_dw), (x, w, plan)
        with tuned(conv_winograd_dw=False):
            assert conv_plan.plan_conv2d(x, w, s, p, level="avx512", threads=1).dw == "dwt_s1/rows"
        with tuned(conv_winograd=False, conv_winograd_dw=False):
            plan = conv_plan.plan_conv2d(x, w, s, p, level="avx512", threads=2)
            assert plan.forward == plan.dx == layout, (x, w, plan)
            assert plan.dw == exact_dw, (x, w, plan)
        # the AVX2 level plans as the AVX-512 one (winograd/small4 too), but for the first
        # layer's dx (1 channel: col2im there; a first layer's dx is never asked for)
        avx2 = conv_plan.plan_conv2d(x, w, s, p, level="avx2", threads=2)
        avx512 = conv_plan.plan_conv2d(x, w, s, p, level="avx512", threads=2)
        assert avx2 == (avx512 if x[1] >= 12 else avx512._replace(dx="col2im/f32")), (x, w)


def test_dcgan_d_stride_2_convolutions():
    (k1, x1, w1, s1, p1), (k2, x2, w2, s2, p2) = conv_shapes("dcgan-d")[:2]
    first = conv_plan.plan_conv2d(x1, w1, s1, p1, level="avx512", threads=2)
    # the direct kernel however shallow the GEMM (C*KH*KW = 16); the gathered panels need 32
    assert first.forward == "direct_s2_forward/per_sample"
    with tuned(conv_direct_s2=False):
        assert conv_plan.plan_conv2d(x1, w1, s1, p1, level="avx512",
                                     threads=2).forward == "im2col_forward/f32"
    assert first.dw == "direct_s2_dw"
    conv2 = conv_plan.plan_conv2d(x2, w2, s2, p2, level="avx512", threads=2)
    # test_winograd_s2.py, test_winograd_s2_dw.py
    assert conv2 == ("winograd_s2", "winograd_s2_dx", "winograd_s2_dw")
    with tuned(conv_winograd_s2=False, conv_winograd_s2_dx=False, conv_winograd_s2_dw=False):
        conv2 = conv_plan.plan_conv2d(x2, w2, s2, p2, level="avx512", threads=2)
        assert conv2 == ("direct_s2_forward/per_sample", "subpixel/beside_dw", "direct_s2_dw")
        assert conv_plan.plan_conv2d(x2, w2, s2, p2, level="avx512", threads=1).dx == "subpixel"
        assert conv_plan.plan_conv2d((2,) + x2[1:], w2, s2, p2, level="avx512",
                                     threads=2).forward == "direct_s2_forward/batch"
    avx2 = conv_plan.plan_conv2d(x2, w2, s2, p2, level="avx2", threads=2)
    assert avx2 == ("winograd_s2", "winograd_s2_dx", "winograd_s2_dw")
    with tuned(conv_winograd_s2_dw=False):
        avx2 = conv_plan.plan_conv2d(x2, w2, s2, p2, level="avx2", threads=2)
        assert avx2 == ("winograd_s2", "winograd_s2_dx", "direct_s2_dw")


def test_dcgan_g_transposed_convolutions():
    shapes = [s for s in conv_shapes("dcgan-g") if s[0] == "ConvTranspose2D"]
    plans = [conv_plan.plan_conv_transpose2d(x, w, s, p, level="avx512", threads=2)
             for _, x, w, s, p in shapes]
    assert plans[0] == ("pixel_transpose",) * 3  # the latent vector: a 1x1 input
    assert plans[1] == ("winograd_s2_dx", "winograd_s2", "winograd_s2_dw")
    with tuned(conv_winograd_s2=False, conv_winograd_s2_dx=False, conv_winograd_s2_dw=False):
        p1 = conv_plan.plan_conv_transpose2d(*shapes[1][1:], level="avx512", threads=2)
        assert p1 == ("subpixel", "direct_s2_forward/per_sample", "direct_s2_dw")
    assert plans[-1].forward == "col2im/f32"  # 64->1: a single output channel
    assert plans[-1].dx == "direct_s2_forward/per_sample"  # 64 channels of dx: the direct kernel


def test_resnet_convolutions():
    plans = {}
    for kind, x, w, s, p in conv_shapes("resnet"):
        for threads in (1, 2):
            plans[x[1:], w, s, threads] = conv_plan.plan_conv2d(x, w, s, p, level="avx512",
                                                                threads=threads)
    assert len(plans) == 2 * 8  # eight geometries (the blocks repeat)
    for (x, w, s, threads), plan in plans.items():
        if s == (1, 1):
            # 3x3 stride 1: Winograd from 16 channels, the weight gradient too: F(4x4,3x3) on
            # winograd/small's kernel (winograd/small4) on 12x12 outputs and more, winograd/small
            # for the others; the stem's dx (3 output channels) and dW (3 channels) on the exact
            # routes, dW by samples on 2 threads
            if x[0] >= 16:
                wino = "winograd/small4" if x[1] >= 12 else "winograd/small"
                assert plan == (wino, wino, "winograd_dw"), (x, w, plan)
                with tuned(conv_winograd_small=False):
                    assert conv_plan.plan_conv2d((64,) + x, w, s, 1, level="avx512",
                                                 threads=threads)[:2] == (
                        "winograd/f4" if x[1] >= 12 else "winograd",) * 2
            else:  # the stem (3 channels): winograd/small from 2 input channels
                assert plan == ("winograd/small", "s1_implicit",
                                "dwt_s1/samples" if threads == 2 else "dwt_s1/rows"), (x, w, plan)
        elif w[2] == 1:
            # the 1x1 stride-2 projections: a kernel smaller than the stride reads a quarter of
            # x: the forward on im2col (gathered panels from C >= 32), dx on col2im and dW on
            # im2col (im2col_dw/tn where O = 32 fills its panels)
            assert plan == ("strided_gathered" if w[1] >= 32 else "im2col_forward/f32",
                            "col2im/f32", "im2col_dw/tn" if w[0] == 32 else "im2col_dw/nt"), \
                (x, w, plan)
        elif s == (2, 2):
            # the 3x3 stride-2 convs as 4x4 ones by Winograd over the phases: the forward on
            # 8x8 outputs (32->64), the direct kernel on 16x16 (16->32); dx on both, but where
            # the sub-pixel dx shares its pool of tasks with the direct dW (2 threads, 32->64)
            assert plan.forward == ("winograd_s2/3x3" if x[0] == 32
                                    else "direct_s2_forward/per_sample"), (x, w, plan)
            beside = threads == 2 and x[0] == 32
            assert plan.dx == ("subpixel/beside_dw" if beside else "winograd_s2_dx/3x3"), \
                (x, w, plan)
            with tuned(conv_winograd_s2_3x3=False):
                old = conv_plan.plan_conv2d((64,) + x, w, s, 1, level="avx512", threads=threads)
            assert old.forward == "direct_s2_forward/per_sample" and old.dx.startswith("subpixel")
            # below 64 output channels the direct dW on one thread only
            assert plan.dw == ("direct_s2_dw" if w[0] >= 64 or threads == 1
                               else "im2col_dw/tn"), (x, w, plan)


def test_float64_and_the_lower_levels():
    x, w = (64, 32, 14, 14), (64, 32, 3, 3)
    assert conv_plan.plan_conv2d(x, w, 1, 1, "float64", level="avx512", threads=2) == (
        "im2col_forward/f64", "col2im/f64", "im2col_dw/blas")
    # the AVX2 level has the AVX-512 level's convolution kernels: the same routes (but the
    # Winograd tile, test_winograd_tile_by_level_and_geometry; and the stride-2 Winograd
    # kernels, AVX-512 only)
    with tuned(conv_winograd_s2=False, conv_winograd_s2_dx=False, conv_winograd_s2_dw=False,
               conv_winograd_tile=2):
        for xs, ws, s, p in ((x, w, 1, 1), (x, (32, 32, 3, 3), 1, 1),
                             ((64, 64, 14, 14), (128, 64, 4, 4), 2, 1)):
            assert conv_plan.plan_conv2d(xs, ws, s, p, level="avx2", threads=2) == \
                conv_plan.plan_conv2d(xs, ws, s, p, level="avx512", threads=2)
    with tuned(conv_winograd=False):
        assert conv_plan.plan_conv2d(x, w, 1, 1, level="avx2", threads=2).forward == \
            "s1_across_samples"
    # but a stride-1 dx with few channels stays on col2im there
    for xs, ws, p in (((64, 6, 14, 14), (16, 6, 5, 5), 0), ((64, 8, 14, 14), (32, 8, 3, 3), 1)):
        assert conv_plan.plan_conv2d(xs, ws, 1, p, level="avx2", threads=2).dx == "col2im/f32"
        assert conv_plan.plan_conv2d(xs, ws, 1, p, level="avx512", threads=2).dx.startswith("s1_")
    assert conv_plan.plan_conv2d(x, w, 1, 1, level="baseline", threads=2) == (
        "im2col_forward/f32", "col2im/f32", "im2col_dw/blas")
    assert conv_plan.plan_conv_transpose2d((8, 16, 1, 1), (16, 8, 4, 4), level="baseline",
                                           threads=1).forward == "pixel_transpose"


@pytest.mark.parametrize("kwargs, family, route", [
    (dict(in_channels=8, out_channels=8, kernel_size=3, padding=1), "dense", None),
    (dict(in_channels=8, out_channels=16, kernel_size=3, padding=1, groups=8), "general", "depthwise"),
    (dict(in_channels=8, out_channels=8, kernel_size=3, padding=1, groups=2), "general", "im2col"),
    (dict(in_channels=4, out_channels=8, kernel_size=3, padding=2, dilation=2), "general", "im2col"),
    (dict(in_channels=4, out_channels=8, kernel_size=4, padding="same"), "general", "im2col"),
    (dict(in_channels=4, out_channels=8, kernel_size=3, padding="same"), "dense", None),
])
def test_the_planner_sends_dilated_grouped_and_asymmetric_convolutions_to_conv_general(
        kwargs, family, route):
    layer = fastnn.layers.Conv2D(**kwargs)
    assert conv_plan.conv2d_family(layer.dilation, layer.groups, layer._pads) == family
    assert layer._dense == (family == "dense")
    if route is not None:
        assert conv_plan.plan_conv2d_general(layer.in_channels, layer.groups) == route
        assert _core.conv2d_route(layer.in_channels, layer.out_channels, layer.groups) == route
        assert route in conv_plan.GENERAL_ROUTES


def test_every_planned_name_is_a_route_available_at_its_level():
    for level in isa.LEVELS:
        for name in ("vgg-bn", "dcgan-d", "dcgan-g", "lenet5", "resnet"):
            for kind, x, w, s, p in conv_shapes(name):
                plan = (conv_plan.plan_conv2d(x, w, s, p, level=level, threads=2)
                        if kind == "Conv2D" else
                        conv_plan.plan_conv_transpose2d(x, w, s, p, level=level, threads=2))
                for route in plan:
                    need = routes.ROUTES[route][0]
                    assert need == "any" or isa.LEVELS.index(level) >= isa.LEVELS.index(need)


# ---- the dispatch takes the planned route -------------------------------------------------------

def _rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def test_the_trace_shows_the_planned_routes():
    rng = np.random.default_rng(0)
    x, w, b = _rand(rng, (8, 16, 10, 10)), _rand(rng, (32, 16, 4, 4)), _rand(rng, (32,))
    plan = conv_plan.plan_conv2d(x.shape, w.shape, 2, 1)
    y = np.empty((8, 32, 5, 5), np.float32)
    with routes.traced() as taken:
        _core.conv2d_forward(x, w, b, y, 2, 1)
    assert taken[plan.forward] == 1
    with routes.traced() as taken:
        _core.conv2d_backward(x, w, _rand(rng, y.shape), np.empty_like(x), np.zeros_like(w),
                              np.zeros_like(b), 2, 1)
    assert taken[plan.dx] == 1 and taken[plan.dw] == 1


@pytest.mark.skipif(not _conv._conv_kernels_available(), reason="a convolution kernels route")
def test_the_subpixel_phases_run_as_the_planner_chooses(monkeypatch):
    # dx at stride 3 of a 2x2 kernel: phase column 0 is wider than dy (im2col), column 1 as
    # wide (packed from dy), column 2 and row 2 reached by no tap
    rng = np.random.default_rng(4)
    x, w, dy = _rand(rng, (2, 16, 11, 10)), _rand(rng, (24, 16, 2, 2)), _rand(rng, (2, 24, 4, 3))
    phases = conv_plan.subpixel_phases(24, 4, 3, 2, 2, 3, 3, 0, 0, 11, 10)
    implicit, im2col = "subpixel_phase/implicit", "subpixel_phase/im2col"
    assert set(phases) == {implicit, im2col, "subpixel_phase/no_taps"}

    def run():
        dx = np.empty_like(x)
        with tuned(conv_dx="subpixel"), routes.traced() as taken:
            _core.conv2d_backward(x, w, dy, dx, None, None, 3, 0)
        return dx, {r: k for r, k in taken.items() if r.startswith("subpixel_phase/")}

    planned, taken = run()
    assert taken == collections.Counter(phases)
    # the pass runs what the planner names: its implicit phases renamed im2col run through
    # im2col, with the same bits
    choose = conv_plan.subpixel_phases
    monkeypatch.setattr(conv_plan, "subpixel_phases", lambda *a: tuple(
        im2col if v == implicit else v for v in choose(*a)))
    renamed, taken = run()
    assert implicit not in taken and taken[im2col] == phases.count(im2col) + phases.count(implicit)
    np.testing.assert_array_equal(renamed, planned)
    want = np.zeros(x.shape)
    reference.conv2d_backward(*(a.astype(np.float64) for a in (x, w, dy)), want, None, None, 3, 0)
    _close(planned, want)
    monkeypatch.undo()
    with tuned(conv_subpixel_implicit=False):
        assert implicit not in conv_plan.subpixel_phases(24, 4, 3, 2, 2, 3, 3, 0, 0, 11, 10)


# ---- every eligible route against the reference -------------------------------------------------

CONV_CASES = [  # (x shape, weight shape, stride, padding, dtype)
    ((4, 16, 10, 10), (32, 16, 3, 3), 1, 1, "float32"),   # s1 same width
    ((4, 16, 9, 9), (32, 16, 3, 3), 1, 0, "float32"),     # s1 valid: the widened dx
    ((4, 16, 10, 10), (32, 16, 4, 4), 2, 1, "float32"),   # s2: direct, gathered, sub-pixel
    ((3, 8, 11, 9), (24, 8, 3, 3), 3, 1, "float32"),      # s3
    ((4, 16, 10, 10), (32, 16, 3, 3), 1, 1, "float64"),
]
CONVT_CASES = [  # (x shape, weight shape, stride, padding, output padding, dtype)
    ((4, 16, 5, 5), (16, 32, 4, 4), 2, 1, 0, "float32"),
    ((3, 8, 4, 5), (8, 24, 3, 3), 2, 1, 1, "float32"),
    ((4, 8, 1, 1), (8, 16, 4, 4), 1, 0, 0, "float32"),     # pixel transpose
    ((4, 16, 5, 5), (16, 32, 4, 4), 2, 1, 0, "float64"),
]


def _close(got, want):
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


def _conv_passes(xs, ws, s, p, dtype, rng):
    x, w, b = _rand(rng, xs, dtype), _rand(rng, ws, dtype), _rand(rng, ws[:1], dtype)
    oh, ow = (xs[2] + 2 * p - ws[2]) // s + 1, (xs[3] + 2 * p - ws[3]) // s + 1
    dy = _rand(rng, (xs[0], ws[0], oh, ow), dtype)
    want_y = reference.conv2d_forward(*(a.astype(np.float64) for a in (x, w, b)),
                                      np.empty(dy.shape), s, p)
    want = [np.zeros(xs), np.zeros(ws), np.zeros(ws[0])]
    reference.conv2d_backward(*(a.astype(np.float64) for a in (x, w, dy)), *want, s, p)
    return {
        "forward": (lambda: _core.conv2d_forward(x, w, b, np.empty(dy.shape, dtype), s, p),
                    want_y),
        "dx": (lambda: _core.conv2d_backward(x, w, dy, np.empty_like(x), None, None, s, p),
               want[0]),
        "dw": (lambda: _weight_grads(_core.conv2d_backward, x, w, b, dy, s, p), want[1:]),
    }


def _weight_grads(backward, x, w, b, dy, s, p):
    dw, db = np.zeros_like(w), np.zeros_like(b)
    backward(x, w, dy, None, dw, db, s, p)
    return dw, db


def _convt_passes(xs, ws, s, p, op, dtype, rng):
    x, w, b = _rand(rng, xs, dtype), _rand(rng, ws, dtype), _rand(rng, ws[1:2], dtype)
    oh, ow = (xs[2] - 1) * s - 2 * p + ws[2] + op, (xs[3] - 1) * s - 2 * p + ws[3] + op
    dy = _rand(rng, (xs[0], ws[1], oh, ow), dtype)
    want_y = reference.conv_transpose2d_forward(*(a.astype(np.float64) for a in (x, w, b)),
                                                np.empty(dy.shape), s, p)
    want = [np.zeros(xs), np.zeros(ws), np.zeros(ws[1])]
    reference.conv_transpose2d_backward(*(a.astype(np.float64) for a in (x, w, dy)), *want, s, p)
    bwd = _core.conv_transpose2d_backward
    return {
        "forward": (lambda: _core.conv_transpose2d_forward(x, w, b, np.empty(dy.shape, dtype),
                                                           s, p), want_y),
        "dx": (lambda: bwd(x, w, dy, np.empty_like(x), None, None, s, p), want[0]),
        "dw": (lambda: _weight_grads(bwd, x, w, b, dy, s, p), want[1:]),
    }


def _cases():
    out = []
    for i, (xs, ws, s, p, dtype) in enumerate(CONV_CASES):
        for pass_ in ("forward", "dx", "dw"):
            out.append(("conv2d", i, pass_))
    for i, case in enumerate(CONVT_CASES):
        for pass_ in ("forward", "dx", "dw"):
            out.append(("conv_transpose2d", i, pass_))
    return out


@pytest.mark.parametrize("op, case, pass_", _cases())
def test_every_eligible_route_matches_the_reference(op, case, pass_):
    rng = np.random.default_rng(case)
    prev = fastnn.get_num_threads()
    fastnn.set_num_threads(2)
    try:
        if op == "conv2d":
            xs, ws, s, p, dtype = CONV_CASES[case]
            passes, op_args = _conv_passes(xs, ws, s, p, dtype, rng), ()
            knob = {"forward": "conv_forward", "dx": "conv_dx", "dw": "conv_dw"}[pass_]
        else:
            xs, ws, s, p, op_pad, dtype = CONVT_CASES[case]
            passes, op_args = _convt_passes(xs, ws, s, p, op_pad, dtype, rng), (op_pad,)
            knob = {"forward": "convt_forward", "dx": "convt_dx", "dw": "convt_dw"}[pass_]
        # dx alone (no dW requested): subpixel/beside_dw is covered by the dx+dW test below
        eligible = conv_plan.eligible(op, pass_, xs, ws, s, p, *op_args, dtype=dtype,
                                      need_dw=False)
        assert eligible
        call, want = passes[pass_]
        for route in eligible:
            with tuned(**{knob: route}), routes.traced() as taken:
                got = call()
            assert taken[route] >= 1, (route, taken)
            for g, w_ in zip(got if pass_ == "dw" else [got], want if pass_ == "dw" else [want]):
                _close(g, w_)
    finally:
        fastnn.set_num_threads(prev)


@pytest.mark.skipif(not _conv._conv_kernels_available(), reason="a convolution kernels route")
def test_subpixel_dx_beside_the_weight_gradient_matches_the_reference():
    rng = np.random.default_rng(9)
    xs, ws = (4, 16, 10, 10), (32, 16, 4, 4)
    x, w = _rand(rng, xs), _rand(rng, ws)
    dy = _rand(rng, (4, 32, 5, 5))
    want = [np.zeros(xs), np.zeros(ws), np.zeros(32)]
    reference.conv2d_backward(*(a.astype(np.float64) for a in (x, w, dy)), *want, 2, 1)
    prev = fastnn.get_num_threads()
    fastnn.set_num_threads(2)
    try:
        for dw_route in ("direct_s2_dw", "implicit_dw/panels"):
            got = [np.empty_like(x), np.zeros_like(w), np.zeros(32, np.float32)]
            with tuned(conv_dx="subpixel/beside_dw", conv_dw=dw_route), \
                    routes.traced() as taken:
                _core.conv2d_backward(x, w, dy, *got, 2, 1)
            assert taken["subpixel/beside_dw"] == 1 and taken[dw_route] == 1
            for g, w_ in zip(got, want):
                _close(g, w_)
    finally:
        fastnn.set_num_threads(prev)


# ---- tuning ------------------------------------------------------------------------------------

def test_forcing_a_route_the_geometry_cannot_run_is_refused():
    x, w = np.zeros((2, 3, 8, 8), np.float32), np.zeros((4, 3, 3, 3), np.float32)
    y = np.empty((2, 4, 8, 8), np.float32)
    with tuned(conv_forward="subpixel"):  # a backward-data route
        with pytest.raises(ValueError, match="not eligible"):
            _core.conv2d_forward(x, w, None, y, 1, 1)
    with pytest.raises(ValueError, match="not a route"):
        with tuned(conv_forward="no_such_route"):
            pass
    with tuned(conv_forward="im2col_forward/f32"), routes.traced() as taken:
        _core.conv2d_forward(x, w, None, y, 1, 1)
    assert taken == {"im2col_forward/f32": 1}


def test_tuning_restores_rejects_unknown_names_and_lists_its_knobs():
    before = tuning.get("conv_col_chunk_bytes")
    with pytest.raises(RuntimeError):
        with tuned(conv_col_chunk_bytes=12345, conv_subpixel=False, dense_microkernel=False):
            assert tuning.get("conv_col_chunk_bytes") == 12345
            assert tuning.get("conv_subpixel") is False
            raise RuntimeError("inside")
    assert tuning.get("conv_col_chunk_bytes") == before
    assert tuning.get("conv_subpixel") is True and tuning.get("dense_microkernel") is True
    with pytest.raises(ValueError, match="unknown knob.*conv_chunk_bytes"):
        with tuned(conv_chunk_bytes=1):
            pass
    knobs = tuning.knobs()
    assert {"conv_forward", "conv_dynamic_schedule", "gemm_tn_pack_a"} <= set(knobs)
    assert all(meaning for _, meaning in knobs.values())


# ---- fastnn bench --routes ---------------------------------------------------------------------

def test_bench_routes_on_one_model(capsys, monkeypatch):
    from benchmarks import __main__ as bench_main
    from benchmarks import routes as routes_bench

    rows = []
    run = routes_bench.run
    monkeypatch.setattr(routes_bench, "run", lambda *a, **k: rows.extend(run(*a, **k)) or rows)
    # the command line: fastnn bench --routes (benchmarks/__main__.py)
    assert bench_main.main(["--routes", "--models", "dcgan-d", "--repeats", "1"]) == 0
    printed = capsys.readouterr().out
    assert len(rows) == 5  # two convolutions: forward and dW each, dx of the second
    for r in rows:
        assert r["planner"] in r["ms"] and r["winner"] == min(r["ms"], key=r["ms"].get)
        line = next(l for l in printed.splitlines() if r["layer"] in l and f" {r['pass']} " in l)
        assert r["planner"] in line and all(route in line for route in r["ms"])


def test_winograd_tile_by_level_and_geometry():
    """F(4x4,3x3) where it measured clearly faster than F(2x2,3x3) (benchmarks/decisions.md):
    outputs of 12x12 and more at the AVX-512 level; 16x16 and more with 32 channels or more each
    side at the AVX2 level; winograd/small ahead of it where measured faster. The knob
    conv_winograd_tile forces either tile; exact routes stay exact."""
    def forward(n, c, s, o, level, threads=1):
        return conv_plan.plan_conv2d((n, c, s, s), (o, c, 3, 3), (1, 1), (1, 1), level=level,
                                     threads=threads).forward
    cases = [((64, 32, 28, 32), "winograd/f4", "winograd/f4"),
             ((64, 64, 14, 64), "winograd/f4", "winograd"),
             ((64, 16, 32, 16), "winograd/f4", "winograd"),
             ((64, 32, 16, 32), "winograd/f4", "winograd/f4"),
             ((64, 64, 8, 64), "winograd", "winograd"),
             ((8, 32, 11, 32), "winograd", "winograd")]
    with tuned(conv_winograd_small=False):
        for shape, avx512, avx2 in cases:
            for threads in (1, 2):
                assert forward(*shape, "avx512", threads) == avx512, shape
                assert forward(*shape, "avx2", threads) == avx2, shape
    # with winograd/small (up to 64 channels each side): F(4x4,3x3) ahead of it at the AVX-512
    # level from 32 channels each side, winograd/small at 16 channels and at the AVX2 level
    cases = [((64, 32, 28, 32), "winograd/f4", "winograd/small"),
             ((64, 64, 14, 64), "winograd/f4", "winograd/small"),
             ((64, 16, 32, 16), "winograd/small", "winograd/small"),
             ((64, 32, 16, 32), "winograd/f4", "winograd/small"),
             ((64, 64, 8, 64), "winograd/small", "winograd/small"),
             ((8, 32, 11, 32), "winograd/small", "winograd/small"),
             ((8, 128, 16, 128), "winograd/f4", "winograd/f4"),
             ((8, 128, 8, 128), "winograd", "winograd")]
    with tuned(conv_winograd_small4=False):
        for shape, avx512, avx2 in cases:
            for threads in (1, 2):
                assert forward(*shape, "avx512", threads) == avx512, shape
                assert forward(*shape, "avx2", threads) == avx2, shape
    # winograd/small4 (F(4x4,3x3) on winograd/small's kernel) ahead of both from 16 input
    # channels on outputs of 12x12 and more at the AVX-512 level, of 8x8 and more at AVX2
    small4 = {(64, 32, 28, 32), (64, 64, 14, 64), (64, 16, 32, 16), (64, 32, 16, 32),
              (64, 16, 12, 64)}
    small4_avx2 = small4 | {(64, 64, 8, 64), (8, 32, 11, 32), (64, 16, 8, 16), (32, 72, 16, 24),
                            (64, 128, 8, 128), (8, 128, 16, 128)}
    for shape, avx512, avx2 in cases + [((64, 8, 32, 16), "winograd/small", "winograd/small"),
                                        ((64, 16, 12, 64), None, None),
                                        ((64, 16, 8, 16), "winograd/small", None),
                                        ((64, 32, 7, 32), "winograd/small", "winograd/small"),
                                        ((32, 72, 16, 24), "winograd/f4", None),
                                        ((64, 128, 8, 128), "winograd", None),
                                        ((8, 256, 8, 256), "winograd", "winograd"),
                                        ((4, 128, 16, 96), "winograd/f4", "winograd/f4")]:
        for threads in (1, 2):
            assert forward(*shape, "avx512", threads) == (
                "winograd/small4" if shape in small4 else avx512), shape
            assert forward(*shape, "avx2", threads) == (
                "winograd/small4" if shape in small4_avx2 else avx2), shape
    for tile, route in ((2, "winograd"), (4, "winograd/f4")):
        with tuned(conv_winograd_tile=tile):
            for shape, _, _ in cases:
                assert forward(*shape, "avx512") == forward(*shape, "avx2") == route
    with tuned(conv_winograd_tile=4):  # float64 and the baseline level never take it
        assert conv_plan.plan_conv2d((8, 32, 28, 28), (32, 32, 3, 3), (1, 1), (1, 1),
                                     dtype="float64", level="avx512").forward != "winograd/f4"
        assert forward(8, 32, 28, 32, "baseline") == "im2col_forward/f32"
    with pytest.raises(ValueError, match="conv_winograd_tile"):
        with tuned(conv_winograd_tile=3):
            pass
