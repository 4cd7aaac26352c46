"""The ISA levels: fnn.config() names the level in use and the compiled ones, FASTNN_MAX_ISA caps
the level (and numba's CPU), the microkernel routes run at the AVX2 level, and the AVX2 GEMM
microkernel gives the AVX-512 one's bits (both sum each entry of C in the same order)."""
import importlib
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn as fnn
from fastnn._core import isa, routes
from fastnn._core.tuning import tuning

LEVELS = ("baseline", "avx2", "avx512")


def runnable(level):
    return level in isa.compiled_levels() and LEVELS.index(level) <= LEVELS.index(isa.cpu_level())


def _python(code, env, timeout):
    """``code`` in a fresh interpreter importing the fastnn this test imports (the installed copy
    in CI, the checkout when built in place), not the source tree of the working directory."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    env = dict(env, PYTHONPATH=os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=tempfile.gettempdir())


def child(code, **env):
    """Runs ``code`` in a fresh interpreter with ``env`` added; returns its stdout."""
    full = dict(os.environ, **env)
    full.pop("NUMBA_CPU_NAME", None) if "NUMBA_CPU_NAME" not in env else None
    run = _python(code, full, 300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip()


def test_config_names_the_level_in_use_and_the_compiled_ones():
    cfg = fnn.config()
    assert cfg["isa"] in cfg["isa_compiled"] and set(cfg["isa_compiled"]) <= set(LEVELS)
    assert LEVELS.index(cfg["isa"]) <= LEVELS.index(cfg["isa_cpu"])
    assert cfg["version"] == fnn.__version__
    assert cfg["threads"]["fastnn"] == fnn.get_num_threads()
    assert all("-march=native" not in a for a in cfg["build"].get("compile_args", []))
    from fastnn._core import _conv

    assert _conv.__name__ == f"fastnn._core._{cfg['isa']}._conv"


def test_show_config_prints_the_level():
    out = child("import fastnn; fastnn.show_config()")
    assert "isa: " in out and "isa_compiled: " in out and "blas:" in out


@pytest.mark.parametrize("level", LEVELS)
def test_max_isa_caps_the_level_and_numbas_cpu(level):
    if not runnable(level):
        pytest.skip(f"this CPU or build has no {level} level")
    out = child("import os, fastnn; from fastnn._core import _blas; "
                "print(fastnn.config()['isa'], _blas.__name__, os.environ.get('NUMBA_CPU_NAME'))",
                FASTNN_MAX_ISA=level)
    got, module, numba_cpu = out.split()
    assert got == level and module == f"fastnn._core._{level}._blas"
    below = LEVELS.index(level) < LEVELS.index(isa.cpu_level())
    assert numba_cpu == ({"baseline": "x86-64", "avx2": "haswell"}[level] if below else "None")


def test_an_unknown_max_isa_is_refused():
    run = _python("import fastnn", dict(os.environ, FASTNN_MAX_ISA="avx9"), 120)
    assert run.returncode != 0 and "FASTNN_MAX_ISA='avx9'" in run.stderr


def test_the_microkernel_routes_run_from_the_avx2_level_up():
    """dense forward, an im2col convolution's GEMMs and a recurrence take the microkernel at the
    avx2 and avx512 levels, BLAS at the baseline."""
    x = np.random.default_rng(0).standard_normal((64, 96)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((80, 96)).astype(np.float32)
    out = np.empty((64, 80), np.float32)
    from fastnn._core import _blas

    with routes.traced() as taken:
        _blas.dense_forward(x, w, None, out)
    if isa.LEVEL == "baseline":
        assert taken["blas_gemm"] == 1 and not routes.available("microkernel/nt")
    else:
        assert taken["microkernel/nt"] == 1 and routes.available("microkernel/nt")
    np.testing.assert_allclose(out, x @ w.T, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not (runnable("avx2") and runnable("avx512")),
                    reason="needs a CPU with AVX-512 (both levels on one machine)")
@settings(max_examples=40, deadline=None)
@given(m=st.integers(16, 70), n=st.integers(16, 90), k=st.integers(16, 600),
       ta=st.booleans(), tb=st.booleans(), seed=st.integers(0, 2**16))
def test_avx2_gemm_gives_the_avx512_bits(m, n, k, ta, tb, seed):
    """Both levels' modules side by side in one process: the AVX2 6x16 tiles and the AVX-512
    8x32 ones sum every entry in the same order (k ascending, C reloaded per 256-deep step);
    m, n, k from the microkernel's minimum (16) up, so both levels take it."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    outs = []
    for level in ("avx2", "avx512"):
        blas = importlib.import_module(f"fastnn._core._{level}._blas")
        out = np.full((m, n), 0.5, np.float32)
        blas.gemm(a, b, out, trans_a=ta, trans_b=tb, beta=1.0)
        outs.append(out)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b) + 0.5
    np.testing.assert_allclose(outs[0], want, rtol=1e-4, atol=1e-4 * np.sqrt(k))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_the_convolution_routes_run_from_the_avx2_level_up():
    """A 3x3 stride-1 convolution (vgg-bn's) takes the implicit stride-1 route and a 4x4
    stride-2 one (dcgan-d's) the direct stride-2 route at the avx2 and avx512 levels, im2col at
    the baseline; both match float64."""
    from fastnn._core import _conv

    rng = np.random.default_rng(2)
    for (c, h, o, k, s, fast) in ((8, 10, 16, 3, 1, ("s1_implicit", "s1_across_samples")),
                                  (8, 10, 32, 4, 2, ("direct_s2_forward/per_sample",
                                                     "direct_s2_forward/batch"))):
        x = rng.standard_normal((4, c, h, h)).astype(np.float32)
        w = rng.standard_normal((o, c, k, k)).astype(np.float32)
        oh = (h + 2 - k) // s + 1
        out = np.empty((4, o, oh, oh), np.float32)
        with tuning(conv_winograd=False), routes.traced() as taken:  # (the exact routes)
            _conv.conv2d_forward(x, w, None, out, s, 1)
        if isa.LEVEL == "baseline":
            assert taken["im2col_forward/f32"] == 1 and not any(routes.available(r) for r in fast)
        else:
            assert sum(taken[r] for r in fast) == 1 and all(routes.available(r) for r in fast)
        want = np.empty(out.shape, np.float64)
        _conv.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, want, s, 1)
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not (runnable("avx2") and runnable("avx512")) or isa.LEVEL != "avx512",
                    reason="needs a CPU with AVX-512 (both levels on one machine); runs once, in "
                           "the run at the avx512 level (it does not depend on the level in use)")
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), c=st.integers(1, 40), h=st.integers(3, 15), w=st.integers(3, 15),
       o=st.integers(1, 70), k=st.integers(1, 5), s=st.integers(1, 3), p=st.integers(0, 2),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_avx2_convolutions_give_the_avx512_bits(n, c, h, w, o, k, s, p, threads, seed):
    """Both levels' convolution kernels side by side in one process (forward, dx, dW, db, and a
    transposed forward): the AVX2 tiles sum every entry in the AVX-512 tiles' order, whichever
    route the geometry takes (stride 1 implicit, direct stride 2, gathered, sub-pixel, im2col).
    Both levels run the AVX2 level's plan (its stride-1 dx of few channels takes col2im)."""
    from fastnn._core import conv_plan
    from fastnn._core.tuning import tuning

    p = min(p, k - 1)
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    if oh < 1 or ow < 1:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, c, k, k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    dy = rng.standard_normal((n, o, oh, ow)).astype(np.float32)
    old = fnn.get_num_threads()
    fnn.set_num_threads(threads)
    try:
        plan = conv_plan.plan_conv2d(x.shape, wt.shape, s, p, level="avx2", threads=threads)
        out_pad = (h - ((oh - 1) * s - 2 * p + k), w - ((ow - 1) * s - 2 * p + k))
        plan_t = conv_plan.plan_conv_transpose2d(dy.shape, wt.shape, s, p, out_pad, level="avx2",
                                                 threads=threads)
        got = []
        for level in ("avx2", "avx512"):
            conv = importlib.import_module(f"fastnn._core._{level}._conv")
            force = tuning(conv_forward=plan.forward, conv_dx=plan.dx, conv_dw=plan.dw,
                           convt_forward=plan_t.forward)
            with force:
                out = np.empty((n, o, oh, ow), np.float32)
                conv.conv2d_forward(x, wt, b, out, s, p)
                dx, dw, db = np.empty_like(x), np.zeros_like(wt), np.zeros_like(b)
                conv.conv2d_backward(x, wt, dy, dx, dw, db, s, p)
                xt = np.empty_like(x)
                conv.conv_transpose2d_forward(dy, wt, b[:c] if c <= o else None, xt, s, p)
            got.append((out, dx, dw, db, xt))
    finally:
        fnn.set_num_threads(old)
    for a, b_ in zip(*got):
        np.testing.assert_array_equal(a, b_)
