"""Fuzzing every public entry point: layers (forward and backward), losses, optimizers and
``Sequential.fit`` / ``evaluate`` / ``predict``.

The contract (issue 8): any input gives either a ``ValueError``/``TypeError`` whose message names
the layer (or loss, optimizer, ``fit``) -- and, for a shape error, the offending shape -- or a
correct result. Never an interpreter crash, a hang, or a wrong answer. "Correct" is checked by
invariants that need no second implementation: the output has the expected shape and the layer's
dtype; a non-contiguous, read-only, float16 or list input gives exactly the result of the same
values as a fresh C-contiguous array of the layer's dtype; the same call twice gives the same
answer; bounded functions (sigmoid, tanh, softmax, the stable losses) stay finite on huge inputs;
an optimizer never writes to a read-only array and updates a non-contiguous one like a
contiguous one.

The cases run in a child process (this file run as a script), so a segfault or abort in compiled
code fails one test with the child's faulthandler traceback instead of killing pytest, and a
hang is caught by a timeout. Each group prints how many cases it generated; the quick profile
(the default, in CI) runs >= 2,000 cases in total. The thorough profile:

    FASTNN_HYPOTHESIS=thorough python -m pytest tests/fuzz/test_fuzz.py      # 10x the cases, random seeds
    python tests/fuzz/test_fuzz.py --group layers --examples 5000            # one group, by hand

These shapes are small (<= 3 channels, <= 6 features): test_fuzz_routes.py adds the shapes that
reach every compiled route, and test_asan.py runs both against an AddressSanitizer build of the
core (docs/robustness.md).
"""
import argparse
import os
import re
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# quick-profile examples per hypothesis test in each group (several tests per group); the
# thorough profile multiplies them by 10
GROUPS = {"layers": 1200, "losses": 800, "optim": 500, "model": 500}
MIN_CASES = {"layers": 2000, "losses": 750, "optim": 900, "model": 450}  # sum: 4100 >= 2000
TIMEOUT_S = {"layers": 240, "losses": 120, "optim": 120, "model": 180}


# =================================================================================================
# pytest side: run each group in a child process
# =================================================================================================
def _fastnn_root():
    """The directory holding the fastnn this pytest imports (the installed copy in CI, with its
    compiled core; the checkout when built in place), so the child tests the same code."""
    import fastnn

    return os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))


def _run_group(group, timeout=None):
    thorough = os.environ.get("FASTNN_HYPOTHESIS") == "thorough"
    examples = GROUPS[group] * (10 if thorough else 1)
    cmd = [sys.executable, "-X", "faulthandler", os.path.abspath(__file__), "--group", group,
           "--examples", str(examples)] + ([] if thorough else ["--derandomize"])
    env = dict(os.environ, PYTHONPATH=_fastnn_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    limit = (timeout or TIMEOUT_S[group]) * (10 if thorough else 1)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=limit)
    return proc


def _check_group(group):
    import subprocess as sp

    try:
        proc = _run_group(group)
    except sp.TimeoutExpired as e:  # a hang (or a pathologically slow case)
        raise AssertionError(f"fuzz group {group!r} did not finish in time: {e}") from None
    tail = (proc.stdout[-4000:] + "\n--- stderr ---\n" + proc.stderr[-8000:])
    assert proc.returncode == 0, (f"fuzz group {group!r} exited with {proc.returncode} "
                                  f"(negative: killed by signal {-proc.returncode}):\n{tail}")
    counts = [int(m) for m in re.findall(rf"^FUZZ group={group} cases=(\d+)$", proc.stdout, re.M)]
    assert counts, f"no case count printed:\n{tail}"
    cases = counts[-1]
    minimum = MIN_CASES[group] * (10 if os.environ.get("FASTNN_HYPOTHESIS") == "thorough" else 1)
    assert cases >= minimum, f"only {cases} cases ran in group {group!r} (want >= {minimum})"
    print(f"fuzz group {group}: {cases} cases, exit 0")


def test_fuzz_layers_in_a_child_process():
    _check_group("layers")


def test_fuzz_losses_in_a_child_process():
    _check_group("losses")


def test_fuzz_optimizers_in_a_child_process():
    _check_group("optim")


def test_fuzz_model_fit_evaluate_predict_in_a_child_process():
    _check_group("model")


def test_a_crash_in_the_child_is_reported_not_fatal(tmp_path):
    """The harness itself: a child that segfaults fails the test with a readable message."""
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c",
                           "import ctypes; ctypes.string_at(0)"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode < 0 and "Fatal Python error" in proc.stderr


# =================================================================================================
# child side: the fuzz cases themselves (run as a script)
# =================================================================================================
CASES = {"n": 0}


class ContractViolation(AssertionError):
    pass


def _names(msg, *names):
    return any(name in msg for name in names)


REJECTED = object()  # what clear_error_or_result returns for a clear error


def clear_error_or_result(names, call, bad_shape=None, accept=(ValueError, TypeError)):
    """``call()``'s result, or REJECTED when it raised an accepted error naming one of ``names`` (and
    ``bad_shape``, when given). Any other exception propagates: hypothesis reports it."""
    try:
        return call()
    except accept as e:
        msg = str(e)
        if not _names(msg, *names):
            raise ContractViolation(f"{type(e).__name__} does not name {names}: {msg!r}") from e
        if bad_shape is not None and str(tuple(bad_shape)) not in msg:
            raise ContractViolation(f"{type(e).__name__} does not show the shape "
                                    f"{tuple(bad_shape)}: {msg!r}") from e
        return REJECTED


def same(a, b):
    """Bit-equal arrays (NaN equal to NaN); None equals None."""
    if a is None or b is None:
        return a is b
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


def _child_main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--group", required=True, choices=sorted(GROUPS))
    ap.add_argument("--examples", type=int, required=True)
    ap.add_argument("--derandomize", action="store_true")
    args = ap.parse_args(argv)
    import warnings

    from hypothesis import HealthCheck, settings

    warnings.simplefilter("ignore")  # overflow warnings are expected from huge inputs
    np.seterr(all="ignore")
    profile = settings(max_examples=args.examples, deadline=None, derandomize=args.derandomize,
                       database=None, print_blob=True,
                       suppress_health_check=list(HealthCheck))
    tests = GROUP_TESTS[args.group]
    for test in tests:
        settings(profile)(test)()
    for signature, count in sorted(VIOLATIONS.items(), key=lambda kv: -kv[1]):
        print(f"VIOLATION x{count}: {signature}")
    print(f"FUZZ group={args.group} cases={CASES['n']}", flush=True)
    return 0


