"""Route-reaching fuzz: shapes that select each compiled route of fastnn/_core (_conv.pyx,
_blas.pyx, _recurrent.pyx), checked against the NumPy reference kernels (_core/reference.py).

test_fuzz.py's shapes (<= 3 channels, <= 6 features) stay on the small routes. Here each
hypothesis test targets one family of routes with the shapes its predicates select: 16..130
channels with ragged channel blocks, strides 1-3, kernels 1-7, odd planes, padding, batch 1-7
for Conv2D and ConvTranspose2D forward and backward; dense layers and GEMMs with sizes >= 16;
RNN/LSTM/GRU with hidden sizes 16..130, with and without an Embedding feeding them; float32 and
float64, 1 and 2 threads. Each case checks:

- results equal the float64 reference within a per-element float32 bound: for a sum (a
  convolution, a GEMM) |got - ref| <= SUM_TOL * eps * (the same sum over the terms' absolute
  values), so a wrong or missing term shows in small elements too, not just next to the largest;
  for the recurrent layers REC_TOL * eps * (|ref| + the absolute sum of the element's last GEMM
  or gate pre-activation), per element;
- a non-contiguous or read-only input (or dy) gives bit-identical results;
- a NaN or inf in x or dy reaches exactly the outputs the reference says it reaches (an output
  that meets it only through zero padding may or may not be NaN: a route may skip the padding
  instead of multiplying it);
- a wrong shape is a ValueError naming the layer (or gemm) and the shape.

Every call runs under ``fastnn._core.routes.traced()``: the child prints the routes each entry
point (``Conv2D.backward``, ...) took, and ``test_every_route_is_reached`` asserts that every route
of this build was taken where REQUIRED says. The cases run in a child process (a crash fails one
test instead of pytest, see test_fuzz.py); tests/kernels/test_asan.py runs them again against an
AddressSanitizer build.

    python tests/fuzz/test_fuzz_routes.py --examples 3     # by hand, from a checkout built in place
    FASTNN_HYPOTHESIS=thorough pytest tests/fuzz/test_fuzz_routes.py   # 10x the cases, random seeds
"""
import argparse
import ast
import collections
import copy
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
THOROUGH = os.environ.get("FASTNN_HYPOTHESIS") == "thorough"

EXAMPLES = 5            # quick profile: examples per target (TARGETS' weights multiply it)
TIMEOUT_S = 900

# where each route must be reached: entry point -> routes (every route of fastnn._core.routes
# is somewhere below; routes missing from a build, e.g. AVX-512 ones, are not asked for there)
REQUIRED = {
    "Conv2D.forward": {"winograd", "winograd/small", "winograd/f4", "winograd/small4",
                       "winograd_s2", "winograd_s2/3x3", "s1_implicit", "s1_across_samples",
                       "s1_widened", "direct_s2_forward/per_sample", "direct_s2_forward/batch",
                       "strided_gathered", "im2col_forward/f32", "im2col_forward/f64"},
    "Conv2D.backward": {"winograd", "winograd/small", "winograd/f4", "winograd/small4",
                        "winograd_s2_dx", "winograd_s2_dx/3x3", "s1_implicit",
                        "s1_across_samples", "s1_widened", "subpixel",
                        "subpixel/beside_dw", "subpixel_phase/implicit", "subpixel_phase/im2col",
                        "subpixel_phase/no_taps", "col2im/f32", "col2im/f64", "winograd_dw",
                        "dwt_s1/rows",
                        "dwt_s1/samples", "implicit_dw/panels", "implicit_dw/pixels",
                        "direct_s2_dw", "winograd_s2_dw", "im2col_dw/nt", "im2col_dw/tn",
                        "im2col_dw/blas"},
    "ConvTranspose2D.forward": {"winograd_s2_dx", "winograd_s2_dx/3x3", "subpixel",
                                "subpixel_phase/implicit", "col2im/f32", "col2im/f64",
                                "pixel_transpose"},
    "ConvTranspose2D.backward": {"direct_s2_forward/per_sample", "strided_gathered",
                                 "winograd_s2", "winograd_s2/3x3", "im2col_forward/f32",
                                 "im2col_forward/f64", "implicit_dw/panels", "direct_s2_dw",
                                 "winograd_s2_dw", "im2col_dw/nt",
                                 "im2col_dw/blas", "pixel_transpose"},
    "Dense.forward": {"microkernel/nt", "blas_gemm"},
    "Dense.backward": {"microkernel/nn", "microkernel/tn", "microkernel/tn_packed", "blas_gemm"},
    "gemm": {"microkernel/nn", "microkernel/nt", "microkernel/tn", "microkernel/tt",
             "blas_gemm"},
    "attention": {"attention/head_gemm"},
    "RNN.forward": {"recurrent/packed", "recurrent/blas", "recurrent/row_blocks",
                    "recurrent/table_input", "embedded_projection"},
    "RNN.backward": {"recurrent/packed", "recurrent/blas", "recurrent/row_blocks",
                     "embedded_input_grads"},
    "LSTM.forward": {"recurrent/packed", "recurrent/blas", "recurrent/row_blocks",
                     "recurrent/table_input", "embedded_projection"},
    "LSTM.backward": {"recurrent/packed", "recurrent/blas", "recurrent/row_blocks",
                      "recurrent/table_grads", "recurrent/table_backward"},
    "GRU.forward": {"recurrent/packed", "recurrent/blas", "recurrent/row_blocks",
                    "recurrent/table_input", "embedded_projection"},
    "GRU.backward": {"recurrent/packed", "recurrent/blas", "recurrent/row_blocks",
                     "embedded_input_grads"},
}


# =================================================================================================
# pytest side
# =================================================================================================
def child_args(examples, derandomize=True):
    """The arguments of a child run after ``python -X faulthandler`` (test_asan.py's too)."""
    return ([os.path.abspath(__file__), "--examples", str(examples)]
            + (["--derandomize"] if derandomize else []))


def parse_child(proc, what="route fuzz"):
    """(cases, {entry: Counter of routes}, max errors) of a finished child; fails on a bad exit."""
    tail = proc.stdout[-4000:] + "\n--- stderr ---\n" + proc.stderr[-8000:]
    assert proc.returncode == 0, (f"{what} exited with {proc.returncode} (negative: killed by "
                                  f"signal {-proc.returncode}):\n{tail}")
    cases = re.findall(r"^FUZZ routes cases=(\d+)$", proc.stdout, re.M)
    taken = re.findall(r"^ROUTES (.*)$", proc.stdout, re.M)
    errors = re.findall(r"^MAXERR (.*)$", proc.stdout, re.M)
    assert cases and taken, f"{what}: no case count or routes printed:\n{tail}"
    return int(cases[-1]), json.loads(taken[-1]), json.loads(errors[-1]) if errors else {}


def missing_routes(taken):
    """The (entry, route) pairs of REQUIRED that this build has but ``taken`` lacks."""
    from fastnn._core import routes

    return sorted((entry, route) for entry, wanted in REQUIRED.items() for route in wanted
                  if routes.available(route) and not taken.get(entry, {}).get(route))


def _fastnn_root():
    import fastnn

    return os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))


_RUN = {}


def _route_run():
    """One child run for the tests below (the default profile, or 10x the examples and random
    seeds with FASTNN_HYPOTHESIS=thorough)."""
    if "result" not in _RUN:
        path = _fastnn_root() + os.pathsep + os.environ.get("PYTHONPATH", "")
        scale = 10 if THOROUGH else 1
        try:
            proc = subprocess.run([sys.executable, "-X", "faulthandler"]
                                  + child_args(EXAMPLES * scale, not THOROUGH), cwd=REPO,
                                  env=dict(os.environ, PYTHONPATH=path), capture_output=True,
                                  text=True, timeout=TIMEOUT_S * scale)
        except subprocess.TimeoutExpired as e:
            proc = subprocess.CompletedProcess(e.cmd, -9, str(e.stdout or ""), f"timed out: {e}")
        _RUN["result"] = proc
    return _RUN["result"]


def test_route_fuzz_cases_match_the_reference():
    cases, _, errors = parse_child(_route_run())
    assert cases >= 40 * EXAMPLES, f"only {cases} cases ran"
    print(f"route fuzz: {cases} cases; largest errors (units of eps * sum): {errors}")


def test_every_route_is_reached():
    """Each route of this build is taken by at least one fuzz shape, at the entry points
    REQUIRED names (the trace is fastnn._core.routes')."""
    _, taken, _ = parse_child(_route_run())
    missing = missing_routes(taken)
    assert not missing, f"routes no fuzz shape reached: {missing}\ntaken: {taken}"


def _planner_names(text):
    """The route names conv_plan.py's rules can return: string constants in return statements,
    set displays, .add() and Plan()/_choose() calls, outside _k() and .startswith() calls and the
    general family's functions."""
    names = set()

    def visit(node, inside):
        if isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname in ("_k", "startswith"):
                return
            if fname == "_choose":  # _choose(knob, rule, eligible, what): the knob is no route
                for child in node.args[1:]:
                    visit(child, True)
                return
            inside = inside or fname in ("add", "Plan")
        if isinstance(node, ast.Compare):
            return
        if isinstance(node, (ast.Return, ast.Set)):
            inside = True
        if inside and isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    for node in ast.walk(ast.parse(text)):
        # the general family's functions return conv_general's routes (GENERAL_ROUTES), not _conv's
        if isinstance(node, ast.FunctionDef) and node.name not in ("conv2d_family",
                                                                   "plan_conv2d_general"):
            for stmt in node.body[1:] if ast.get_docstring(node) else node.body:
                visit(stmt, False)
    return names


