"""Every float32 elementwise function against float64 math, in ulps, per element, over the whole
float32 range: magnitudes 1e-38..88.7 of both signs, subnormals, 0, -0, +-inf, NaN and the
neighbours of the implementations' cutoffs (fastnn.testing.ulp.float32_sweep).

Covered: numba's vectorised exp/tanh/sigmoid (_fastmath.py) and the kernels built on them
(activations forward and backward, softmax, log-softmax, the cross-entropy's probabilities and
gradient), the activation layers, the C functions of kernels/vecmath.h through the dense GEMM epilogue
and the recurrent kernels, and the RNN/LSTM/GRU cells' gates driven through the layers (one step
with W_hh = 0, zero state unless stated, W_ih = I and zero biases, so the gates' pre-activations
are exactly the chosen float32 inputs) and through the kernels (with +-inf and NaN, which a
GEMM with an identity matrix cannot carry). Backward passes that are functions of a forward
output y (dx = dy * (1 - y^2), ...) are compared with float64 math on that same float32 y.
"""
import numpy as np
import pytest
from numba import njit

from fastnn import _core as K
from fastnn import layers as L
from fastnn._core import threads as threads_module
from fastnn._core._fastmath import _exp_diff, _fast_exp, _fast_sigmoid, _fast_tanh
from fastnn._core.tuning import tuning
from fastnn.testing.ulp import assert_ulp, float32_sweep, ulp_error

# the cutoffs of kernels/vecmath.h / _fastmath.py: the tanh polynomial's end, exp's clamps, the last
# finite exp, the end of the normal and of the subnormal results, where tanh rounds to +-1
CUTOFFS = (0.625, 9.01, 44.36, 52.0, 87.3365, 88.3762626647949, 88.7228, 89.0, 103.2789, 103.9721,
           104.0)
X = float32_sweep(points=3000, around=CUTOFFS)
FINITE = X[np.isfinite(X)]
FUNCTION_ULP = 3  # one function: exp, tanh, sigmoid (worst over every float32: 1.0, 1.5, 2.4)
CELL_ULP = 8  # a cell's output, a few functions and products composed


def f64(a):
    return np.asarray(a, dtype=np.float64)


def sigmoid64(x):
    x = f64(x)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0, e) / (1.0 + e)


def tanh64(x):
    return np.tanh(f64(x))


def sech2_64(x):
    with np.errstate(over="ignore"):
        return 1.0 / np.cosh(f64(x)) ** 2


@pytest.fixture(params=["serial", "parallel"])
def path(request):
    """The numba kernels' serial twin or parallel version, whatever the input size."""
    saved = threads_module.PARALLEL_MIN_WORK
    threads_module.PARALLEL_MIN_WORK = 0 if request.param == "parallel" else 1 << 62
    yield request.param
    threads_module.PARALLEL_MIN_WORK = saved


# ---- numba's vectorised functions -----------------------------------------------------------------

@njit(cache=False)
def _apply_fastmath(x, y, out_exp, out_tanh, out_sigmoid, out_diff):
    for i in range(x.shape[0]):
        out_exp[i] = _fast_exp(x[i])
        out_tanh[i] = _fast_tanh(x[i])
        out_sigmoid[i] = _fast_sigmoid(x[i])
        out_diff[i] = _exp_diff(x[i], y[i], 0)


def test_numba_exp_tanh_sigmoid_are_accurate_over_the_whole_range():
    x = np.concatenate([X, float32_sweep(points=100, specials=False, around=np.arange(-104, 90, 0.5))])
    y = np.random.default_rng(0).permutation(x)
    outs = [np.empty_like(x) for _ in range(4)]
    _apply_fastmath(x, y, *outs)
    with np.errstate(over="ignore", invalid="ignore"):
        assert_ulp(outs[0], np.exp(f64(x)), FUNCTION_ULP, x, "exp")
        assert_ulp(outs[1], tanh64(x), FUNCTION_ULP, x, "tanh")
        assert_ulp(outs[2], sigmoid64(x), FUNCTION_ULP, x, "sigmoid")
        # exp(x - y) as if the float32 difference were exact (x - y itself overflows here)
        assert_ulp(outs[3], np.exp(f64(x) - f64(y)), FUNCTION_ULP, x, "exp(x - y)")
    # the subnormal results are there (not flushed to 0), the ends exact
    assert outs[0][x == np.float32(-100)][0] > 0
    assert outs[2][x == np.float32(-100)][0] > 0
    assert outs[1][x == np.float32(1e-38)][0] == np.float32(1e-38)  # tanh(x) = x for tiny x
    np.testing.assert_array_equal(np.signbit(outs[1][x == 0]), np.signbit(x[x == 0]))  # tanh(-0) = -0