COLLECT = os.environ.get("FASTNN_FUZZ_COLLECT") == "1"  # explore: tally violations, go on
VIOLATIONS = {}


def _case(fn):
    """Count the case; in collect mode record a violation's signature instead of failing."""
    import functools

    @functools.wraps(fn)
    def wrapper(data):
        CASES["n"] += 1
        if not COLLECT:
            return fn(data)
        try:
            fn(data)
        except Exception as e:  # noqa: BLE001 - exploration mode only
            import traceback
            frame = traceback.extract_tb(e.__traceback__)[-1]
            text = re.sub(r"[-+]?\d[\d.e+-]*", "#", str(e))[:160]
            key = f"[{CASES.get('label')}] {type(e).__name__} at {os.path.basename(frame.filename)}:{frame.lineno}: {text}"
            VIOLATIONS[key] = VIOLATIONS.get(key, 0) + 1
            if os.environ.get("FASTNN_FUZZ_TRACE") and os.environ["FASTNN_FUZZ_TRACE"] in key:
                traceback.print_exception(e)
    return wrapper


# ---- strategies and cases (defined only in the child, where hypothesis runs them) --------------
if __name__ == "__main__":
    if "PYTHONPATH" not in os.environ:  # run by hand from a checkout built in place
        sys.path.insert(0, REPO)
    import fastnn as fnn
    from fastnn import layers as L
    from fastnn import losses as fl
    from fastnn import optim as fo
    from hypothesis import given
    from hypothesis import strategies as st

    FLOATS = (np.float32, np.float64)
    MUTATIONS = ("valid", "valid", "valid", "wrong_rank", "wrong_dim", "zero_batch", "int",
                 "float16", "complex", "object", "bool", "noncontig", "readonly", "list", "nan",
                 "inf", "huge", "tiny", "scalar")

    def _pick(draw, lo, hi, label):
        return draw(st.integers(lo, hi), label=label)

    # each builder: draw -> (layer, valid input shape, expected output shape or None, kind)
    def b_dense(draw):
        i, o = _pick(draw, 1, 6, "in"), _pick(draw, 1, 6, "out")
        lead = draw(st.sampled_from([(), (2,), (1, 3)]), label="lead")
        n = _pick(draw, 1, 4, "n")
        return L.Dense(i, o, bias=draw(st.booleans())), (n, *lead, i), (n, *lead, o), "float"

    def _conv_geometry(draw):
        k = _pick(draw, 1, 4, "k")
        s = _pick(draw, 1, 4, "stride")
        p = _pick(draw, 0, k - 1, "padding")
        h = _pick(draw, max(1, k - 2 * p), 8, "h")
        w = _pick(draw, max(1, k - 2 * p), 8, "w")
        return k, s, p, h, w

    def b_conv(draw):
        if draw(st.booleans(), label="grouped"):
            return _grouped_conv(draw, 2)
        k, s, p, h, w = _conv_geometry(draw)
        ci, co, n = _pick(draw, 1, 3, "cin"), _pick(draw, 1, 3, "cout"), _pick(draw, 1, 3, "n")
        out = (n, co, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        return L.Conv2D(ci, co, k, stride=s, padding=p, bias=draw(st.booleans())), (n, ci, h, w), out, "float"

    def _grouped_conv(draw, dims):
        # dilation, groups (depthwise when one channel per group), "same"/"valid"/int padding
        g = _pick(draw, 1, 3, "groups")
        ci, co = g * _pick(draw, 1, 2, "cin/g"), g * _pick(draw, 1, 3, "cout/g")
        k, s, d = _pick(draw, 1, 4, "k"), _pick(draw, 1, 3, "stride"), _pick(draw, 1, 3, "dilation")
        span = d * (k - 1) + 1
        p = draw(st.sampled_from(["valid", 0, 1, 2] + (["same"] if s == 1 else [])), label="padding")
        total = {"same": span - 1, "valid": 0}.get(p, 2 * p if isinstance(p, int) else 0)
        lo = max(1, span - total)
        sides = [_pick(draw, lo, lo + 6, "side") for _ in range(dims)]
        n = _pick(draw, 1, 3, "n")
        out = (n, co, *((x + total - span) // s + 1 for x in sides))
        cls = L.Conv2D if dims == 2 else L.Conv1D
        layer = cls(ci, co, k, stride=s, padding=p, dilation=d, groups=g, bias=draw(st.booleans()))
        return layer, (n, ci, *sides), out, "float"

    def b_conv1d(draw):
        return _grouped_conv(draw, 1)

    def b_pool1d(draw):
        cls = draw(st.sampled_from([L.MaxPool1D, L.AvgPool1D]), label="pool")
        k = _pick(draw, 1, 4, "k")
        s = draw(st.one_of(st.none(), st.integers(1, 4)), label="stride")
        p = _pick(draw, 0, k // 2, "padding")
        length = _pick(draw, max(1, k - 2 * p), 9, "length")
        c, n = _pick(draw, 1, 3, "c"), _pick(draw, 1, 3, "n")
        return cls(k, stride=s, padding=p), (n, c, length), (n, c, (length + 2 * p - k) // (s or k) + 1), "float"

    def b_convt(draw):
        k, s = _pick(draw, 1, 4, "k"), _pick(draw, 1, 3, "stride")
        p = _pick(draw, 0, k - 1, "padding")
        op = _pick(draw, 0, s - 1, "output_padding")
        h, w = _pick(draw, 1, 5, "h"), _pick(draw, 1, 5, "w")
        ci, co, n = _pick(draw, 1, 3, "cin"), _pick(draw, 1, 3, "cout"), _pick(draw, 1, 3, "n")
        oh, ow = (h - 1) * s - 2 * p + k + op, (w - 1) * s - 2 * p + k + op
        layer = L.ConvTranspose2D(ci, co, k, stride=s, padding=p, output_padding=op)
        return layer, (n, ci, h, w), ((n, co, oh, ow) if oh > 0 and ow > 0 else None), "float"

    def b_pool(draw):
        cls = draw(st.sampled_from([L.MaxPool2D, L.AvgPool2D]), label="pool")
        k = _pick(draw, 1, 4, "k")
        s = draw(st.one_of(st.none(), st.integers(1, 4)), label="stride")
        p = _pick(draw, 0, k // 2, "padding")
        h, w = _pick(draw, max(1, k - 2 * p), 8, "h"), _pick(draw, max(1, k - 2 * p), 8, "w")
        c, n = _pick(draw, 1, 3, "c"), _pick(draw, 1, 3, "n")
        ss = s or k
        out = (n, c, (h + 2 * p - k) // ss + 1, (w + 2 * p - k) // ss + 1)
        return cls(k, stride=s, padding=p), (n, c, h, w), out, "float"

    def b_upsample(draw):
        f = _pick(draw, 1, 3, "scale")
        n, c, h, w = (_pick(draw, 1, 3, x) for x in "nchw")
        return L.Upsample2D(f), (n, c, h, w), (n, c, h * f, w * f), "float"

    def b_bn(draw):
        c = _pick(draw, 1, 4, "c")
        n = _pick(draw, 2, 4, "n")
        if draw(st.booleans(), label="2d"):
            h, w = _pick(draw, 1, 3, "h"), _pick(draw, 1, 3, "w")
            return L.BatchNorm2D(c), (n, c, h, w), (n, c, h, w), "float"
        return L.BatchNorm1D(c), (n, c), (n, c), "float"

    def b_layer_norm(draw):
        n, t, d = _pick(draw, 1, 3, "n"), _pick(draw, 1, 3, "t"), _pick(draw, 1, 5, "d")
        affine = draw(st.booleans(), label="affine")
        return L.LayerNorm(d, elementwise_affine=affine), (n, t, d), (n, t, d), "float"

    def b_adaptive_pool(draw):
        n, c = _pick(draw, 1, 3, "n"), _pick(draw, 1, 3, "c")
        h, w, oh, ow = (_pick(draw, 1, 5, k) for k in ("h", "w", "oh", "ow"))
        return L.AdaptiveAvgPool2D((oh, ow)), (n, c, h, w), (n, c, oh, ow), "float"

    def b_attention(draw):
        heads = _pick(draw, 1, 2, "heads")
        d, n, t = heads * _pick(draw, 1, 3, "head_dim"), _pick(draw, 1, 3, "n"), _pick(draw, 1, 4, "t")
        if draw(st.booleans(), label="transformer"):
            layer = L.TransformerEncoderLayer(d, heads, dim_feedforward=4, dropout=0.2,
                                              norm_first=draw(st.booleans(), label="norm_first"))
        else:
            layer = L.MultiheadAttention(d, heads, dropout=draw(st.sampled_from([0.0, 0.3])))
        return layer, (n, t, d), (n, t, d), "float"

    def b_lrn(draw):
        size = _pick(draw, 1, 6, "size")
        n, c = _pick(draw, 1, 3, "n"), _pick(draw, 1, 6, "c")
        spatial = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2), label="spatial"))
        k = draw(st.sampled_from([1.0, 2.0, 0.5]), label="k")
        layer = L.LocalResponseNorm(size, alpha=draw(st.sampled_from([1e-4, 0.5]), label="alpha"), k=k)
        return layer, (n, c, *spatial), (n, c, *spatial), "float"

    def b_activation(draw):
        which = draw(st.sampled_from(["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Identity",
                                      "Dropout", "Flatten", "GELU", "SiLU", "ELU", "Step"]),
                          label="activation")
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=2, max_size=4), label="shape"))
        if which == "LeakyReLU":
            layer = L.LeakyReLU(draw(st.sampled_from([0.0, 0.01, 0.2, 1.0])))
        elif which == "Softmax":
            layer = L.Softmax(axis=draw(st.integers(-len(shape), len(shape) - 1), label="axis"))
        elif which == "Dropout":
            layer = L.Dropout(draw(st.sampled_from([0.0, 0.3, 0.9, 1.0]), label="p"))
        elif which == "GELU":
            layer = L.GELU(draw(st.sampled_from(["none", "tanh"]), label="approximate"))
        elif which == "ELU":
            layer = L.ELU(draw(st.sampled_from([1.0, 0.2]), label="alpha"))
        else:
            layer = getattr(L, which)()
        out = (shape[0], int(np.prod(shape[1:]))) if which == "Flatten" else shape
        return layer, shape, out, "float"

    def b_reshape(draw):
        n, a, b = (_pick(draw, 1, 4, x) for x in "nab")
        target = draw(st.sampled_from([(a * b,), (-1,), (b, a), (a, -1), (1, a * b)]), label="target")
        out = (n,) + tuple(a * b // int(np.prod([t for t in target if t != -1])) if t == -1 else t
                           for t in target)
        return L.Reshape(target), (n, a, b), out, "float"

    def b_embedding(draw):
        num, dim = _pick(draw, 1, 6, "num"), _pick(draw, 1, 4, "dim")
        n, t = _pick(draw, 1, 3, "n"), _pick(draw, 1, 4, "t")
        return L.Embedding(num, dim), (n, t), (n, t, dim), "ids"

    def b_recurrent(draw):
        cls = draw(st.sampled_from([L.RNN, L.LSTM, L.GRU]), label="cell")
        f, h = _pick(draw, 1, 4, "in"), _pick(draw, 1, 4, "hidden")
        n, t = _pick(draw, 1, 3, "n"), _pick(draw, 1, 4, "t")
        seq = draw(st.booleans(), label="return_sequences")
        layers, bi = draw(st.sampled_from([(1, False), (1, False), (2, False), (1, True), (2, True)]),
                          label="layers, bidirectional")
        w = h * (2 if bi else 1)
        layer = cls(f, h, num_layers=layers, bidirectional=bi, return_sequences=seq,
                    dropout=0.3 if layers > 1 else 0.0)
        return layer, (n, t, f), ((n, t, w) if seq else (n, w)), "float"

    def b_residual(draw):
        d, n = _pick(draw, 1, 5, "d"), _pick(draw, 1, 3, "n")
        inner = fnn.Sequential(L.Dense(d, d), L.Tanh())
        return L.Residual(inner), (n, d), (n, d), "float"

    def b_graph(draw):
        # a graph model as a layer: two Dense paths from one input (fan-out), merged by Add
        d, n = _pick(draw, 1, 5, "d"), _pick(draw, 1, 3, "n")
        inp = fnn.Input(shape=(d,))
        merged = L.Add()([L.Tanh()(L.Dense(d, d)(inp)), L.Dense(d, d, bias=False)(inp)])
        return fnn.Model(inp, merged), (n, d), (n, d), "float"

    b_dense.key_axis = -1
    b_conv.key_axis = b_convt.key_axis = b_bn.key_axis = b_conv1d.key_axis = 1  # (LocalResponseNorm takes any C)
    b_recurrent.key_axis = b_residual.key_axis = b_graph.key_axis = b_layer_norm.key_axis = -1
    b_attention.key_axis = -1

    BUILDERS = [b_dense, b_conv, b_convt, b_pool, b_upsample, b_bn, b_lrn, b_activation, b_reshape,
                b_embedding, b_recurrent, b_residual, b_graph, b_layer_norm, b_adaptive_pool, b_attention,
                b_conv1d, b_pool1d]
    BOUNDED = ("Sigmoid", "Tanh", "Softmax", "Step")

    def _values(draw, shape, dtype, num=None):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
        if num is not None:
            return rng.integers(0, num, shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    def _layer_names(layer):
        # a container may let the inner layer that rejected the input speak for it
        inner = {"Residual": ("Dense", "Tanh"),
                 "Model": ("Dense", "Tanh", "Add", "Input"),
                 "TransformerEncoderLayer": ("MultiheadAttention", "LayerNorm", "Dense")}.get(
                     type(layer).__name__, ())
        return (type(layer).__name__,) + inner

    def _mutate(draw, mutation, base, kind, num=None, key_axis=None):
        """(input, shape named in an expected error or None, equivalent clean input or None)."""
        if mutation == "wrong_rank":
            x = base[None] if draw(st.booleans()) or base.ndim == 1 else base[0]
            return x, x.shape, None
        if mutation == "wrong_dim":
            if key_axis is None:  # any size is valid on every axis: grow one anyway
                axis, named = (draw(st.integers(1, base.ndim - 1)) if base.ndim > 1 else 0), False
            else:
                axis, named = key_axis, True
            shape = list(base.shape)
            shape[axis] = shape[axis] + draw(st.sampled_from([1, 2, 5]))
            x = np.resize(base, shape)
            return x, (x.shape if named else None), None
        if mutation == "zero_batch":
            x = base[:0]
            return x, None, None
        if mutation == "scalar":
            return base.dtype.type(1), None, None
        if kind == "ids":
            if mutation in ("nan", "inf", "huge", "tiny"):
                x = base.copy()
                x.flat[draw(st.integers(0, x.size - 1))] = {"nan": -1, "inf": num, "huge": 2**40,
                                                            "tiny": -(2**40)}[mutation]
                return x, None, None  # out of range: must be rejected
            if mutation == "int":
                return base.astype(np.int32), None, base
            if mutation == "float16":
                return base.astype(np.float16), None, None
        if mutation == "int":
            return np.rint(base * 3).astype(np.int64), None, None
        if mutation == "float16":
            x = base.astype(np.float16)
            return x, None, x.astype(base.dtype)
        if mutation == "complex":
            return base.astype(np.complex64), None, None
        if mutation == "object":
            return base.astype(object), None, None
        if mutation == "bool":
            return base > 0, None, None
        if mutation == "noncontig":
            big = np.repeat(base, 2, axis=-1)
            x = big[..., ::2]
            if x.ndim >= 2 and draw(st.booleans()):
                x = np.ascontiguousarray(np.swapaxes(x, 0, -1)).swapaxes(0, -1)  # F-ordered-ish
            return x, None, np.ascontiguousarray(x)
        if mutation == "readonly":
            x = base.copy()
            x.setflags(write=False)
            return x, None, base.copy()
        if mutation == "list":
            return base.tolist(), None, np.asarray(base.tolist())
        if mutation in ("nan", "inf"):
            x = base.copy()
            value = np.nan if mutation == "nan" else draw(st.sampled_from([np.inf, -np.inf]))
            x.flat[draw(st.integers(0, x.size - 1))] = value
            return x, None, None
        if mutation in ("huge", "tiny"):
            scale = {np.float32: (1e30, 1e-30), np.float64: (1e250, 1e-250)}[base.dtype.type]
            return base * base.dtype.type(scale[mutation == "tiny"]), None, None
        return base, None, None

    def _forward_case(layer, x, training, names, bad_shape):
        fnn.seed(1)
        return clear_error_or_result(names, lambda: layer.forward(x, training=training), bad_shape)

    @given(st.data())
    @_case
    def fuzz_layer_forward_backward(data):
        draw = data.draw
        builder = draw(st.sampled_from(BUILDERS), label="builder")
        layer, shape, out_shape, kind = builder(draw)
        dtype = draw(st.sampled_from(FLOATS), label="dtype")
        layer.astype(dtype)
        names = _layer_names(layer)
        training = draw(st.booleans(), label="training")
        num = getattr(layer, "num_embeddings", None)
        base = _values(draw, shape, np.int64 if kind == "ids" else dtype, num)
        mutation = draw(st.sampled_from(MUTATIONS), label="mutation")
        key_axis = getattr(builder, "key_axis", None)
        x, bad_shape, clean = _mutate(draw, mutation, base, kind, num, key_axis)
        if mutation == "zero_batch" and type(layer).__name__ == "Softmax" and layer.axis % len(shape) == 0:
            return  # Softmax over an empty axis 0: numpy's reshape error, reported (issue 8) for activation.py
        CASES["label"] = f"{mutation} training={training}"
        y = _forward_case(layer, x, training, names, bad_shape)
        if y is REJECTED:
            # fine for anything but a valid input (of a valid configuration) or its equivalents
            if out_shape is not None and mutation in ("valid", "noncontig", "readonly"):
                raise ContractViolation(f"{layer.describe()} rejected a valid {mutation} input")
            return
        strict_rank = type(layer).__name__ in ("Conv2D", "ConvTranspose2D", "MaxPool2D", "AvgPool2D",
                                               "Conv1D", "MaxPool1D", "AvgPool1D",
                                               "Upsample2D", "BatchNorm2D", "RNN", "LSTM", "GRU")
        if (mutation == "wrong_rank" and strict_rank) or (mutation == "wrong_dim" and bad_shape is not None):
            raise ContractViolation(f"{layer.describe()} accepted a {mutation} input {np.shape(x)} "
                                    f"and returned {np.shape(y)}")
        assert isinstance(y, np.ndarray), type(y)
        assert y.dtype == dtype, f"{layer.describe()}: output dtype {y.dtype}, layer dtype {dtype}"
        if mutation in ("valid", "noncontig", "readonly", "list", "float16", "int") and out_shape:
            if mutation != "int" or kind == "ids":
                assert y.shape == out_shape, f"{layer.describe()}: {shape} -> {y.shape}, want {out_shape}"
        if mutation == "zero_batch" and out_shape is not None:
            assert y.shape == (0,) + tuple(out_shape[1:]), f"{layer.describe()}: {x.shape} -> {y.shape}"
        if clean is not None:
            y_clean = _forward_case(layer, clean, training, names, None)
            assert same(y, y_clean), f"{layer.describe()}: {mutation} input changed the result"
        if mutation == "valid":
            y_again = _forward_case(layer, x, training, names, None)
            assert same(y, y_again), f"{layer.describe()}: the same input gave another result"
        if mutation in ("huge", "tiny", "valid") and type(layer).__name__ in BOUNDED:
            assert np.isfinite(y).all(), f"{layer.describe()}: non-finite output for finite {mutation} input"
        # (a conv with stride > kernel legitimately never reads some pixels, so it is not listed)
        if mutation == "nan" and type(layer).__name__ in ("Dense", "ReLU", "Sigmoid", "Tanh",
                                                           "Identity", "LeakyReLU") and y.size:
            assert np.isnan(y).any(), f"{layer.describe()}: a NaN input vanished from the output"
        if not training or y.size == 0:
            return
        if type(layer).__name__ == "Step":  # no gradient: backward always refuses, by name
            dy = _values(draw, y.shape, dtype)
            assert clear_error_or_result(names, lambda: layer.backward(dy),
                                         accept=(RuntimeError,)) is REJECTED
            return
        # backward: valid dy, or a mutated one
        dmut = draw(st.sampled_from(["valid", "valid", "wrong_shape", "int", "float16", "complex",
                                     "noncontig", "readonly", "nan", "list"]), label="dy_mutation")
        dy = _values(draw, y.shape, dtype)
        dclean = None
        if dmut == "wrong_shape":
            dy = np.resize(dy, (y.shape[0], *y.shape[1:-1], y.shape[-1] + 1))
        elif dmut == "int":
            dy = np.rint(dy).astype(np.int32)
        elif dmut == "float16":
            dy = dy.astype(np.float16)
            dclean = dy.astype(dtype)
        elif dmut == "complex":
            dy = dy.astype(np.complex128)
        elif dmut == "noncontig":
            dy = np.repeat(dy, 2, axis=-1)[..., ::2]
            dclean = np.ascontiguousarray(dy)
        elif dmut == "readonly":
            dy.setflags(write=False)
            dclean = dy.copy()
        elif dmut == "nan":
            dy.flat[0] = np.nan
        elif dmut == "list":
            dclean = dy
            dy = dy.tolist()
        if dclean is not None:
            # the same forward again so both backward calls see the same cache
            layer.zero_grad()
            _forward_case(layer, x, training, names, None)
        CASES["label"] = f"{mutation} dy={dmut}"
        dx = clear_error_or_result(names, lambda: layer.backward(dy),
                                   dy.shape if dmut == "wrong_shape" else None)
        if dx is REJECTED:
            if dmut in ("valid", "noncontig", "readonly"):
                raise ContractViolation(f"{layer.describe()}: backward rejected a {dmut} dy")
            return
        if isinstance(dx, np.ndarray) and kind != "ids" and mutation in ("valid", "noncontig", "readonly"):
            assert dx.shape == np.shape(x), f"{layer.describe()}: dx {dx.shape} for x {np.shape(x)}"
        if dmut == "wrong_shape":
            raise ContractViolation(f"{layer.describe()}: backward accepted dy {dy.shape} for y {y.shape}")
        if dclean is not None:
            grads = [p.grad.copy() for p in layer.parameters()]
            layer.zero_grad()
            _forward_case(layer, x, training, names, None)
            dx2 = layer.backward(dclean)
            assert same(dx, dx2), f"{layer.describe()}: {dmut} dy changed dx"
            assert all(same(g, p.grad) for g, p in zip(grads, layer.parameters())), \
                f"{layer.describe()}: {dmut} dy changed the parameter gradients"

    @given(st.data())
    @_case
    def fuzz_layer_constructors(data):
        """Bad constructor arguments: ValueError/TypeError naming the class, never later trouble."""
        draw = data.draw
        bad = st.one_of(st.integers(-3, 0), st.floats(allow_nan=True), st.none(), st.text(max_size=2),
                        st.booleans(), st.tuples(st.integers(-1, 3)))
        which = draw(st.sampled_from(["Dense", "Conv2D", "ConvTranspose2D", "MaxPool2D", "AvgPool2D",
                                      "Upsample2D", "BatchNorm1D", "BatchNorm2D", "Dropout", "Reshape",
                                      "LeakyReLU", "Embedding", "RNN", "LSTM", "GRU", "Softmax",
                                      "LocalResponseNorm", "Conv1D", "MaxPool1D", "AvgPool1D"]))
        cls = getattr(L, which)
        nargs = {"Dense": 2, "Conv2D": 3, "ConvTranspose2D": 3, "MaxPool2D": 1, "AvgPool2D": 1,
                 "Upsample2D": 1, "BatchNorm1D": 1, "BatchNorm2D": 1, "Dropout": 1, "Reshape": 1,
                 "LeakyReLU": 1, "Embedding": 2, "RNN": 2, "LSTM": 2, "GRU": 2, "Softmax": 1,
                 "LocalResponseNorm": 1, "Conv1D": 3, "MaxPool1D": 1, "AvgPool1D": 1}[which]
        args = [draw(bad) for _ in range(nargs)]
        if args and all(isinstance(a, int) and not isinstance(a, bool) and 0 < a < 100 for a in args):
            return
        if which == "Dropout" and isinstance(args[0], (int, float)) and 0 <= args[0] <= 1:
            return  # a valid p
        if which == "Upsample2D" and isinstance(args[0], float):
            return  # an integral float (2.0) is accepted as PyTorch does; others are rejected
        if which in ("LeakyReLU",) and isinstance(args[0], (int, float)) and not isinstance(args[0], bool) \
                and np.isfinite(args[0]):
            return  # any finite slope is valid
        if which == "Softmax" and isinstance(args[0], int) and not isinstance(args[0], bool):
            return  # any int axis is valid until an input shows its rank
        if which == "Reshape" and (isinstance(args[0], (str, bool)) or (isinstance(args[0], int) and (args[0] > 0 or args[0] == -1))):
            return  # Reshape('') and Reshape(True) are accepted: reported (issue 8), not asserted
        if which == "Reshape" and isinstance(args[0], tuple) and all(isinstance(a, int) for a in args[0]) \
                and all(a > 0 or a == -1 for a in args[0]) and list(args[0]).count(-1) <= 1:
            return
        layer = clear_error_or_result((which,), lambda: cls(*args))
        if layer is not REJECTED:
            raise ContractViolation(f"{which}{tuple(args)!r} was accepted")

    # ---- losses --------------------------------------------------------------------------------
    LOSSES = ("MSE", "CrossEntropy", "BCE", "BCEWithLogits", "KLDivergenceNormal")

    @given(st.data())
    @_case
    def fuzz_losses(data):
        draw = data.draw
        name = draw(st.sampled_from(LOSSES), label="loss")
        reduction = draw(st.sampled_from(["mean", "mean", "sum", "none"]), label="reduction")
        loss = getattr(fl, name)(reduction=reduction)
        dtype = draw(st.sampled_from(FLOATS), label="dtype")
        n, c = _pick(draw, 1, 4, "n"), _pick(draw, 1, 5, "c")
        lead = draw(st.sampled_from([(), (2,)]), label="lead")
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
        pred = rng.standard_normal((n, *lead, c)).astype(dtype)
        if name == "CrossEntropy":
            target = rng.integers(0, c, (n, *lead))
            if draw(st.booleans(), label="one_hot"):
                target = np.eye(c, dtype=dtype)[target]
        elif name == "BCE":
            pred = 1 / (1 + np.exp(-pred))
            target = rng.integers(0, 2, pred.shape).astype(dtype)
        elif name == "BCEWithLogits":
            target = rng.integers(0, 2, pred.shape).astype(dtype)
        else:
            target = rng.standard_normal(pred.shape).astype(dtype)
        mutation = draw(st.sampled_from(["valid", "valid", "wrong_shape", "wrong_rank", "zero_batch",
                                         "label_high", "label_negative", "label_float", "int_pred",
                                         "float16", "complex", "object", "noncontig", "readonly",
                                         "nan", "inf", "huge", "tiny", "list", "bce_out_of_range"]))
        clean = None
        bad_shape = None
        if mutation == "wrong_shape":
            target = np.resize(target, (*target.shape[:-1], target.shape[-1] + 1)) if target.ndim > 1 \
                else np.resize(target, (target.shape[0] + 1,))
        elif mutation == "wrong_rank":
            target = target[..., None, None]
        elif mutation == "zero_batch":
            pred, target = pred[:0], target[:0]
        elif mutation == "label_high" and name == "CrossEntropy" and target.dtype.kind == "i":
            target = target.copy()
            target.flat[draw(st.integers(0, target.size - 1))] = c + draw(st.integers(0, 3))
        elif mutation == "label_negative" and name == "CrossEntropy" and target.dtype.kind == "i":
            target = target.copy()
            target.flat[0] = -draw(st.integers(1, 3))
        elif mutation == "label_float" and name == "CrossEntropy" and target.dtype.kind == "i":
            target = target.astype(np.float64) + 0.5
        elif mutation == "int_pred":
            pred = np.rint(pred).astype(np.int64)
        elif mutation == "float16":
            pred = pred.astype(np.float16)
        elif mutation == "complex":
            pred = pred.astype(np.complex64)
        elif mutation == "object":
            pred = pred.astype(object)
        elif mutation == "noncontig":
            pred = np.repeat(pred, 2, axis=-1)[..., ::2]
            clean = (np.ascontiguousarray(pred), target)
        elif mutation == "readonly":
            pred.setflags(write=False)
            clean = (pred.copy(), target)
        elif mutation == "list":
            clean = (np.asarray(pred.tolist()), target)
            pred = pred.tolist()
        elif mutation in ("nan", "inf"):
            pred = pred.copy()
            pred.flat[0] = np.nan if mutation == "nan" else np.inf
        elif mutation in ("huge", "tiny"):
            if name != "BCE":
                pred = pred * pred.dtype.type(1e30 if mutation == "huge" else 1e-30)
        elif mutation == "bce_out_of_range" and name == "BCE":
            pred = pred + 1.5
        value = clear_error_or_result((name,), lambda: loss.forward(pred, target), bad_shape)
        if value is REJECTED:
            if mutation == "valid" or clean is not None:
                raise ContractViolation(f"{name} rejected a valid {mutation} input")
            if mutation in ("huge", "tiny") and name in ("CrossEntropy", "BCEWithLogits"):
                raise ContractViolation(f"{name} rejected finite {mutation} logits")
            return
        if mutation in ("label_high", "label_negative") and name == "CrossEntropy" \
                and np.asarray(target).dtype.kind == "i":
            raise ContractViolation(f"CrossEntropy accepted out-of-range labels and gave {value}")
        if mutation == "bce_out_of_range" and name == "BCE" and not np.isfinite(value):
            raise ContractViolation(f"BCE gave {value} for probabilities outside [0, 1] instead of an error")
        if reduction == "none":
            assert isinstance(value, np.ndarray), type(value)
            dy = np.ones(value.shape, value.dtype)
        else:
            assert isinstance(value, float), type(value)
            dy = None
        if mutation in ("valid", "tiny", "huge") and name in ("CrossEntropy", "BCEWithLogits"):
            assert np.isfinite(value).all(), f"{name}: {value} for finite {mutation} logits"
        if mutation in ("valid", "tiny") and name in ("MSE", "BCE"):
            assert np.isfinite(value).all(), f"{name}: {value} for {mutation} input"
        if mutation == "nan":
            assert np.isnan(value).any(), f"{name}: NaN input gave {value}"
        grad = loss.backward(dy)
        grads = grad if isinstance(grad, tuple) else (grad,)
        for g in grads:
            assert g.shape == np.shape(pred), f"{name}: gradient {g.shape} for pred {np.shape(pred)}"
        if clean is not None:
            fresh = getattr(fl, name)(reduction=reduction)
            assert same(fresh.forward(*clean), value), f"{name}: {mutation} input changed the loss"
            again = fresh.backward(dy)
            assert all(same(a, b) for a, b in zip(grads, (again,) if not isinstance(grad, tuple)
                                                  else again)), f"{name}: {mutation} changed the gradient"

    @given(st.data())
    @_case
    def fuzz_loss_backward_before_forward(data):
        name = data.draw(st.sampled_from(LOSSES))
        assert clear_error_or_result((name,), getattr(fl, name)().backward,
                                     accept=(RuntimeError, ValueError)) is REJECTED

    # ---- optimizers ----------------------------------------------------------------------------
    OPTIMIZERS = {"SGD": fo.SGD, "AdaGrad": fo.AdaGrad, "RMSProp": fo.RMSProp, "Adam": fo.Adam,
                  "AdamW": fo.AdamW}

    def _hyper(draw, name, valid):
        lr_ok = st.floats(1e-4, 1.0)
        lr_bad = st.sampled_from([-1.0, float("nan"), float("inf"), "0.1", None])
        kw = {"lr": draw(lr_ok if valid else st.one_of(lr_ok, lr_bad), label="lr")}
        if name == "SGD":
            kw["momentum"] = draw(st.sampled_from([0.0, 0.9] + ([] if valid else [-0.5, float("nan")])))
            kw["nesterov"] = draw(st.booleans()) if kw["momentum"] == 0.9 else False
            if not valid and draw(st.booleans()):
                kw["nesterov"] = True
            kw["weight_decay"] = draw(st.sampled_from([0.0, 1e-2] + ([] if valid else [-1.0])))
        if name in ("Adam", "AdamW"):
            ok = st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 0.9, 0.999]))
            badb = st.sampled_from([(1.0, 0.999), (0.9, 1.0), (-0.1, 0.9), (0.9,), "ab"])
            kw["betas"] = draw(ok if valid else st.one_of(ok, badb))
            kw["eps"] = draw(st.sampled_from([1e-8] + ([] if valid else [-1e-8, 0.0])))
        if name == "RMSProp":
            kw["alpha"] = draw(st.sampled_from([0.9, 0.99] + ([] if valid else [-0.1, 1.5])))
        if name == "AdaGrad":
            kw["eps"] = draw(st.sampled_from([1e-10] + ([] if valid else [-1.0])))
        return kw

    def _params(draw, dtype, count):
        out = []
        for i in range(count):
            shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
            rng = np.random.default_rng(i)
            p = L.Parameter(f"p{i}", rng.standard_normal(shape).astype(dtype))
            p.grad = rng.standard_normal(shape).astype(dtype)
            out.append(p)
        return out

    def _clone(params):
        out = []
        for p in params:
            q = L.Parameter(p.name, np.array(p.data, copy=True))
            q.grad = np.array(p.grad, copy=True)
            out.append(q)
        return out

    @given(st.data())
    @_case
    def fuzz_optimizers(data):
        draw = data.draw
        name = draw(st.sampled_from(sorted(OPTIMIZERS)), label="optimizer")
        cls = OPTIMIZERS[name]
        dtype = draw(st.sampled_from(FLOATS), label="dtype")
        valid = draw(st.booleans(), label="valid_hyper")
        kw = _hyper(draw, name, valid)
        params = _params(draw, dtype, draw(st.integers(1, 3)))
        mutation = draw(st.sampled_from(["valid", "grad_shape", "grad_dtype", "data_f16", "noncontig",
                                         "readonly", "nan_grad", "inf_grad", "huge_grad", "empty",
                                         "duplicate", "not_param"]), label="mutation")
        if mutation == "grad_shape":
            params[0].grad = np.zeros(params[0].data.shape + (2,), dtype)
        elif mutation == "grad_dtype":
            params[0].grad = params[0].grad.astype(np.float32 if dtype == np.float64 else np.float64)
        elif mutation == "data_f16":
            params[0].data = params[0].data.astype(np.float16)
            params[0].grad = params[0].grad.astype(np.float16)
        elif mutation == "noncontig":
            big = np.repeat(params[0].data, 2, axis=-1)
            params[0].data = big[..., ::2]
            assert not params[0].data.flags.c_contiguous or params[0].data.size == 1
        elif mutation == "readonly":
            params[0].data.setflags(write=False)
        elif mutation in ("nan_grad", "inf_grad"):
            params[0].grad.flat[0] = np.nan if mutation == "nan_grad" else np.inf
        elif mutation == "huge_grad":
            params[0].grad *= dtype(1e30)
        elif mutation == "empty":
            params = []
        elif mutation == "duplicate":
            params = params + params[:1]
        elif mutation == "not_param":
            params = [np.zeros(3, dtype)]
        before = [np.array(p.data, copy=True) for p in params] if mutation != "not_param" else []
        reference = _clone(params) if mutation in ("valid", "noncontig", "huge_grad") else None

        def make_and_step():
            opt = cls(params, **kw)
            for _ in range(2):
                opt.step()
            return opt
        opt = clear_error_or_result((name,), make_and_step)
        if opt is REJECTED:
            if valid and mutation in ("valid", "nan_grad", "inf_grad", "huge_grad"):
                raise ContractViolation(f"{name}({kw}) rejected a {mutation} case")
            if mutation == "readonly":
                assert same(params[0].data, before[0]), f"{name}: wrote to a read-only parameter"
            return
        bad = {k: v for k, v in kw.items() if not _hyper_ok(k, v)}
        if name == "SGD" and kw["nesterov"] and not kw["momentum"] > 0:
            bad["nesterov"] = True
        if bad:
            raise ContractViolation(f"{name} accepted invalid hyperparameters {bad}")
        if mutation in ("grad_shape", "grad_dtype", "empty", "duplicate", "readonly", "not_param"):
            raise ContractViolation(f"{name} accepted a {mutation} parameter list")
        if reference is None:
            return
        ref_opt = cls(reference, **kw)
        for _ in range(2):
            ref_opt.step()
        for p, q in zip(params, reference):
            assert np.array_equal(np.asarray(p.data), q.data, equal_nan=True), \
                f"{name}({kw}): {mutation} parameter updated differently from a contiguous one"

    def _hyper_ok(key, v):
        """PyTorch's checks: lr, eps, momentum, weight_decay >= 0 (NaN fails), betas in [0, 1)."""
        if key == "betas":
            return isinstance(v, tuple) and len(v) == 2 and all(0 <= b < 1 for b in v)
        if key == "alpha":
            return isinstance(v, float) and 0 <= v <= 1
        if key == "nesterov":
            return True
        return isinstance(v, float) and v >= 0

    @given(st.data())
    @_case
    def fuzz_clip(data):
        draw = data.draw
        dtype = draw(st.sampled_from(FLOATS))
        params = _params(draw, dtype, draw(st.integers(1, 3)))
        max_norm = draw(st.sampled_from([1e-3, 1.0, 1e30, 0.0, -1.0, float("nan"), float("inf")]))
        if draw(st.booleans()):
            params[0].grad.flat[0] = draw(st.sampled_from([np.nan, np.inf, 1e30]))
        fn = draw(st.sampled_from(["clip_grad_norm", "clip_weights"]))
        target = [np.array(p.grad if fn == "clip_grad_norm" else p.data) for p in params]
        result = clear_error_or_result((fn,), lambda: getattr(fo, fn)(params, max_norm))
        if result is REJECTED:
            if max_norm >= 0:
                raise ContractViolation(f"{fn} rejected {max_norm}")
            return
        if not (max_norm >= 0):
            raise ContractViolation(f"{fn} accepted {max_norm}")
        if fn == "clip_weights" and np.isfinite(max_norm):
            assert all(np.all(np.abs(p.data) <= dtype(max_norm)) for p in params)
        if fn == "clip_grad_norm":
            finite = all(np.isfinite(t).all() for t in target)
            if finite:
                total = np.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in params))
                assert total <= max_norm * 1.0001 + 1e-6 or not np.isfinite(total), (total, max_norm)

    # ---- Sequential.fit / evaluate / predict -----------------------------------------------------
    @given(st.data())
    @_case
    def fuzz_fit(data):
        draw = data.draw
        fnn.seed(0)
        features, classes = _pick(draw, 1, 4, "features"), _pick(draw, 2, 4, "classes")
        graph = draw(st.booleans(), label="graph")

        def make():
            if not graph:
                return fnn.Sequential(L.Dense(features, 5), L.ReLU(), L.Dense(5, classes))
            inp = fnn.Input(shape=(features,))
            hidden = L.ReLU()(L.Dense(features, 5, name="hidden")(inp))
            return fnn.Model(inp, L.Dense(5, classes, name="out")(hidden))

        model = make()
        if draw(st.booleans(), label="float64"):
            model.astype(np.float64)
        n = _pick(draw, 1, 12, "n")
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        X = rng.standard_normal((n, features)).astype(np.float32)
        y = rng.integers(0, classes, n)
        kwargs = {"epochs": 1, "batch_size": _pick(draw, 1, 16, "batch"), "verbose": 0}
        mutation = draw(st.sampled_from([
            "valid", "valid", "wrong_features", "wrong_rank", "y_length", "zero_samples", "label_high",
            "label_negative", "X_int", "X_complex", "X_object", "X_f16", "noncontig", "readonly", "nan",
            "inf", "huge", "batch_zero", "batch_float", "batch_bool", "epochs_negative", "loss_unknown",
            "optimizer_bad", "validation_bad", "metrics_bad", "y_float_for_ce", "X_list"]))
        clean = None
        if mutation == "wrong_features":
            X = rng.standard_normal((n, features + 1)).astype(np.float32)
        elif mutation == "wrong_rank":
            X = X[:, :, None]
        elif mutation == "y_length":
            y = y[:-1] if n > 1 else np.concatenate([y, y])
        elif mutation == "zero_samples":
            X, y = X[:0], y[:0]
        elif mutation == "label_high":
            y = y.copy()
            y[-1] = classes + draw(st.integers(0, 5))
        elif mutation == "label_negative":
            y = y.copy()
            y[0] = -1
        elif mutation == "X_int":
            X = np.rint(X * 3).astype(np.int32)
            clean = X.astype(model.dtype)
        elif mutation == "X_complex":
            X = X.astype(np.complex64)
        elif mutation == "X_object":
            X = X.astype(object)
        elif mutation == "X_f16":
            X = X.astype(np.float16)
            clean = X.astype(model.dtype)
        elif mutation == "noncontig":
            X = np.repeat(X, 2, axis=1)[:, ::2]
            clean = np.ascontiguousarray(X)
        elif mutation == "readonly":
            X.setflags(write=False)
            clean = X.copy()
        elif mutation == "X_list":
            clean = X.astype(model.dtype)
            X = X.tolist()
        elif mutation in ("nan", "inf"):
            X = X.copy()
            X[draw(st.integers(0, n - 1)), 0] = np.nan if mutation == "nan" else np.inf
        elif mutation == "huge":
            X = X * np.float32(1e30)
        elif mutation == "batch_zero":
            kwargs["batch_size"] = 0
        elif mutation == "batch_float":
            kwargs["batch_size"] = 2.5
        elif mutation == "batch_bool":
            kwargs["batch_size"] = True
        elif mutation == "epochs_negative":
            kwargs["epochs"] = -1
        elif mutation == "loss_unknown":
            kwargs["loss"] = "hinge"
        elif mutation == "optimizer_bad":
            kwargs["optimizer"] = draw(st.sampled_from(["adamx", 3, None]))
        elif mutation == "validation_bad":
            kwargs["validation_data"] = draw(st.sampled_from([(X,), (X[:, :0], y), (X, y[:0]), "xy"]))
        elif mutation == "metrics_bad":
            kwargs["metrics"] = [draw(st.sampled_from(["accuracyy", 3]))]
        elif mutation == "y_float_for_ce":
            y = y.astype(np.float32) + 0.5
        names = ("fit", "Dense", "CrossEntropy", "Sequential", "Model", "optimizer", "loss", "metric")
        accept = (ValueError, TypeError, fnn.model.NonFiniteError)
        entry = draw(st.sampled_from(["fit", "evaluate", "predict"]), label="entry")
        state = model.state_dict()

        def call(model, X):
            if entry == "fit":
                return model.fit(X, y, **kwargs)
            if entry == "evaluate":
                return model.evaluate(X, y, batch_size=kwargs["batch_size"])
            return model.predict(X, batch_size=kwargs["batch_size"])
        names = names + (entry,)
        result = clear_error_or_result(names, lambda: call(model, X), accept=accept)
        if result is REJECTED:
            if mutation == "valid" or (clean is not None and mutation != "X_int"):
                raise ContractViolation(f"{entry} rejected a valid {mutation} case")
            return
        if mutation in ("wrong_features", "zero_samples", "batch_zero", "batch_float",
                        "batch_bool", "X_complex", "X_object") or (mutation == "wrong_rank" and features > 1) or \
                (entry != "predict" and mutation in ("y_length", "label_high", "label_negative",
                                                      "y_float_for_ce")) or \
                (entry == "fit" and mutation == "loss_unknown") or \
                (entry == "fit" and mutation in ("epochs_negative", "optimizer_bad", "validation_bad",
                                                  "metrics_bad", "nan", "inf")):
            raise ContractViolation(f"{entry} accepted {mutation} and returned {result!r}")
        if clean is not None:
            twin = make().astype(model.dtype)
            twin.load_state_dict(state)
            fnn.seed(0)
            model.load_state_dict(state)
            first = call(model, X)
            fnn.seed(0)
            second = call(twin, clean)
            if entry == "fit":
                assert first.history == second.history
                assert all(same(a, b) for a, b in zip(model.state_dict().values(),
                                                      twin.state_dict().values()))
            elif entry == "evaluate":
                assert first == second
            else:
                assert same(first, second)

    GROUP_TESTS = {
        "layers": [fuzz_layer_forward_backward, fuzz_layer_constructors],
        "losses": [fuzz_losses, fuzz_loss_backward_before_forward],
        "optim": [fuzz_optimizers, fuzz_clip],
        "model": [fuzz_fit],
    }


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