def test_required_lists_every_route_the_dispatch_names():
    """routes.ROUTES is every name the .pyx dispatch code can record, and REQUIRED asks for
    each somewhere: a new route needs a name there and a fuzz shape here."""
    from fastnn._core import routes

    named = set()
    for module in ("_conv", "_blas", "_recurrent"):
        # a module's source: its .pyx and the .pxi units it includes (_conv_<route>.pxi)
        paths = [os.path.join(REPO, "fastnn", "_core", module + ".pyx")]
        paths += sorted(glob.glob(os.path.join(REPO, "fastnn", "_core", module + "_*.pxi")))
        text = ""
        for path in paths:
            with open(path) as f:
                text += f.read()
        for line in re.findall(r"^.*\btook\(.*$", text, re.M):
            named.update(re.findall(r'"([^"]+)"', line))
        if module == "_blas":  # the GEMM kernels' marks (_saw) and their names
            named.update(re.findall(r'"((?:microkernel/|blas_|attention/)[a-z_/]+)"', text))
    # the convolution routes the planner chooses (the entry points trace its names)
    with open(os.path.join(REPO, "fastnn", "_core", "conv_plan.py")) as f:
        named.update(_planner_names(f.read()))
    assert named == set(routes.ROUTES), (named ^ set(routes.ROUTES))
    required = set().union(*REQUIRED.values())
    assert required == set(routes.ROUTES), (required ^ set(routes.ROUTES))


# =================================================================================================
# child side (this file run as a script)
# =================================================================================================
SUM_TOL = 16        # sums: |got - ref| <= SUM_TOL * eps * sum of |terms| (+ tiny)
# recurrent layers: |got - ref| <= REC_TOL * eps * (|ref| + the absolute sum of the element's last
# GEMM, with each gate derivative at its unit's largest, or of its gate pre-activations); the
# gate math itself is within a few ulp (tests/kernels/elementwise/test_ulps.py)
REC_TOL = {np.float32: 256, np.float64: 256}
MAXERR = {}  # kind -> (the largest error / bound unit seen, where)
TAKEN = collections.defaultdict(collections.Counter)  # entry -> routes taken
TRACE = None  # the Counter of fastnn._core.routes.traced() while the child runs


def traced(entry, fn):
    """fn(), with the routes it took credited to ``entry``."""
    before = TRACE.copy()
    try:
        return fn()
    finally:
        TAKEN[entry].update(TRACE - before)


def _eps(dtype):
    return float(np.finfo(dtype).eps)


def compare(what, got, ref, unit, kind, lower=None, upper=None, factor=None):
    """got (the layer's dtype) against the float64 ref, element by element: |got - ref| <=
    factor * unit, ``unit`` the element's eps * (sum of |terms|) (SUM_TOL by default). Non-finite
    elements: got's must include ``lower`` and lie within ``upper`` (both default to ref's)."""
    got = np.asarray(got)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, reference {ref.shape}"
    nf_got, nf_ref = ~np.isfinite(got), ~np.isfinite(ref)
    lower = nf_ref if lower is None else lower
    upper = nf_ref if upper is None else upper
    lost, leaked = lower & ~nf_got, nf_got & ~upper
    for bad, text in ((lost, "finite where the reference is not"),
                      (leaked, "non-finite where the reference is finite")):
        assert not bad.any(), (f"{what}: {text}, at {np.argwhere(bad)[:5].tolist()}: "
                               f"{got[bad][:5]} vs {ref[bad][:5]}")
    fin = ~nf_got & ~nf_ref
    if not fin.any():
        return
    err = np.abs(got[fin].astype(np.float64) - ref[fin])
    u = np.maximum(unit[fin], np.finfo(np.float64).tiny)
    ratio = err / u
    if float(ratio.max()) > MAXERR.get(kind, (0.0,))[0]:
        MAXERR[kind] = (float(ratio.max()), what)
    factor = SUM_TOL if factor is None else factor
    if ratio.max() > factor:
        i = int(ratio.argmax())
        where = np.argwhere(fin)[i].tolist()
        over = int((ratio > factor).sum())
        raise AssertionError(f"{what}: element {where} is {got[fin][i]!r}, reference "
                             f"{ref[fin][i]!r}: error {err[i]:.3g} = {ratio[i]:.3g} x its unit "
                             f"{u[i]:.3g} (allowed {factor}); {over} of {ratio.size} over")