# ---- activation kernels and layers --------------------------------------------------------------

def test_sigmoid_and_tanh_kernels(path):
    for forward, backward, want, name in ((K.sigmoid_forward, K.sigmoid_backward, sigmoid64, "sigmoid"),
                                          (K.tanh_forward, K.tanh_backward, tanh64, "tanh")):
        y = np.empty_like(X)
        forward(X, y)
        assert_ulp(y, want(X), FUNCTION_ULP, X, f"{name}_forward ({path})")
        if name == "tanh":  # odd: the sign of a zero too
            np.testing.assert_array_equal(np.signbit(y[X == 0]), np.signbit(X[X == 0]))
        dy = np.random.default_rng(1).standard_normal(X.shape).astype(np.float32)
        dx = np.empty_like(X)
        backward(y, dy, dx)
        y64 = f64(y)
        grad = y64 * (1 - y64) if name == "sigmoid" else (1 - y64) * (1 + y64)
        assert_ulp(dx, f64(dy) * grad, 2, y, f"{name}_backward ({path})")


def test_relu_and_leaky_relu_kernels(path):
    dy = np.random.default_rng(2).standard_normal(X.shape).astype(np.float32)
    out, dx = np.empty_like(X), np.empty_like(X)
    K.relu_forward(X, out)
    assert_ulp(out, np.where(f64(X) > 0, f64(X), np.where(np.isnan(X), np.nan, 0.0)), 0, X, "relu")
    K.relu_backward(X, dy, dx)
    assert_ulp(dx, np.where(X <= 0, 0.0, f64(dy)), 0, X, "relu_backward")  # NaN passes dy, as torch
    K.leaky_relu_forward(X, 0.2, out)  # the slope rounded to float32, then one rounding
    assert_ulp(out, np.where(X > 0, f64(X), 0.2 * f64(X)), 1, X, "leaky_relu")
    K.leaky_relu_backward(X, dy, 0.2, dx)
    assert_ulp(dx, np.where(X > 0, f64(dy), 0.2 * f64(dy)), 1, X, "leaky_relu_backward")


@pytest.mark.parametrize("n", [X.size, 100])  # the kernels' parallel and serial dispatch
def test_activation_layers_forward_and_backward(n):
    x = np.random.default_rng(3).permutation(X)[:n]
    dy = np.random.default_rng(4).standard_normal(x.shape).astype(np.float32)
    for layer, want, grad in ((L.Sigmoid(), sigmoid64, lambda y: y * (1 - y)),
                              (L.Tanh(), tanh64, lambda y: (1 - y) * (1 + y))):
        name = type(layer).__name__
        y = layer.forward(x)
        assert_ulp(y, want(x), FUNCTION_ULP, x, f"{name}.forward")
        assert_ulp(layer.backward(dy), f64(dy) * grad(f64(y)), 2, y, f"{name}.backward")


def _rows(cols, seed):
    """The finite sweep values shuffled into rows: each row mixes magnitudes, so the softmax
    outputs span normal, subnormal and zero probabilities."""
    x = np.random.default_rng(seed).permutation(FINITE)
    return x[: x.size // cols * cols].reshape(-1, cols)


def _log_softmax64(x):
    x = f64(x)
    top = np.argmax(x, axis=1)[:, None]
    shifted = x - np.take_along_axis(x, top, axis=1)
    e = np.exp(shifted)
    np.put_along_axis(e, top, 0.0, axis=1)
    return shifted - np.log1p(e.sum(1, keepdims=True))  # the top's own 1 kept out of the sum


@pytest.mark.parametrize("cols", [2, 8, 37])
def test_softmax_family(path, cols):
    x = _rows(cols, cols)
    want = _log_softmax64(x)
    out = np.empty_like(x)
    K.softmax_forward(x, out)
    assert_ulp(out, np.exp(want), FUNCTION_ULP, x, "softmax_forward")
    y = out.copy()
    K.log_softmax_forward(x, out)
    assert_ulp(out, want, 4, x, "log_softmax_forward")
    # backward: y (dy - <dy, y>) is a row's reduction that cancels where one y is near 1, not an
    # elementwise function: per element within a few roundings of its terms' size
    dy = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    K.softmax_backward(y, dy, out)
    y64, dy64 = f64(y), f64(dy)
    dot = (dy64 * y64).sum(1, keepdims=True)
    bound = 4 * 2.0**-24 * y64 * (np.abs(dy64) + np.abs(dy64 * y64).sum(1, keepdims=True)) + 2.0**-149
    assert np.all(np.abs(out - y64 * (dy64 - dot)) <= bound), "softmax_backward"
    layer = L.Softmax()
    assert_ulp(layer.forward(x), np.exp(want), FUNCTION_ULP, x, "Softmax.forward")


@pytest.mark.parametrize("cols", [2, 8, 37])
def test_cross_entropy_probabilities_and_gradient(path, cols):
    x = _rows(cols, cols + 1)
    target = np.random.default_rng(6).integers(0, cols, len(x))
    want = np.exp(_log_softmax64(x))
    probs = np.empty_like(x)
    K.softmax_cross_entropy_forward(x, target, probs)
    assert_ulp(probs, want, FUNCTION_ULP, x, "softmax_cross_entropy_forward probs")
    soft = np.random.default_rng(7).random(x.shape).astype(np.float32)
    K.soft_cross_entropy_forward(x, soft, probs)
    assert_ulp(probs, want, FUNCTION_ULP, x, "soft_cross_entropy_forward probs")
    K.softmax_cross_entropy_forward(x, target, probs)
    grad = np.empty_like(x)
    K.softmax_cross_entropy_backward(probs, target, 0.5, grad)
    onehot = np.eye(cols)[target]
    assert_ulp(grad, 0.5 * (f64(probs) - onehot) / len(x), 1, probs, "softmax_cross_entropy_backward")


# ---- C: the dense epilogue ------------------------------------------------------------------------

@pytest.mark.parametrize("microkernel", [True, False])
def test_dense_epilogue_activations(microkernel):
    # x = 0 and W = 0: the GEMM gives 0 exactly and the epilogue sees bias, the swept values
    # (infinities and NaN included)
    x, w = np.zeros((3, 16), np.float32), np.zeros((X.size, 16), np.float32)
    with tuning(dense_microkernel=microkernel):
        for act, want in (("sigmoid", sigmoid64), ("tanh", tanh64)):
            out = K.dense_forward(x, w, X, np.empty((3, X.size), np.float32), act)
            assert_ulp(out, want(X)[None, :], FUNCTION_ULP, np.broadcast_to(X, out.shape),
                       f"dense_forward {act} epilogue")
            if act == "tanh":  # the bias -0 reaches it as 0 + -0 = +0: tanh(+0) = +0
                assert not np.signbit(out[:, X == 0]).any()


# ---- recurrent cells: the gates through the layers -------------------------------------------------

H = 37  # not a multiple of the 16 lanes: the vector loops' tails are checked too


def _cell(cls, gates, b_hn=0.0):
    layer = cls(gates * H, H)
    layer.weight_ih.data[...] = np.eye(gates * H, dtype=np.float32)
    for p in (layer.weight_hh, layer.bias_ih, layer.bias_hh):
        p.data[...] = 0
    if cls is L.GRU:
        layer.bias_hh.data[2 * H:] = b_hn  # n = tanh(x_n + r * b_hn)
    return layer


def _pre(gates, seed):
    """Per gate a (rows, H) block of the finite sweep values, shuffled independently."""
    rng = np.random.default_rng(seed)
    rows = FINITE.size // H
    return [rng.permutation(FINITE)[: rows * H].reshape(rows, H) for _ in range(gates)]


def _step(layer, blocks, **state):
    x = np.concatenate(blocks, axis=1)[:, None, :]  # (N, T=1, gates * H)
    return layer.forward(x, **state)[:, 0]


@pytest.fixture(params=[True, False], ids=["vector-gates", "plain-gates"])
def lstm_gates(request):
    """The LSTM's AVX-512 gate pass (where the build has it) or the auto-vectorised C loops."""
    with tuning(rnn_vector_gates=request.param):
        yield request.param


def test_rnn_cell_through_the_layer():
    (a,) = _pre(1, 10)
    assert_ulp(_step(_cell(L.RNN, 1), [a]), tanh64(a), FUNCTION_ULP, a, "RNN h = tanh(a)")


def test_lstm_cell_through_the_layer(lstm_gates):
    i, f, g, o = _pre(4, 11)
    layer = _cell(L.LSTM, 4)
    # c0 = 0: c = sigmoid(i) tanh(g), h = sigmoid(o) tanh(c)
    c = sigmoid64(i) * tanh64(g)
    assert_ulp(_step(layer, [i, f, g, o]), sigmoid64(o) * np.tanh(c), CELL_ULP, None, "LSTM h (c0 = 0)")
    # c0 = 1 and the input gate shut (sigmoid(-200) is 0 in float32): c = sigmoid(f)
    ones = np.ones((len(i), H), np.float32)
    shut = np.full_like(i, -200.0)
    h = _step(layer, [shut, f, g, o], c0=ones)
    assert_ulp(h, sigmoid64(o) * np.tanh(sigmoid64(f)), CELL_ULP, None, "LSTM h (forget gate)")


def test_gru_cell_through_the_layer():
    r, z, n = _pre(3, 12)
    zeros = np.zeros_like(r)
    # h0 = 0: h = (1 - z) tanh(n), with 1 - z = sigmoid(-z) (no cancellation where z -> 1)
    h = _step(_cell(L.GRU, 3), [r, z, n])
    assert_ulp(h, sigmoid64(-f64(z)) * tanh64(n), CELL_ULP, None, "GRU h (h0 = 0)")
    # h0 = 1, n = tanh(0) = 0: h = z
    h = _step(_cell(L.GRU, 3), [r, z, zeros], h0=np.ones_like(r))
    assert_ulp(h, sigmoid64(z), CELL_ULP, z, "GRU h = z")
    # b_hn = 1, x_n = 0: n = tanh(r), h = (1 - z) tanh(sigmoid(r))
    h = _step(_cell(L.GRU, 3, b_hn=1.0), [r, z, zeros])
    assert_ulp(h, sigmoid64(-f64(z)) * np.tanh(sigmoid64(r)), CELL_ULP, None, "GRU h (reset gate)")


# ---- recurrent kernels: gates, cell and the backward's elementwise part, specials included --------

def _kernel_pre(gates, seed):
    """xw (T=1, N, gates * H) from the whole sweep (infinities, NaN) for every gate."""
    rng = np.random.default_rng(seed)
    rows = X.size // H
    return np.concatenate([rng.permutation(X)[: rows * H].reshape(rows, H) for _ in range(gates)],
                          axis=1)[None]


def test_rnn_kernels_forward_and_backward():
    xw = _kernel_pre(1, 20)
    n = xw.shape[1]
    hs = np.zeros((2, n, H), np.float32)
    K.rnn_forward(xw, np.zeros((H, H), np.float32), np.zeros(H, np.float32), hs)
    with np.errstate(invalid="ignore"):
        assert_ulp(hs[1], tanh64(xw[0]), FUNCTION_ULP, xw[0], "rnn_forward h")
    zero = xw[0] == 0  # -0 + 0 (h @ W_hh) + 0 (b_hh) is +0: tanh(+0) = +0
    assert not np.signbit(hs[1][zero]).any()
    dhs = np.random.default_rng(21).standard_normal((1, n, H)).astype(np.float32)
    dpre, dh0 = np.empty_like(dhs), np.empty((n, H), np.float32)
    K.rnn_backward(np.zeros((H, H), np.float32), hs, dhs, dpre, dh0)
    h = f64(hs[1])
    assert_ulp(dpre[0], f64(dhs[0]) * (1 - h) * (1 + h), 2, hs[1], "rnn_backward dpre")


def test_lstm_kernels_forward_and_backward(lstm_gates):
    xw = _kernel_pre(4, 22)
    n = xw.shape[1]
    hs, cs = np.zeros((2, n, H), np.float32), np.zeros((2, n, H), np.float32)
    cs[0] = np.random.default_rng(23).standard_normal((n, H))
    gates = np.empty((1, n, 4 * H), np.float32)
    K.lstm_forward(xw, np.zeros((4 * H, H), np.float32), np.zeros(4 * H, np.float32), hs, cs, gates)
    a = [xw[0, :, k * H:(k + 1) * H] for k in range(4)]
    want = [sigmoid64(a[0]), sigmoid64(a[1]), tanh64(a[2]), sigmoid64(a[3])]
    with np.errstate(invalid="ignore"):
        for k, name in enumerate("ifgo"):
            assert_ulp(gates[0, :, k * H:(k + 1) * H], want[k], FUNCTION_ULP, a[k], f"lstm gate {name}")
        # the cell from the float32 gates, against float64 math on them where its sum of two
        # products does not cancel (there the product's rounding is all there is)
        i, f, g, o = (f64(gates[0, :, k * H:(k + 1) * H]) for k in range(4))
        c = f * f64(cs[0]) + i * g
        ok = np.abs(c) >= 0.5 * (np.abs(f * f64(cs[0])) + np.abs(i * g))
        assert_ulp(cs[1][ok], c[ok], 3, None, "lstm c")  # two products and a sum, without FMA
        np.testing.assert_array_equal(np.isnan(cs[1]), np.isnan(c))
        assert_ulp(hs[1], o * np.tanh(f64(cs[1])), FUNCTION_ULP + 1, cs[1], "lstm h")
    # backward, one step: dc = dh o (1 - tanh(c)^2), then the gates' y-based derivatives
    dhs = np.random.default_rng(24).standard_normal((1, n, H)).astype(np.float32)
    dpre = np.empty((1, n, 4 * H), np.float32)
    dh0, dc0 = np.empty((n, H), np.float32), np.empty((n, H), np.float32)
    K.lstm_backward(np.zeros((4 * H, H), np.float32), cs, gates, dhs, dpre, dh0, dc0)
    dh = f64(dhs[0])
    with np.errstate(invalid="ignore"):
        dc = dh * o * sech2_64(cs[1])
        want = [dc * g * i * (1 - i), dc * f64(cs[0]) * f * (1 - f), dc * i * (1 - g) * (1 + g),
                dh * np.tanh(f64(cs[1])) * o * (1 - o)]
        for k, name in enumerate("ifgo"):
            assert_ulp(dpre[0, :, k * H:(k + 1) * H], want[k], CELL_ULP, cs[1], f"lstm_backward d{name}")
        assert_ulp(dc0, dc * f, CELL_ULP, cs[1], "lstm_backward dc0")


def test_gru_kernels_forward_and_backward():
    xw = _kernel_pre(3, 25)
    n = xw.shape[1]
    hs = np.zeros((2, n, H), np.float32)
    hs[0] = np.random.default_rng(26).standard_normal((n, H))
    gates, hn = np.empty((1, n, 3 * H), np.float32), np.empty((1, n, H), np.float32)
    b_hh = np.zeros(3 * H, np.float32)
    K.gru_forward(xw, np.zeros((3 * H, H), np.float32), b_hh, hs, gates, hn)
    a = [xw[0, :, k * H:(k + 1) * H] for k in range(3)]
    with np.errstate(invalid="ignore"):
        want = [sigmoid64(a[0]), sigmoid64(a[1]), tanh64(f64(a[2]) + sigmoid64(a[0]) * 0.0)]  # NaN r: NaN n
        for k, name in enumerate("rzn"):
            assert_ulp(gates[0, :, k * H:(k + 1) * H], want[k], FUNCTION_ULP, a[k], f"gru gate {name}")
        # h = (1 - z) n + z h0, 1 - z from z's pre-activation; the sum may cancel, so each term
        # is checked with h0 = 0 by the layer test above; here: h0 != 0 against float64 math
        h = sigmoid64(-f64(a[1])) * f64(gates[0, :, 2 * H:]) + f64(gates[0, :, H:2 * H]) * f64(hs[0])
        ok = np.abs(h) >= 0.25 * (np.abs(f64(gates[0, :, 2 * H:])) + np.abs(f64(hs[0])))  # no cancellation
        assert_ulp(hs[1][ok], h[ok], CELL_ULP, None, "gru h")
        np.testing.assert_array_equal(np.isnan(hs[1]), np.isnan(h))
    dhs = np.random.default_rng(27).standard_normal((1, n, H)).astype(np.float32)
    hn[0] = np.random.default_rng(28).standard_normal((n, H))  # the backward reads it: make dr non-zero
    dpre_x, dpre_h = np.empty((1, n, 3 * H), np.float32), np.empty((1, n, 3 * H), np.float32)
    dh0 = np.empty((n, H), np.float32)
    K.gru_backward(np.zeros((3 * H, H), np.float32), hs, gates, hn, dhs, dpre_x, dpre_h, dh0)
    r, z, nn = (f64(gates[0, :, k * H:(k + 1) * H]) for k in range(3))
    dh = f64(dhs[0])
    with np.errstate(invalid="ignore"):
        dn = dh * (1 - z) * (1 - nn) * (1 + nn)
        assert_ulp(dpre_x[0, :, 2 * H:], dn, CELL_ULP, None, "gru_backward dn")
        assert_ulp(dpre_x[0, :, :H], dn * f64(hn[0]) * r * (1 - r), CELL_ULP, None, "gru_backward dr")
        dz = dh * (f64(hs[0]) - nn) * z * (1 - z)
        assert_ulp(dpre_x[0, :, H:2 * H], dz, CELL_ULP, None, "gru_backward dz")


def _smooth_references():
    """float64 GELU (exact and tanh form), SiLU and ELU, and their derivatives, elementwise."""
    from scipy.special import erfc

    def sigmoid(z):
        return sigmoid64(z)

    def gelu(x):
        with np.errstate(invalid="ignore"):
            y = 0.5 * x * erfc(-x / np.sqrt(2.0))
        return np.where(np.isneginf(x), -0.0, y)

    def gelu_grad(x):
        with np.errstate(invalid="ignore", over="ignore"):
            g = 0.5 * erfc(-x / np.sqrt(2.0)) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
        return np.where(np.isinf(x), (x > 0).astype(np.float64), g)

    def u(x):
        return np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)

    def gelu_tanh(x):
        with np.errstate(invalid="ignore", over="ignore"):
            y = x * sigmoid(2 * u(x))
        return np.where(np.isneginf(x), -0.0, y)

    def gelu_tanh_grad(x):
        with np.errstate(invalid="ignore", over="ignore"):
            s = sigmoid(2 * u(x))
            g = s + x * 2 * s * (1 - s) * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x * x)
        return np.where(np.isinf(x), (x > 0).astype(np.float64), g)

    def silu(x):
        with np.errstate(invalid="ignore"):
            y = x * sigmoid(x)
        return np.where(np.isneginf(x), -0.0, y)

    def silu_grad(x):
        with np.errstate(invalid="ignore"):
            s = sigmoid(x)
            g = s * (1 + x * (1 - s))
        return np.where(np.isinf(x), (x > 0).astype(np.float64), g)

    return {
        "gelu": (lambda x, o: K.gelu_forward(x, o), gelu, lambda x, d, o: K.gelu_backward(x, d, o), gelu_grad),
        "gelu-tanh": (lambda x, o: K.gelu_forward(x, o, "tanh"), gelu_tanh,
                      lambda x, d, o: K.gelu_backward(x, d, o, "tanh"), gelu_tanh_grad),
        "silu": (K.silu_forward, silu, K.silu_backward, silu_grad),
        "elu": (lambda x, o: K.elu_forward(x, 0.7, o), lambda x: np.where(x > 0, x, 0.7 * np.expm1(x)),
                lambda x, d, o: K.elu_backward(x, d, 0.7, o),
                lambda x: np.where(x > 0, 1.0, 0.7 * np.exp(x))),
    }