def _child_tests(examples):
    """[(test, max_examples)]: the hypothesis tests of the targets."""
    import fastnn as fnn
    from fastnn import _core, layers as L
    from fastnn._core import reference
    from fastnn._core.tuning import tuning
    from hypothesis import given, strategies as st

    from test_fuzz import REJECTED, CASES, clear_error_or_result, same

    tests = []

    def target(weight=1, **variants):
        """Registers a case function as one hypothesis test per combination of ``variants``
        (keyword -> values), each run for examples * weight examples: a route that needs a
        particular choice gets that choice every time rather than by chance."""
        import itertools

        def register(fn):
            names = sorted(variants)
            for values in itertools.product(*(variants[k] for k in names)):
                kw = dict(zip(names, values))
                counted = _counted(fn, kw)
                label = "".join(f"__{k}_{getattr(v, '__name__', v)}" for k, v in kw.items())
                counted.__name__ = counted.__qualname__ = fn.__name__ + label
                count = max(1, int(round(examples * weight)))
                tests.append((given(data=st.data())(counted), count))
            return fn
        return register

    def _counted(fn, kw):
        def counted(data):
            CASES["n"] += 1
            return fn(data, **kw)
        return counted

    NONFINITE = st.sampled_from([np.nan, np.inf, -np.inf])

    def pick(draw, lo, hi, label):
        return draw(st.integers(lo, hi), label=label)

    # channel counts: ragged against the 8-row tiles and 16/32-lane blocks, and whole ones
    def channels(draw, label, lo=16, hi=130):
        ragged = [c for c in (16, 17, 24, 31, 32, 33, 40, 47, 63, 64, 65, 96, 100, 127, 128, 130)
                  if lo <= c <= hi]
        return draw(st.one_of(st.sampled_from(ragged or [lo]), st.integers(lo, hi)), label=label)

    def rand(rng, shape, dtype):
        return rng.standard_normal(shape).astype(dtype)

    def mutated(a, mutation, name, rng, draw):
        """``a`` (the case's ``name``, "x" or "dy") as ``mutation`` hands it to the layer: a copy
        with one NaN/inf entry ("nonfinite_" + name), a non-contiguous view of the same values, a
        read-only copy; else ``a`` itself."""
        if mutation == "nonfinite_" + name:
            a = a.copy()
            a[tuple(int(rng.integers(0, s)) for s in a.shape)] = draw(NONFINITE, label="value")
        elif mutation == "noncontig":
            a = np.repeat(a, 2, axis=-1)[..., ::2]
            assert not a.flags.c_contiguous or a.size <= 1
        elif mutation == "readonly":
            a = a.copy()
            a.setflags(write=False)
        return a

    def set_threads(draw, fixed=None):
        t = fixed if fixed is not None else draw(st.sampled_from([1, 2, 3]), label="threads")
        fnn.set_num_threads(t)
        return t

    # ---- convolutions ---------------------------------------------------------------------------
    def conv_spec(draw, stride, kernel, padding, c, o, n, mac_budget, dtype=np.float32,
                  min_out_pixels=1, threads=None):
        """A Conv2D case whose multiply-adds stay under mac_budget (planes up to 24 outputs a
        side, odd sizes favoured)."""
        (sh, sw), (kh, kw), (ph, pw) = stride, kernel, padding
        pixels = max(min_out_pixels, mac_budget // max(1, n * c * o * kh * kw))
        oh = pick(draw, 1, max(1, min(24, pixels)), "oh")
        ow_max = max(1, min(24, pixels // oh))
        ow = pick(draw, min(ow_max, max(1, -(-min_out_pixels // oh))), ow_max, "ow")

        def size(out, k, s, p):
            v = (out - 1) * s + k - 2 * p + draw(st.integers(0, s - 1), label="unread")
            if v % 2 == 0 and draw(st.booleans(), label="odd"):
                v += 1
            return max(1, v, k - 2 * p)

        return dict(kind="conv", n=n, c=c, o=o, h=size(oh, kh, sh, ph), w=size(ow, kw, sw, pw),
                    kernel=kernel, stride=stride, padding=padding, dtype=dtype, threads=threads)

    def odd_kernel(draw, label):
        return draw(st.sampled_from([1, 3, 5, 7]), label=label)

    def out_size(size, k, s, p):
        return (size + 2 * p - k) // s + 1

    def padding(draw, kh, kw):
        return pick(draw, 0, kh - 1, "ph"), pick(draw, 0, kw - 1, "pw")

    def kernel_pair(draw, lo=1, hi=7):
        kh = pick(draw, lo, hi, "kh")
        kw = kh if draw(st.booleans(), label="square") else pick(draw, lo, hi, "kw")
        return kh, kw

    @target(1, whole_panels=[False, True])
    def conv_stride1_same_width(data, whole_panels):
        """s1_across_samples forward (a sample's last 32-column panel mostly empty) or
        s1_implicit (OH*W within 5% of whole panels); dx as a forward; dwt_s1 or implicit dW."""
        draw = data.draw
        kh, kw = odd_kernel(draw, "kh"), odd_kernel(draw, "kw")
        c, o, n = channels(draw, "c"), channels(draw, "o"), pick(draw, 1, 7, "n")
        spec = conv_spec(draw, (1, 1), (kh, kw), ((kh - 1) // 2, (kw - 1) // 2), c, o, n, 3_000_000)
        if whole_panels:  # planes of 32k pixels, or large odd ones (23x23: 15 of 544 columns idle)
            spec["h"], spec["w"] = draw(st.sampled_from([(4, 8), (8, 8), (2, 16), (8, 12), (21, 21),
                                                         (23, 23), (19, 27)]), label="plane")
            def macs():
                return n * c * o * kh * kw * spec["h"] * spec["w"]
            while macs() > 3_000_000 and max(c, o) > 16:
                c, o = (max(16, c // 2), o) if c >= o else (c, max(16, o // 2))
            spec.update(c=c, o=o, n=n if macs() <= 3_000_000 else 1)
        run_conv(draw, spec)

    @target(1)
    def conv_stride1_winograd(data):
        """winograd forward and dx, winograd_dw (3x3, stride 1, >= 16 channels each way and
        over 64 one way, padding 0..2, odd planes)."""
        draw = data.draw
        p = pick(draw, 0, 2, "p")
        spec = conv_spec(draw, (1, 1), (3, 3), (p, p), channels(draw, "c", 65, 80),
                         channels(draw, "o", 16, 70), pick(draw, 1, 5, "n"), 1_000_000)
        run_conv(draw, spec)

    @target(1)
    def conv_stride1_winograd_small(data):
        """winograd/small forward and dx (3x3, stride 1, 16..64 channels each way, padding
        0..2, odd planes)."""
        draw = data.draw
        p = pick(draw, 0, 2, "p")
        spec = conv_spec(draw, (1, 1), (3, 3), (p, p), channels(draw, "c", 16, 64),
                         channels(draw, "o", 16, 64), pick(draw, 1, 5, "n"), 1_000_000)
        run_conv(draw, spec)

    @target(1)
    def conv_stride1_winograd_small4(data):
        """winograd/small4 forward and dx at the AVX2 and AVX-512 levels: 3x3,
        stride 1, 16..20 channels each way, outputs of 12..17 a side, padding 0..2."""
        draw = data.draw
        p = pick(draw, 0, 2, "p")
        spec = conv_spec(draw, (1, 1), (3, 3), (p, p), channels(draw, "c", 16, 20),
                         channels(draw, "o", 16, 20), pick(draw, 1, 2, "n"), 2_000_000)
        spec["h"] = pick(draw, 12, 17, "oh") + 2 - 2 * p
        spec["w"] = pick(draw, 12, 17, "ow") + 2 - 2 * p
        run_conv(draw, spec)

    @target(1)
    def conv_stride1_winograd_f4(data):
        """winograd/f4 forward and dx: the same shapes with F(4x4,3x3) forced (the planner's
        F(4x4,3x3) planes are larger than the budget allows at the AVX2 level)."""
        draw = data.draw
        p = pick(draw, 0, 2, "p")
        spec = conv_spec(draw, (1, 1), (3, 3), (p, p), channels(draw, "c", 16, 70),
                         channels(draw, "o", 16, 70), pick(draw, 1, 5, "n"), 1_000_000)
        spec["tuning"] = dict(conv_winograd_tile=4)
        run_conv(draw, spec)

    @target(1, transposed=[False, True])
    def conv_stride2_winograd(data, transposed):
        """winograd_s2, winograd_s2_dx and winograd_s2_dw: 4x4 stride-2 float32 convolutions
        with >= 16 input and >= 32 output channels (Conv2D's forward, dx and dW;
        ConvTranspose2D's dx, a forward of dy, its forward, a dx, and its dW), padding 0..2."""
        draw = data.draw
        p = pick(draw, 0, 2, "p")
        if transposed:
            spec = convt_spec(draw, (2, 2), (4, 4), (p, p), channels(draw, "cin", 32, 70),
                              channels(draw, "cout", 16, 40), pick(draw, 1, 4, "n"), 1_000_000,
                              min_side=2)
        else:
            spec = conv_spec(draw, (2, 2), (4, 4), (p, p), channels(draw, "c", 16, 70),
                             channels(draw, "o", 32, 70), pick(draw, 1, 5, "n"), 1_000_000)
        run_conv(draw, spec)

    @target(1, transposed=[False, True])
    def conv_stride2_winograd_3x3(data, transposed):
        """winograd_s2/3x3 and winograd_s2_dx/3x3: 3x3 stride-2 float32 convolutions as 4x4 ones
        (>= 16 and >= 32 channels, C*O >= 1024, 7-8 outputs a side for the forward; odd and
        even images, padding 0..2; ConvTranspose2D 8x8 with output padding 0 or 1)."""
        draw = data.draw
        c = channels(draw, "c", 16, 40)
        o = max(channels(draw, "o", 32, 70), -(-1024 // c))
        n = pick(draw, 1, 2, "n")
        if transposed:  # Cin = o, Cout = c: 8x8 -> 15x15 or 16x16, both passes on the routes
            spec = convt_spec(draw, (2, 2), (3, 3), (1, 1), o, c, n, 0, size=(8, 8))
        else:
            p = pick(draw, 0, 2, "p")
            spec = conv_spec(draw, (2, 2), (3, 3), (p, p), c, o, n, 0)
            spec["h"], spec["w"] = (2 * pick(draw, 7, 8, "oh") + 1 - 2 * p + pick(draw, 0, 1, "odd_h"),
                                    2 * pick(draw, 7, 8, "ow") + 1 - 2 * p + pick(draw, 0, 1, "odd_w"))
        from fastnn._core import isa
        if isa.LEVEL == "avx2":  # the AVX2 planner keeps the forward on direct_s2_forward: forced
            spec["tuning"] = {"convt_dx" if transposed else "conv_forward": "winograd_s2/3x3"}
        run_conv(draw, spec)

    @target(1)
    def conv_stride1_full_padding(data):
        """s1_widened forward (padding K-1: an output wider than x)."""
        draw = data.draw
        kh, kw = kernel_pair(draw, 2, 7)
        spec = conv_spec(draw, (1, 1), (kh, kw), (kh - 1, kw - 1), channels(draw, "c"),
                         channels(draw, "o"), pick(draw, 1, 7, "n"), 1_000_000)
        run_conv(draw, spec)

    @target(1)
    def conv_stride1_narrower(data):
        """im2col forward (stride 1, output narrower than x); dx widened or im2col; dW implicit
        (O >= 64) or im2col."""
        draw = data.draw
        kh, kw = kernel_pair(draw, 2, 7)
        pw = draw(st.sampled_from([p for p in range(kw - 1) if 2 * p != kw - 1]), label="pw")
        ph = pick(draw, 0, kh - 2, "ph")
        spec = conv_spec(draw, (1, 1), (kh, kw), (ph, pw), channels(draw, "c"),
                         channels(draw, "o"), pick(draw, 1, 7, "n"), 1_000_000)
        run_conv(draw, spec)

    @target(1)
    def conv_im2col_dw_tn(data):
        """im2col_dw/tn (col @ G.T): the planner's at O = 32 at the AVX-512 level only, forced
        at the AVX2 level (where it takes im2col_dw/nt at every O)."""
        draw = data.draw
        kh, kw = kernel_pair(draw, 1, 5)
        stride = (pick(draw, 1, 2, "sh"), pick(draw, 1, 2, "sw"))
        spec = conv_spec(draw, stride, (kh, kw), padding(draw, kh, kw), channels(draw, "c"),
                         channels(draw, "o", 16, 40), pick(draw, 1, 5, "n"), 1_000_000)
        from fastnn._core import isa
        if isa.LEVEL == "avx2":
            spec["tuning"] = dict(conv_dw="im2col_dw/tn")
        run_conv(draw, spec)

    @target(2)
    def conv_stride2(data):
        """direct stride-2 forward (O >= 32) or gathered; direct stride-2 dW (O >= 64) or im2col
        dW; col2im dx (few pixels) or sub-pixel."""
        draw = data.draw
        kh, kw = kernel_pair(draw, 1, 7)
        c = channels(draw, "c", 1 if draw(st.booleans(), label="any_c") else 16, 130)
        spec = conv_spec(draw, (2, 2), (kh, kw), padding(draw, kh, kw),
                         c, channels(draw, "o"), pick(draw, 1, 7, "n"), 3_000_000)
        run_conv(draw, spec)

    @target(1)
    def conv_stride2_one_sample(data):
        """direct_s2_forward/batch: a batch too small for a padded sample per task."""
        draw = data.draw
        kh, kw = kernel_pair(draw, 2, 5)
        spec = conv_spec(draw, (2, 2), (kh, kw), padding(draw, kh, kw),
                         channels(draw, "c"), channels(draw, "o", 32, 130), 1, 3_000_000)
        run_conv(draw, spec)

    @target(2)
    def conv_other_strides(data):
        """strided_gathered forward (stride 3, or uneven strides); implicit dW on panels."""
        draw = data.draw
        stride = draw(st.sampled_from([(3, 3), (2, 3), (3, 2), (1, 2), (2, 1), (1, 3)]),
                      label="stride")
        kh, kw = kernel_pair(draw, 1, 7)
        spec = conv_spec(draw, stride, (kh, kw), padding(draw, kh, kw),
                         channels(draw, "c"), channels(draw, "o"), pick(draw, 1, 7, "n"), 3_000_000)
        run_conv(draw, spec)

    @target(1, beside=[False, True])
    def conv_subpixel_dx(data, beside):
        """Sub-pixel dx (C >= 16, N*OH*OW >= 512): phases from dy, through im2col, without taps
        (kernel below the stride: the planner keeps those on col2im, so the route is forced);
        with 2 threads and O >= 64 beside the implicit dW."""
        draw = data.draw
        stride = draw(st.sampled_from([(2, 2), (3, 3), (2, 3)]), label="stride")
        kh, kw = kernel_pair(draw, 1, 5)
        o = channels(draw, "o", 64, 72) if beside else channels(draw, "o", 16, 24)
        c = channels(draw, "c", 16, 24)
        if beside and c * kh * kw < 64:  # dW's panels must give each of 2 threads a group
            kh = kw = 3
        spec = conv_spec(draw, stride, (kh, kw), padding(draw, kh, kw),
                         c, o, pick(draw, 1, 7, "n"), 4_000_000, threads=2 if beside else None)
        if kh < stride[0] or kw < stride[1]:
            spec["tuning"] = dict(conv_subpixel_force=True)
        elif (kh, kw) == (3, 3):  # else 3x3 stride 2 takes winograd_s2_dx/3x3
            spec["tuning"] = dict(conv_winograd_s2_3x3=False)
        n = spec["n"]
        # at least 512 output pixels in the batch: grow the plane
        (sh, sw), (ph, pw) = stride, spec["padding"]
        while n * out_size(spec["h"], kh, sh, ph) * out_size(spec["w"], kw, sw, pw) < 512:
            spec["h"] += sh
            spec["w"] += sw
        run_conv(draw, spec)

    @target(1, same_width=[True, False])
    def conv_weight_gradient_few_columns(data, same_width):
        """Weight gradients with few im2col rows on 2 threads: dwt_s1/samples (stride 1, same
        width) and implicit_dw/pixels (another stride, O >= 64, one panel; the kernel as large
        as the stride, which the implicit routes need)."""
        draw = data.draw
        o = channels(draw, "o", 64, 130)
        n = pick(draw, 2, 7, "n")
        others = st.sampled_from([(1, 2), (2, 1)])
        stride = (1, 1) if same_width else draw(others, label="stride")
        c = channels(draw, "c", 16, 31) if same_width else channels(draw, "c", 8, 16)
        spec = conv_spec(draw, stride, stride, (0, 0), c, o, n, 1_500_000,
                         min_out_pixels=max(1, 262144 // (n * o * c) + 1), threads=2)
        run_conv(draw, spec)

    @target(1)
    def conv_float64(data):
        """float64: im2col + dgemm forward, col2im dx, dgemm dW, at any stride."""
        draw = data.draw
        stride = (pick(draw, 1, 3, "sh"), pick(draw, 1, 3, "sw"))
        kh, kw = kernel_pair(draw, 1, 7)
        spec = conv_spec(draw, stride, (kh, kw), padding(draw, kh, kw),
                         channels(draw, "c"), channels(draw, "o"), pick(draw, 1, 7, "n"), 800_000,
                         dtype=np.float64)
        run_conv(draw, spec)

    @target(1)
    def conv_small_channels(data):
        """Channel counts under the routes' minimums (1..15): the im2col fallbacks beside them."""
        draw = data.draw
        stride = (pick(draw, 1, 3, "sh"), pick(draw, 1, 3, "sw"))
        kh, kw = kernel_pair(draw, 1, 7)
        spec = conv_spec(draw, stride, (kh, kw), padding(draw, kh, kw),
                         channels(draw, "c", 1, 15), channels(draw, "o", 1, 40),
                         pick(draw, 1, 7, "n"),
                         800_000)
        run_conv(draw, spec)

    # transposed convolutions: x (N, Cin, H, W) -> (N, Cout, (H-1)*s - 2p + k + op)
    def convt_spec(draw, stride, kernel, padding, cin, cout, n, mac_budget, dtype=np.float32,
                   min_pixels=1, threads=None, size=None, min_side=1):
        (sh, sw), (kh, kw), (ph, pw) = stride, kernel, padding
        op = (pick(draw, 0, sh - 1, "oph"), pick(draw, 0, sw - 1, "opw"))
        pixels = max(min_pixels, min_side ** 2, mac_budget // max(1, n * cin * cout * kh * kw))
        if size is None:
            h = pick(draw, min_side, max(min_side, min(20, pixels // min_side)), "h")
            w_max = max(min_side, min(20, pixels // h))
            w = pick(draw, min(w_max, max(min_side, -(-min_pixels // h))), w_max, "w")
        else:
            h, w = size
        # the output must not be cropped away entirely
        while (h - 1) * sh - 2 * ph + kh + op[0] < 1:
            h += 1
        while (w - 1) * sw - 2 * pw + kw + op[1] < 1:
            w += 1
        return dict(kind="convt", n=n, c=cin, o=cout, h=h, w=w, kernel=kernel, stride=stride,
                    padding=padding, output_padding=op, dtype=dtype, threads=threads)

    @target(1, wide_input=[False, True], stride2=[False, True])
    def convt_strided(data, wide_input, stride2):
        """ConvTranspose2D at strides 2-3: sub-pixel or col2im forward; dx on the direct
        stride-2 (Cin >= 32) or gathered route; dW implicit (Cin >= 64: direct at stride 2,
        on panels otherwise) or im2col."""
        draw = data.draw
        others = st.sampled_from([(3, 3), (2, 3), (3, 1)])
        stride = (2, 2) if stride2 else draw(others, label="stride")
        kh, kw = kernel_pair(draw, 1, 7)
        cin = channels(draw, "cin", 64, 130) if wide_input else channels(draw, "cin")
        spec = convt_spec(draw, stride, (kh, kw), padding(draw, kh, kw),
                          cin, channels(draw, "cout"), pick(draw, 1, 7, "n"), 3_000_000, min_side=2)
        run_conv(draw, spec)

    @target(1)
    def convt_subpixel(data):
        """ConvTranspose2D forward by phases: Cout >= 16 and N*H*W >= 512."""
        draw = data.draw
        stride = draw(st.sampled_from([(2, 2), (3, 3), (2, 3)]), label="stride")
        kh, kw = kernel_pair(draw, 2, 5)
        n = pick(draw, 1, 7, "n")
        spec = convt_spec(draw, stride, (kh, kw), padding(draw, kh, kw),
                          channels(draw, "cin", 16, 40), channels(draw, "cout", 16, 24), n,
                          4_000_000, min_pixels=-(-512 // n))
        while spec["n"] * spec["h"] * spec["w"] < 512:
            spec["h"] += 1
        run_conv(draw, spec)

    @target(1, pixel=[False, True], dtype=[np.float32, np.float64])
    def convt_stride1_and_pixel(data, pixel, dtype):
        """ConvTranspose2D at stride 1 (col2im forward, im2col dx and dW) and of 1x1 images with
        no padding (one dense GEMM each way)."""
        draw = data.draw
        kh, kw = kernel_pair(draw, 1, 7)
        if pixel:
            stride = (pick(draw, 1, 3, "sh"), pick(draw, 1, 3, "sw"))
            spec = convt_spec(draw, stride, (kh, kw), (0, 0),
                              channels(draw, "cin"), channels(draw, "cout"), pick(draw, 1, 7, "n"),
                              10 ** 9, dtype=dtype, size=(1, 1))
            spec["output_padding"] = (0, 0)
        else:
            spec = convt_spec(draw, (1, 1), (kh, kw), padding(draw, kh, kw),
                              channels(draw, "cin"), channels(draw, "cout"), pick(draw, 1, 7, "n"),
                              2_000_000, dtype=dtype, min_side=2)
        run_conv(draw, spec)

    def conv_reference(spec, x, weight, bias, dy, relu):
        """(y, dx, dW, db) of the float64 reference kernels (None where not asked)."""
        if spec["kind"] == "convt":
            ref_fwd = reference.conv_transpose2d_forward
            ref_bwd = reference.conv_transpose2d_backward
        else:
            ref_fwd, ref_bwd = reference.conv2d_forward, reference.conv2d_backward
        f64 = [None if a is None else np.asarray(a, np.float64) for a in (x, weight, bias, dy)]
        x, weight, bias, dy = f64
        out = None
        if dy is None:
            out = np.empty(spec["y_shape"])
            ref_fwd(x, weight, bias, out, spec["stride"], spec["padding"])
            if relu is not None:
                out = np.where(out > 0, out, out * relu)
            return out, None, None, None
        dx, dw = np.empty(x.shape), np.zeros(weight.shape)
        db = np.zeros(weight.shape[1] if spec["kind"] == "convt" else weight.shape[0])
        ref_bwd(x, weight, dy, dx, dw, db, spec["stride"], spec["padding"])
        return None, dx, dw, db

    def winograd_dw_unit(x, dy, padding):
        """eps-free bound unit of winograd_dw's dW (O, C, 3, 3): its taps come from 4x4 sums over
        the 2x2 tiles of dy (F(2x2,3x3), roles swapped), each tap a combination of 16 sums that
        also hold the patch's other values, so the unit is the transforms taken in absolute
        values: |G'^T| (sum_tiles |A'| |g| |A'^T| * |B^T| |d| |B|) |G'|, not a tap's own terms."""
        ph, pw = padding
        n, c, h, w = x.shape
        o, oh, ow = dy.shape[1:]
        th, tw = (oh + 1) // 2, (ow + 1) // 2
        xp = np.zeros((n, c, 2 * th + 2, 2 * tw + 2))
        xp[:, :, ph:ph + h, pw:pw + w] = np.abs(x)
        gp = np.zeros((n, o, 2 * th, 2 * tw))
        gp[:, :, :oh, :ow] = np.abs(dy)
        bt = np.abs(np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1.]]))
        a = np.array([[1, 0], [1, 1], [1, 1], [0, 1.]])
        gt = np.array([[1, .5, .5, 0], [0, .5, .5, 0], [0, .5, .5, 1]])
        d = np.stack([np.stack([xp[:, :, i:i + 2 * th:2, j:j + 2 * tw:2] for j in range(4)], -1)
                      for i in range(4)], -2)  # (n, c, th, tw, 4, 4)
        g = gp.reshape(n, o, th, 2, tw, 2).transpose(0, 1, 2, 4, 3, 5)
        v = np.einsum("ik,nctwkl,jl->nctwij", bt, d, bt)
        u = np.einsum("ik,notwkl,jl->notwij", a, g, a)
        m = np.einsum("nctwij,notwij->ocij", v, u)
        return np.einsum("ki,ocij,lj->ockl", gt, m, gt)

    def winograd_f4_unit(x, w, padding):
        """eps-free bound unit of winograd/f4's output (N, O, OH, OW) of x (N, C, H, W) and w
        (O, C, 3, 3): its 4x4 tiles come from 36 sums over C of transformed values scaled by up
        to 5 (input) and 8 (output), so the error is bounded by the same formula over absolute
        values, |A^T| (sum_c |U| * |B^T| |d| |B|) |A|, not an output's own terms."""
        n, c, h, wd = x.shape
        ph, pw = padding
        oh, ow = h + 2 * ph - 2, wd + 2 * pw - 2
        th, tw = (oh + 3) // 4, (ow + 3) // 4
        xp = np.zeros((n, c, 4 * th + 2, 4 * tw + 2))
        xp[:, :, ph:ph + h, pw:pw + wd] = np.abs(x)
        bt = np.abs(np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                              [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1.]]))
        g = np.abs(np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                             [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1.]]))
        at = np.abs(np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                              [0, 1, -1, 8, -8, 1.]]))
        d = np.stack([np.stack([xp[:, :, i:i + 4 * th:4, j:j + 4 * tw:4] for j in range(6)], -1)
                      for i in range(6)], -2)  # (n, c, th, tw, 6, 6)
        v = np.einsum("ik,nctwkl,jl->nctwij", bt, d, bt)
        u = np.einsum("ik,ockl,jl->ocij", g, np.abs(w).astype(np.float64), g)
        m = np.einsum("nctwij,ocij->notwij", v, u)
        y = np.einsum("ki,notwij,lj->notkwl", at, m, at).reshape(n, -1, 4 * th, 4 * tw)
        return y[:, :, :oh, :ow]

    WS2_AT = np.array([[1, 1, 1, 1, 0], [0, 1, 1, 2, 0], [0, 1, 1, 4, 0], [0, 1, 1, 8, 1.]])
    WS2_G = np.array([[.5, 0], [.5, .5], [1 / 6, 1 / 6], [1 / 6, 1 / 3], [0, 1.]])
    WS2_BT = np.array([[2, 1, 2, 1, 0], [0, 2, 1, 1, 0], [0, 2, 3, 1, 0], [0, 1, 0, 1, 0],
                       [0, 2, 1, 2, 1.]])  # |A^T|, |G|, |B^T| of F(4x4,2x2) (winograd_s2.h)

    def winograd_s2_unit(x, w, padding, oh, ow):
        """eps-free bound unit of winograd_s2's forward (x (n, c, h, w), w (o, c, 4, 4)): each
        output comes from the 5x5 transforms of the four phases' patches, so the unit is the
        transforms in absolute values, |A^T| (sum over phases and channels of
        |G| |g_p| |G^T| * |B^T| |d_p| |B|) |A|, not the output's own terms."""
        ph, pw = padding
        n, c, h, wd = x.shape
        th, tw = -(-oh // 4), -(-ow // 4)
        xp = np.zeros((n, c, 8 * th + 4, 8 * tw + 4))
        hh, ww = min(h, xp.shape[2] - ph), min(wd, xp.shape[3] - pw)
        xp[:, :, ph:ph + hh, pw:pw + ww] = np.abs(x[:, :, :hh, :ww])
        m = 0
        for a in (0, 1):
            for b in (0, 1):
                xa = xp[:, :, a::2, b::2]
                d = np.stack([np.stack([xa[:, :, i:i + 4 * th:4, j:j + 4 * tw:4]
                                        for j in range(5)], -1) for i in range(5)], -2)
                v = np.einsum("ik,nctwkl,jl->nctwij", WS2_BT, d, WS2_BT)
                u = np.einsum("ik,ockl,jl->ocij", WS2_G, np.abs(w[:, :, a::2, b::2]), WS2_G)
                m = m + np.einsum("nctwij,ocij->notwij", v, u)
        y = np.einsum("ik,notwkl,jl->notwij", WS2_AT, m, WS2_AT)
        return y.transpose(0, 1, 2, 4, 3, 5).reshape(n, w.shape[0], 4 * th, 4 * tw)[:, :, :oh, :ow]

    def winograd_s2_dx_unit(dy, w, padding, h, wd):
        """The same for winograd_s2_dx (dx (n, c, h, wd) from dy (n, o, oh, ow)): per output
        phase, dy's 5x5 patches (padded by one before) with the flipped kernel phase."""
        (rh, mh), (rw, mw) = (padding[0] % 2, padding[0] // 2), (padding[1] % 2, padding[1] // 2)
        n, o, oh, ow = dy.shape
        th, tw = -(-((h + rh + 1) // 2) // 4), -(-((wd + rw + 1) // 2) // 4)
        # patch row r of tile ty: dy row 4ty - 1 + mh + r (the phase rows from ph // 2 on)
        rows, cols = np.arange(4 * th + 1) - 1 + mh, np.arange(4 * tw + 1) - 1 + mw
        rin, cin = (rows >= 0) & (rows < oh), (cols >= 0) & (cols < ow)
        gp = np.zeros((n, o, 4 * th + 1, 4 * tw + 1))
        gp[np.ix_(range(n), range(o), rin, cin)] = np.abs(dy[np.ix_(range(n), range(o),
                                                                  rows[rin], cols[cin])])
        d = np.stack([np.stack([gp[:, :, i:i + 4 * th:4, j:j + 4 * tw:4] for j in range(5)], -1)
                      for i in range(5)], -2)
        v = np.einsum("ik,notwkl,jl->notwij", WS2_BT, d, WS2_BT)
        out = np.zeros((n, w.shape[1], 8 * th, 8 * tw))
        for a in (0, 1):
            for b in (0, 1):
                g = np.abs(w[:, :, a::2, b::2])[:, :, ::-1, ::-1]
                u = np.einsum("ik,ockl,jl->ocij", WS2_G, g, WS2_G)
                m = np.einsum("notwij,ocij->nctwij", v, u)
                y = np.einsum("ik,nctwkl,jl->nctwij", WS2_AT, m, WS2_AT)
                out[:, :, a::2, b::2] = y.transpose(0, 1, 2, 4, 3, 5).reshape(
                    n, w.shape[1], 4 * th, 4 * tw)
        return out[:, :, rh:rh + h, rw:rw + wd]

    def as_4x4(w, padding):
        """The 4x4 weight and padding winograd_s2(_dx)/3x3 run for a 3x3 one (_ws2_as_4x4)."""
        if w.shape[2] == 4:
            return w, padding
        rh, rw = padding[0] % 2, padding[1] % 2
        w4 = np.zeros(w.shape[:2] + (4, 4), w.dtype)
        w4[:, :, rh:rh + 3, rw:rw + 3] = w
        return w4, (padding[0] + rh, padding[1] + rw)

    WS2_A = np.array([[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 2, 4, 8],
                      [0, 0, 0, 1.]])  # |A| (winograd_s2_dw.h: A^T of F(4x4,2x2), transposed)

    def winograd_s2_dw_unit(x, dy, padding):
        """eps-free bound unit of winograd_s2_dw's dW (O, C, 4, 4) of x (n, c, h, w) -> dy (n,
        o, oh, ow): per phase, sums over dy's 4x4 tiles of the transformed tile times the
        transformed 5x5 patch (F(2x2,4x4), roles swapped), so the unit is the transforms in
        absolute values, |G^T| (sum_tiles |A| |g| |A^T| * |B^T| |d_p| |B|) |G|."""
        ph, pw = padding
        n, c, h, wd = x.shape
        o, oh, ow = dy.shape[1:]
        th, tw = -(-oh // 4), -(-ow // 4)
        xp = np.zeros((n, c, 8 * th + 2, 8 * tw + 2))
        hh, ww = min(h, xp.shape[2] - ph), min(wd, xp.shape[3] - pw)
        xp[:, :, ph:ph + hh, pw:pw + ww] = np.abs(x[:, :, :hh, :ww])
        gp = np.zeros((n, o, 4 * th, 4 * tw))
        gp[:, :, :oh, :ow] = np.abs(dy)
        g = gp.reshape(n, o, th, 4, tw, 4).transpose(0, 1, 2, 4, 3, 5)
        u = np.einsum("ik,notwkl,jl->notwij", WS2_A, g, WS2_A)
        out = np.zeros((o, c, 4, 4))
        for a in (0, 1):
            for b in (0, 1):
                xa = xp[:, :, a::2, b::2]
                d = np.stack([np.stack([xa[:, :, i:i + 4 * th:4, j:j + 4 * tw:4]
                                        for j in range(5)], -1) for i in range(5)], -2)
                v = np.einsum("ik,nctwkl,jl->nctwij", WS2_BT, d, WS2_BT)
                m = np.einsum("nctwij,notwij->ocij", v, u)
                out[:, :, a::2, b::2] = np.einsum("iu,ocij,jv->ocuv", WS2_G, m, WS2_G)
        return out

    def run_conv(draw, spec):
        with tuning(**spec.get("tuning", {})):
            return _run_conv(draw, spec)

    def _run_conv(draw, spec):
        dtype = spec["dtype"]
        set_threads(draw, spec["threads"])
        fnn.seed(draw(st.integers(0, 2**31 - 1), label="seed"))
        transposed = spec["kind"] == "convt"
        cls = L.ConvTranspose2D if transposed else L.Conv2D
        kw_ = dict(stride=spec["stride"], padding=spec["padding"],
                   bias=draw(st.booleans(), label="bias"))
        if transposed:
            kw_["output_padding"] = spec["output_padding"]
        layer = cls(spec["c"], spec["o"], spec["kernel"], **kw_).astype(dtype)
        name = cls.__name__
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="values"))
        x = rand(rng, (spec["n"], spec["c"], spec["h"], spec["w"]), dtype)
        mutation = draw(st.sampled_from(["valid", "valid", "valid", "noncontig", "readonly",
                                         "nonfinite_x", "nonfinite_dy", "bad_x", "bad_dy"]),
                        label="mutation")
        relu = None
        if (not transposed and mutation in ("valid", "noncontig", "readonly")
                and draw(st.booleans(), label="act")):  # forward_relu, as Sequential fuses
            relu = draw(st.sampled_from([0.0, 0.1]), label="slope")
        eps = _eps(dtype)
        spec["y_shape"] = layer.output_shape(x.shape)
        weight, bias = layer.weight.data, None if layer.bias is None else layer.bias.data

        def forward(xin):
            if relu is None:
                return traced(f"{name}.forward", lambda: layer.forward(xin))
            return traced(f"{name}.forward", lambda: layer.forward_relu(
                xin, negative_slope=None if relu == 0.0 else relu))

        if mutation == "bad_x":  # another channel count, or a 3-D image
            shape = list(x.shape)
            shape[1] += draw(st.sampled_from([1, 3]), label="extra")
            bad = rand(rng, shape, dtype) if draw(st.booleans(), label="rank_ok") else x[0]
            assert clear_error_or_result((name,), lambda: layer.forward(bad), bad.shape) is REJECTED
            return
        lower = upper = None
        xin = mutated(x, mutation, "x", rng, draw)
        before = TRACE.copy()
        y = forward(xin)
        forward_routes = TRACE - before
        assert y.shape == spec["y_shape"] and y.dtype == dtype
        ref_y, *_ = conv_reference(spec, xin, weight, bias, None, relu)
        clean_x = np.where(np.isfinite(xin), xin, 0)
        unit_y, *_ = conv_reference(spec, np.abs(clean_x), np.abs(weight),
                                    None if bias is None else np.abs(bias), None, None)
        if forward_routes["winograd/f4"]:
            unit_y = np.maximum(unit_y, winograd_f4_unit(clean_x, weight, spec["padding"]))
        if forward_routes["winograd_s2"] or forward_routes["winograd_s2/3x3"]:
            unit_y = np.maximum(unit_y, winograd_s2_unit(clean_x, *as_4x4(weight, spec["padding"]),
                                                         *unit_y.shape[2:]))
        if forward_routes["winograd_s2_dx"] or forward_routes["winograd_s2_dx/3x3"]:
            unit_y = np.maximum(unit_y, winograd_s2_dx_unit(
                clean_x, *as_4x4(weight, spec["padding"]), *unit_y.shape[2:]))
        compare(f"{layer.describe()} forward {x.shape} ({mutation})", y, ref_y, eps * unit_y,
                f"conv/{np.dtype(dtype).name}")
        if mutation in ("noncontig", "readonly"):
            assert same(y, forward(x)), f"{layer.describe()}: a {mutation} x changed the output"
        if mutation == "nonfinite_x":
            return
        # backward
        dy = rand(rng, y.shape, dtype)
        input_grad = draw(st.sampled_from([True, True, False]), label="input_grad")
        if mutation == "bad_dy":
            layer.forward(x)
            shape = list(y.shape)
            shape[draw(st.integers(0, 3), label="axis")] += 1
            bad = rand(rng, shape, dtype)
            rejected = clear_error_or_result((name,), lambda: layer.backward(bad), bad.shape)
            assert rejected is REJECTED
            return
        dyin = mutated(dy, mutation, "dy", rng, draw)
        if mutation != "valid" or relu is not None:
            layer.forward(x)  # the cache of a clean x (the backward is that of the plain conv)
        layer.zero_grad()
        before = TRACE.copy()
        dx = traced(f"{name}.backward", lambda: layer.backward(dyin, input_grad=input_grad))
        backward_routes = TRACE - before
        took_winograd_dw = backward_routes["winograd_dw"] > 0
        grads = (layer.weight.grad.copy(), None if layer.bias is None else layer.bias.grad.copy())
        _, ref_dx, ref_dw, ref_db = conv_reference(spec, x, weight, bias, dyin, None)
        clean_dy = np.where(np.isfinite(dyin), dyin, 0)
        _, unit_dx, unit_dw, unit_db = conv_reference(spec, np.abs(x), np.abs(weight), None,
                                                      np.abs(clean_dy), None)
        if took_winograd_dw:
            unit_dw = np.maximum(unit_dw, winograd_dw_unit(x, clean_dy, spec["padding"]))
        if backward_routes["winograd_s2_dw"]:  # conv_transpose2d's: x and dy exchanged
            unit_dw = np.maximum(unit_dw, winograd_s2_dw_unit(clean_dy, x, spec["padding"])
                                 if transposed else
                                 winograd_s2_dw_unit(x, clean_dy, spec["padding"]))
        if backward_routes["winograd/f4"] and input_grad:  # dx: dy forward, the flipped kernel
            kh, kw = weight.shape[2:]
            flipped = weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
            unit_dx = np.maximum(unit_dx, winograd_f4_unit(
                clean_dy, flipped, (kh - 1 - spec["padding"][0], kw - 1 - spec["padding"][1])))
        if backward_routes["winograd_s2_dx"] or backward_routes["winograd_s2_dx/3x3"]:  # conv2d's dx
            unit_dx = np.maximum(unit_dx, winograd_s2_dx_unit(
                clean_dy, *as_4x4(weight, spec["padding"]), *x.shape[2:]))
        if backward_routes["winograd_s2"] or backward_routes["winograd_s2/3x3"]:  # convT's dx
            unit_dx = np.maximum(unit_dx, winograd_s2_unit(
                clean_dy, *as_4x4(weight, spec["padding"]), *x.shape[2:]))
        lower_dw = upper_dw = None
        if mutation == "nonfinite_dy":
            # dW meets the bad dy through x's values (must be non-finite) and maybe through the
            # zero padding (may be)
            hit = (~np.isfinite(dyin)).astype(clean_dy.dtype)
            _, _, reach, _ = conv_reference(spec, np.abs(x), np.abs(weight), None, hit, None)
            lower_dw, upper_dw = reach > 0, ~np.isfinite(ref_dw)
        what = f"{layer.describe()} backward {x.shape} ({mutation})"
        kind = f"conv/{np.dtype(dtype).name}"
        if input_grad:
            assert dx is not None and dx.shape == x.shape and dx.dtype == dtype
            compare(what + " dx", dx, ref_dx, eps * unit_dx, kind)
        else:
            assert dx is None
        compare(what + " dW", grads[0], ref_dw, eps * unit_dw, kind, lower_dw, upper_dw)
        if grads[1] is not None:
            compare(what + " db", grads[1], ref_db, eps * unit_db, kind)
        if mutation in ("noncontig", "readonly"):
            layer.forward(x)
            layer.zero_grad()
            dx2 = layer.backward(dy, input_grad=input_grad)
            assert same(dx, dx2), f"{layer.describe()}: a {mutation} dy changed dx"
            assert same(grads[0], layer.weight.grad), \
                f"{layer.describe()}: a {mutation} dy changed dW"
            assert grads[1] is None or same(grads[1], layer.bias.grad), \
                f"{layer.describe()}: a {mutation} dy changed db"

    # ---- dense layers and GEMMs -----------------------------------------------------------------
    @target(1, sizes=["small", "ragged", "wide"])
    def dense_layers(data, sizes):
        """Dense forward (x @ W.T on the microkernel: m, n, k >= 16), dx (nn), dW (tn; packed
        for more than 64 inputs a thread: "wide"); sizes below 16 and float64 on BLAS; 1 and 2
        threads."""
        draw = data.draw
        dtype = np.float32 if sizes == "wide" else draw(
            st.sampled_from([np.float32, np.float32, np.float64]), label="dtype")
        set_threads(draw)
        fnn.seed(draw(st.integers(0, 2**31 - 1), label="seed"))
        ragged = st.one_of(st.integers(16, 300),
                           st.sampled_from([16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 130]))

        def size(label):
            return pick(draw, 1, 15, label) if sizes == "small" else draw(ragged, label=label)
        fin = pick(draw, 130, 300, "in") if sizes == "wide" else size("in")
        fout = size("out")
        lead = draw(st.sampled_from([(), (), (3,), (2, 5)]), label="lead")
        rows = size("rows")
        n = max(1, rows // int(np.prod(lead))) if lead else rows
        layer = L.Dense(fin, fout, bias=draw(st.booleans(), label="bias")).astype(dtype)
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="values"))
        x = rand(rng, (n, *lead, fin), dtype)
        mutation = draw(st.sampled_from(["valid", "valid", "noncontig", "readonly", "nonfinite_x",
                                         "nonfinite_dy", "bad_x", "bad_dy"]), label="mutation")
        eps = _eps(dtype)
        w64, b = layer.weight.data.astype(np.float64), layer.bias
        b64 = None if b is None else b.data.astype(np.float64)
        kind = f"dense/{np.dtype(dtype).name}"
        if mutation == "bad_x":
            bad = rand(rng, (n, *lead, fin + 1), dtype)
            rejected = clear_error_or_result(("Dense",), lambda: layer.forward(bad), bad.shape)
            assert rejected is REJECTED
            return
        xin = mutated(x, mutation, "x", rng, draw)
        y = traced("Dense.forward", lambda: layer.forward(xin))
        x2 = np.asarray(xin, np.float64).reshape(-1, fin)
        ref_y = reference.dense_forward(x2, w64, b64, np.empty((x2.shape[0], fout)))
        unit_y = reference.dense_forward(np.abs(np.where(np.isfinite(x2), x2, 0)), np.abs(w64),
                                         None if b64 is None else np.abs(b64), np.empty_like(ref_y))
        compare(f"{layer.describe()} forward {x.shape} ({mutation})", y.reshape(-1, fout), ref_y,
                eps * unit_y, kind)
        if mutation in ("noncontig", "readonly"):
            assert same(y, layer.forward(x)), \
                f"{layer.describe()}: a {mutation} x changed the output"
        if mutation == "nonfinite_x":
            return
        dy = rand(rng, y.shape, dtype)
        if mutation == "bad_dy":
            layer.forward(x)
            bad = rand(rng, (*y.shape[:-1], fout + 2), dtype)
            rejected = clear_error_or_result(("Dense",), lambda: layer.backward(bad), bad.shape)
            assert rejected is REJECTED
            return
        dyin = mutated(dy, mutation, "dy", rng, draw)
        layer.forward(x)
        layer.zero_grad()
        dx = traced("Dense.backward", lambda: layer.backward(dyin))
        grads = [p.grad.copy() for p in layer.parameters()]
        dy2 = np.asarray(dyin, np.float64).reshape(-1, fout)
        xr = x.astype(np.float64).reshape(-1, fin)
        ref_dx, ref_dw, ref_db = np.empty(xr.shape), np.zeros(w64.shape), np.zeros(fout)
        reference.dense_backward(xr, w64, dy2, ref_dx, ref_dw, ref_db)
        u_dx, u_dw, u_db = np.empty(xr.shape), np.zeros(w64.shape), np.zeros(fout)
        dy_abs = np.abs(np.where(np.isfinite(dy2), dy2, 0))
        reference.dense_backward(np.abs(xr), np.abs(w64), dy_abs,
                                 u_dx, u_dw, u_db)
        what = f"{layer.describe()} backward {x.shape} ({mutation})"
        compare(what + " dx", dx.reshape(-1, fin), ref_dx, eps * u_dx, kind)
        compare(what + " dW", grads[0], ref_dw, eps * u_dw, kind)
        if b is not None:
            compare(what + " db", grads[1], ref_db, eps * u_db, kind)
        if mutation in ("noncontig", "readonly"):
            layer.forward(x)
            layer.zero_grad()
            assert same(dx, layer.backward(dy)), f"{layer.describe()}: a {mutation} dy changed dx"
            assert all(same(g, p.grad) for g, p in zip(grads, layer.parameters())), \
                f"{layer.describe()}: a {mutation} dy changed the parameter gradients"

    @target(1, ta=[False, True], tb=[False, True], blas=[False, True])
    def gemm_kernel(data, ta, tb, blas):
        """_core.gemm with every transpose pair (tt only here), beta 0 or 1 on the microkernel;
        float64 or alpha != 1 on BLAS; shapes that do not fit: a ValueError naming gemm."""
        draw = data.draw
        dtype = np.float32
        if blas:
            dtype = draw(st.sampled_from([np.float32, np.float64]), label="dtype")
        set_threads(draw)
        m, n, k = (draw(st.one_of(st.integers(16, 200), st.sampled_from([16, 17, 31, 33, 65, 129])),
                        label=lab) for lab in "mnk")
        alpha = 0.5 if blas and dtype == np.float32 else 1.0
        beta = draw(st.sampled_from([0.0, 1.0]), label="beta")
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="values"))
        a = rand(rng, (k, m) if ta else (m, k), dtype)
        b = rand(rng, (n, k) if tb else (k, n), dtype)
        c0 = rand(rng, (m, n), dtype)
        mutation = draw(st.sampled_from(["valid", "valid", "bad_inner", "bad_out"]),
                        label="mutation")
        if mutation == "bad_inner":
            bad = rand(rng, (k + 1, m) if ta else (m, k + 1), dtype)
            rejected = clear_error_or_result(("gemm",),
                                             lambda: _core.gemm(bad, b, c0.copy(), ta, tb))
            assert rejected is REJECTED
            return
        if mutation == "bad_out":
            out = np.empty((m, n + 1), dtype)
            rejected = clear_error_or_result(("gemm",), lambda: _core.gemm(a, b, out, ta, tb),
                                             out.shape)
            assert rejected is REJECTED
            return
        out = c0.copy()
        traced("gemm", lambda: _core.gemm(a, b, out, ta, tb, alpha, beta))
        a64, b64, c64 = (v.astype(np.float64) for v in (a, b, c0))
        ref = reference.gemm(a64, b64, c64.copy(), ta, tb, alpha, beta)
        unit = reference.gemm(np.abs(a64), np.abs(b64), np.abs(c64), ta, tb, abs(alpha), beta)
        compare(f"gemm {m}x{n}x{k} ta={ta} tb={tb} alpha={alpha} beta={beta}", out, ref,
                _eps(dtype) * unit, f"gemm/{np.dtype(dtype).name}")

    @target(1)
    def attention_kernel(data):
        """attention_forward over strided head blocks of a packed projection: float32 heads on
        head_gemm.h (avx2 and up), float64 on BLAS; against the float64 reference with the
        scores' error carried through the softmax (p) and P V (ctx)."""
        draw = data.draw
        dtype = draw(st.sampled_from([np.float32, np.float64]), label="dtype")
        set_threads(draw)
        n, heads = draw(st.integers(1, 3), label="n"), draw(st.integers(1, 3), label="heads")
        l, s = draw(st.integers(1, 40), label="l"), draw(st.integers(1, 40), label="s")
        d = draw(st.sampled_from([1, 3, 8, 16, 20, 32, 40]), label="d")
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="values"))
        e = heads * d
        qkv = rand(rng, (n * max(l, s), 3 * e), dtype)
        q, k, v = qkv[:n * l, :e], qkv[:n * s, e:2 * e], qkv[:n * s, 2 * e:]
        scale = 1 / np.sqrt(d)
        p = np.empty((n * heads, l, s), dtype)
        ctx = np.empty((n * l, e), dtype)
        traced("attention", lambda: _core.attention_forward(q, k, v, heads, scale, None, p, ctx))
        q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
        p64, ctx64 = np.empty(p.shape), np.empty(ctx.shape)
        reference.attention_forward(q64, k64, v64, heads, scale, None, p64, ctx64)
        eps = _eps(dtype)
        # |scores' error| <= eps * scale * |Q| |K|^T per head; the softmax at most doubles it
        # relative to p (plus its own few ulp); ctx = P V adds its sums' and p's errors
        qa = np.abs(q64).reshape(n, l, heads, d).transpose(0, 2, 1, 3)
        ka = np.abs(k64).reshape(n, s, heads, d).transpose(0, 2, 1, 3)
        va = np.abs(v64).reshape(n, s, heads, d).transpose(0, 2, 1, 3)
        sa = (scale * qa @ ka.transpose(0, 1, 3, 2)).reshape(n * heads, l, s)
        unit_p = eps * p64 * (2 * sa.max(axis=2, keepdims=True) + 4)
        pv = p64.reshape(n, heads, l, s)
        unit_c = (eps * pv @ va + unit_p.reshape(n, heads, l, s) @ va)
        unit_c = unit_c.transpose(0, 2, 1, 3).reshape(n * l, e)
        what = f"attention_forward n={n} heads={heads} l={l} s={s} d={d}"
        compare(what + " p", p, p64, unit_p, f"attention/{np.dtype(dtype).name}")
        compare(what + " ctx", ctx, ctx64, unit_c, f"attention/{np.dtype(dtype).name}")

    # ---- recurrent layers -----------------------------------------------------------------------
    def reference_kernels():
        """Swaps every fastnn._core kernel for its NumPy reference (the layers then take their
        reference path, as the benchmarks' reference column does); returns the undo."""
        names = [n for n in _core.__all__ if n != "ACTIVATIONS"]
        originals = {n: getattr(_core, n) for n in names}
        for n in names:
            setattr(_core, n, getattr(reference, n))
        return lambda: [setattr(_core, n, f) for n, f in originals.items()]

    @target(1, cell=["RNN", "LSTM", "GRU"], mode=["plain", "embedded", "row_blocks"],
            dtype=[np.float32, np.float64])
    def recurrent_layers(data, cell, mode, dtype):
        """RNN/LSTM/GRU: float32 on packed W_hh panels, float64 on BLAS, batch rows split over
        2 threads (N >= 16), input rows from an Embedding's projected table (V <= T*N/2), the
        LSTM's table gradients in its backward region and its backward_table."""
        draw = data.draw
        cls = getattr(L, cell)
        set_threads(draw, 2 if mode == "row_blocks" else None)
        fnn.seed(draw(st.integers(0, 2**31 - 1), label="seed"))
        hidden = channels(draw, "hidden", 16, 130)
        features = channels(draw, "features", 1, 130)
        n = pick(draw, 16, 24, "n") if mode == "row_blocks" else pick(draw, 1, 9, "n")
        t = pick(draw, 1, 6, "t")
        embedded = mode == "embedded" or (mode == "row_blocks"
                                          and draw(st.booleans(), label="embedded"))
        seq = draw(st.booleans(), label="return_sequences")
        layer = cls(features, hidden, return_sequences=seq)
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="values"))
        name = cls.__name__
        if embedded:
            vocab = pick(draw, 1, max(1, t * n // 2), "vocab")
            model = fnn.Sequential(L.Embedding(vocab, features), layer).astype(dtype)
            x = rng.integers(0, vocab, (n, t))
        else:
            model = layer.astype(dtype)
            x = rand(rng, (n, t, features), dtype)
        twin = copy.deepcopy(model).astype(np.float64)
        mutations = ["valid", "valid", "valid", "noncontig", "readonly", "nan_x", "bad_x", "bad_dy"]
        if embedded:
            mutations = ["valid", "valid", "valid", "bad_dy"]
        mutation = draw(st.sampled_from(mutations), label="mutation")
        if mutation == "bad_x":
            bad = rand(rng, (n, t, features + 1), dtype)
            assert clear_error_or_result((name,), lambda: model.forward(bad), bad.shape) is REJECTED
            return
        if mutation == "bad_dy":  # one hidden unit too many
            y = model.forward(x)
            bad = rand(rng, y.shape[:-1] + (hidden + 1,), dtype)
            rejected = clear_error_or_result((name,), lambda: model.backward(bad), bad.shape)
            assert rejected is REJECTED
            return
        xin = x
        if mutation == "nan_x":
            xin = x.copy()
            xin[tuple(int(rng.integers(0, s)) for s in x.shape)] = np.nan
        elif mutation == "noncontig":
            xin = np.repeat(x, 2, axis=-1)[..., ::2]
        elif mutation == "readonly":
            xin = x.copy()
            xin.setflags(write=False)
        y = traced(f"{name}.forward", lambda: model.forward(xin))
        dy = rand(rng, y.shape, dtype)
        undo = reference_kernels()
        try:
            ref_y = twin.forward(xin if embedded else np.asarray(xin, np.float64))
            ref_layer = twin.layers[1] if embedded else twin
            w = {p.name: p.data for p in ref_layer.parameters()}
            scale_y = _preactivation_scale(ref_layer, w)
            if mutation != "nan_x":
                twin.zero_grad()
                ref_dx = twin.backward(dy.astype(np.float64))
                ref_scales = _gradient_scales(ref_layer, w, x, twin if embedded else None, dy)
        finally:
            undo()
        eps, factor = _eps(dtype), REC_TOL[dtype]
        kind = f"recurrent/{np.dtype(dtype).name}"
        what = f"{model.describe()} {np.shape(x)} ({mutation})"
        if not seq:
            scale_y = scale_y[:, -1]
        compare(what + " y", y, ref_y, eps * (np.abs(ref_y) + scale_y), kind, factor=factor)
        if mutation == "nan_x":
            return
        model.zero_grad()
        dx = traced(f"{name}.backward", lambda: model.backward(dy))
        if not embedded:
            compare(what + " dx", dx, ref_dx, eps * (np.abs(ref_dx) + ref_scales["dx"]), kind,
                    factor=factor)
        for p, q in zip(model.parameters(), twin.parameters()):
            unit = eps * (np.abs(q.grad) + ref_scales[p.name])
            compare(what + f" d{p.name}", p.grad, q.grad, unit, kind, factor=factor)
        if mutation in ("noncontig", "readonly"):  # against a fresh C-contiguous x
            grads = [p.grad.copy() for p in model.parameters()]
            model.zero_grad()
            assert same(y, model.forward(x)), f"{what}: changed the output"
            assert same(dx, model.backward(dy)), f"{what}: changed dx"
            assert all(same(g, p.grad) for g, p in zip(grads, model.parameters())), \
                f"{what}: changed the gradients"

    def _preactivation_scale(layer, w):
        """Per step, row and unit (N, T, H): the absolute sum of the unit's gate pre-activations
        |xw| + |h_{t-1}| @ |W_hh|.T + |b_hh| (the largest over its gates), from the reference
        forward's buffers."""
        hs, xw = layer._work["hs"], layer._work["xw"]  # (T+1, N, H), (T, N, G)
        h = layer.hidden_size
        pre = (np.abs(xw) + np.abs(hs[:-1]) @ np.abs(w["weight_hh_l0"]).T + np.abs(w["bias_hh_l0"]))
        pre = pre.reshape(*pre.shape[:2], -1, h).max(axis=2)  # the largest of the unit's gates
        return pre.transpose(1, 0, 2)

    def _unit_magnitude(dpre, dpre_h, dhs, w_hh):
        """|dpre| (T, N, G*H) with each entry raised to its unit's incoming gradient: the
        largest of the unit's gates and the absolute sum that formed dL/dh_t (dhs[t] +
        dpre_h[t+1] @ W_hh). A gate's derivative multiplies dL/dh_t by a difference or a small
        factor ((1 - z), h - n, tanh(c)), so its absolute error follows that sum, not its size."""
        t, n, g = dpre.shape
        h = w_hh.shape[1]
        incoming = np.abs(dhs).copy()
        incoming[:-1] += np.abs(dpre_h[1:]) @ np.abs(w_hh)
        mag = np.abs(dpre).reshape(t, n, -1, h).max(axis=2)
        mag = np.maximum(mag, incoming)[:, :, None, :]
        return np.broadcast_to(mag, (t, n, g // h, h)).reshape(t * n, g)

    def _gradient_scales(layer, w, x, model, dy):
        """The absolute sums of the last GEMM of each gradient, from the reference backward's
        buffers, with dpre at its units' magnitudes: dx = dpre_x @ W_ih, dW_ih = dpre_x.T @ x,
        dW_hh = dpre_h.T @ h_{t-1}, db = dpre's sums."""
        t, n, f = layer._shape
        dhs = np.zeros((t, n, layer.hidden_size))
        if layer.return_sequences:
            dhs[...] = np.asarray(dy, np.float64).transpose(1, 0, 2)
        else:
            dhs[-1] = dy
        raw_x = layer._work["dpre"]
        raw_h = layer._work.get("dpre_h", raw_x)
        dpre_x = _unit_magnitude(raw_x, raw_h, dhs, w["weight_hh_l0"])
        dpre_h = _unit_magnitude(raw_h, raw_h, dhs, w["weight_hh_l0"])
        # h_{t-1} with its own error's scale: the absolute sums of the pre-activations it came from
        h_mag = np.abs(layer._work["hs"][:t]).copy()
        h_mag[1:] += _preactivation_scale(layer, w).transpose(1, 0, 2)[:-1]
        hs = h_mag.reshape(t * n, -1)
        if model is not None:
            table = np.abs(model.layers[0].weight.data)
            x_tm = table[np.asarray(x).T.reshape(-1)]
        else:
            x_tm = np.abs(np.asarray(x, np.float64).transpose(1, 0, 2)).reshape(t * n, f)
        scales = {
            "dx": (dpre_x @ np.abs(w["weight_ih_l0"])).reshape(t, n, f).transpose(1, 0, 2),
            "weight_ih_l0": dpre_x.T @ x_tm, "bias_ih_l0": dpre_x.sum(0),
            "weight_hh_l0": dpre_h.T @ hs, "bias_hh_l0": dpre_h.sum(0)}
        if model is not None:  # the Embedding's rows: dx's rows added up per id
            per_pos = dpre_x @ np.abs(w["weight_ih_l0"])
            emb = np.zeros_like(table)
            np.add.at(emb, np.asarray(x).T.reshape(-1), per_pos)
            scales["weight"] = emb
        return scales

    return tests


def _child_main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, required=True,
                    help="examples per target (times its weight)")
    ap.add_argument("--derandomize", action="store_true")
    args = ap.parse_args(argv)
    import warnings

    from hypothesis import HealthCheck, settings

    from fastnn._core import routes
    from test_fuzz import CASES, VIOLATIONS

    global TRACE
    warnings.simplefilter("ignore")
    np.seterr(all="ignore")
    with routes.traced() as TRACE:
        for test, count in _child_tests(args.examples):
            settings(max_examples=count, deadline=None, derandomize=args.derandomize,
                     database=None, print_blob=True,
                     suppress_health_check=list(HealthCheck))(test)()
    for signature, count in sorted(VIOLATIONS.items(), key=lambda kv: -kv[1]):
        print(f"VIOLATION x{count}: {signature}")
    print("MAXERR " + json.dumps({k: round(v[0], 3) for k, v in sorted(MAXERR.items())}))
    for k, (v, what) in sorted(MAXERR.items()):
        print(f"largest {k} error: {v:.3g} units, {what}")
    print("ROUTES " + json.dumps({e: dict(sorted(c.items())) for e, c in sorted(TAKEN.items())}))
    print(f"FUZZ routes cases={CASES['n']}", flush=True)
    return 0


if __name__ == "__main__":
    if "PYTHONPATH" not in os.environ:  # run by hand from a checkout built in place
        sys.path.insert(0, REPO)
    sys.exit(_child_main(sys.argv[1:]))