@pytest.mark.parametrize("name", ["gelu", "gelu-tanh", "silu", "elu"])
def test_smooth_activations_forward_and_backward(path, name):
    """GELU, SiLU and ELU are computed in float64 and rounded once: within 1 ulp, forward and
    backward (dy = 1 and a random dy), tiny, subnormal, saturated, +-inf and NaN included."""
    forward, ref, backward, ref_grad = _smooth_references()[name]
    out = np.empty_like(X)
    forward(X, out)
    assert_ulp(out, ref(f64(X)), 1, X, f"{name} forward")
    dy = np.random.default_rng(0).uniform(-2, 2, X.shape).astype(np.float32)
    dx = np.empty_like(X)
    backward(X, dy, dx)
    assert_ulp(dx, f64(dy) * ref_grad(f64(X)), 1, X, f"{name} backward")


def test_ulp_error_measures_what_it_says():
    want = np.array([1.0, 1.0, 2.0**-149, 0.0, np.inf, np.nan, 3.4e38, 1e39])
    got = np.array([1.0, np.nextafter(np.float32(1), 2), 0.0, 2.0**-148, np.inf, np.nan,
                    np.inf, np.inf], np.float32)
    np.testing.assert_array_equal(ulp_error(got, want), [0, 1, 1, 2, 0, 0, np.inf, 0])
    with pytest.raises(AssertionError, match="1 of 2 elements beyond 0.5 ulp"):
        assert_ulp(np.float32([1.0, 1.5]), [1.0, 1.5 + 2.0**-22], 0.5)
