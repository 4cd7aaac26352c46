"""Every worked numeric example of the lecture notes (shared/seeds/000-004), computed by fastnn.

Where a note slips, the test pins the correct value and says what the note wrote. Each test
names its note: 000 backprop / GAN / PSNR, 001 CNN operations, 002 the 5x5-digit CNN and DCGAN
loss, 003 "Deep Learning from Scratch", 004 GAN theory.
"""
import math

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _core
from fastnn import layers as L
from fastnn import losses, zoo


def f64(a):
    return np.asarray(a, dtype=np.float64)


# --- 000: the W5 backprop example ---------------------------------------------------------------
# The note's network: 2 inputs -> 2 sigmoid hidden units (h1, h2) -> 2 sigmoid outputs (o1, o2),
# z3 = h1*W5 + h2*W6 (+ b2), E_total = 1/2 (tar1 - out1)^2 + 1/2 (tar2 - out2)^2. The note gives
# the chain rule but no numbers; these are the numbers of the widely used worked example it
# follows (inputs 0.05/0.10, W1..W8 = 0.15..0.55, biases 0.35/0.60, targets 0.01/0.99). Its
# published values were computed from rounded intermediates: they agree to ~3e-9.
X_W5 = f64([[0.05, 0.10]])
T_W5 = f64([[0.01, 0.99]])


def w5_network():
    hidden, out = L.Dense(2, 2).astype(np.float64), L.Dense(2, 2).astype(np.float64)
    hidden.load_state_dict({"weight": f64([[0.15, 0.20], [0.25, 0.30]]), "bias": f64([0.35, 0.35])})
    out.load_state_dict({"weight": f64([[0.40, 0.45], [0.50, 0.55]]), "bias": f64([0.60, 0.60])})
    return fnn.Sequential(hidden, L.Sigmoid(), out, L.Sigmoid()).astype(np.float64)


def e_total(model):
    # E_total = 1/2 * sum of squares: half of MSE(reduction="sum")
    return 0.5 * losses.MSE(reduction="sum").forward(model.forward(X_W5), T_W5)


def test_000_w5_forward_pass_and_total_error():
    model = w5_network()
    h = model.layers[1].forward(model.layers[0].forward(X_W5))
    np.testing.assert_allclose(h, [[0.593269992, 0.596884378]], atol=1e-9)
    np.testing.assert_allclose(model.forward(X_W5), [[0.75136507, 0.772928465]], atol=1e-8)
    assert e_total(model) == pytest.approx(0.298371109, abs=5e-9)


def test_000_w5_gradient_chain_rule_analytic_and_numerical():
    model = w5_network()
    loss = losses.MSE(reduction="sum")
    out = model.forward(X_W5)
    model.zero_grad()
    loss.forward(out, T_W5)
    model.backward(0.5 * loss.backward())
    library = model.layers[2].weight.grad[0, 0]        # dE/dW5 (o1 <- h1)
    h1 = model.layers[1].forward(model.layers[0].forward(X_W5))[0, 0]
    out1, tar1 = out[0, 0], T_W5[0, 0]
    # the chain rule with the correct sign: dE/dout1 = -(tar1 - out1)
    chain = -(tar1 - out1) * out1 * (1 - out1) * h1
    # central difference on E_total
    w = model.layers[2].weight.data
    w[0, 0] += 1e-6
    up = e_total(model)
    w[0, 0] -= 2e-6
    down = e_total(model)
    w[0, 0] += 1e-6
    numerical = (up - down) / 2e-6
    assert chain == pytest.approx(0.082167041, abs=5e-9)
    assert library == pytest.approx(chain, rel=1e-12)
    assert numerical == pytest.approx(chain, rel=1e-7)
    # the note's dE/dout1 = (tar1 - out1), without the minus, gives the opposite sign: its update
    # W5 - alpha * dE/dW5 would raise the error
    slip = (tar1 - out1) * out1 * (1 - out1) * h1
    assert slip == pytest.approx(-chain)
    assert fnn.gradcheck(model, X_W5, target=T_W5, loss=losses.MSE(reduction="sum")).ok


def test_000_w5_update_lowers_the_error():
    model = w5_network()
    before = e_total(model)
    loss = losses.MSE(reduction="sum")
    model.zero_grad()
    loss.forward(model.forward(X_W5), T_W5)
    model.backward(0.5 * loss.backward())
    fnn.optim.SGD(model.parameters(), lr=0.5).step()     # W5' = W5 - 0.5 * dE/dW5
    assert model.layers[2].weight.data[0, 0] == pytest.approx(0.35891648, abs=1e-8)
    assert e_total(model) < before


# --- 000: PSNR ----------------------------------------------------------------------------------
def test_000_psnr_is_10_log10_of_peak_squared_over_mse():
    a = np.zeros((1, 4, 4))
    b = a.copy()
    b[0, 0, :2] = 0.1                        # MSE = 2 * 0.01 / 16
    assert fnn.metrics.psnr(a, b, 1.0) == pytest.approx(10 * math.log10(1 / (0.02 / 16)))
    assert fnn.metrics.psnr(a, a, 1.0) == math.inf   # MSE = 0: "inf"
    # in 8-bit units the same error has the same PSNR (s = 255 and a 255x larger error)
    assert fnn.metrics.psnr(255 * a, 255 * b, 255) == pytest.approx(fnn.metrics.psnr(a, b, 1.0))


# --- 001: max pooling, nearest upsampling, transposed convolution ----------------------------------
POOL_INPUT = f64([[0, 20, 30, 45],
                  [8, 1, 23, 43],
                  [0, 4, 40, 20],
                  [10, 6, 43, 42]]).reshape(1, 1, 4, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_001_max_pooling_2x2_stride_2(dtype):
    pool = L.MaxPool2D(2, stride=2).astype(dtype)
    y = pool.forward(POOL_INPUT.astype(dtype))
    np.testing.assert_array_equal(y[0, 0], [[20, 45], [10, 43]])
    # the gradient goes to the maximum of each window only
    dx = pool.backward(np.ones_like(y))
    winners = np.zeros((4, 4))
    winners[[0, 0, 3, 3], [1, 3, 0, 2]] = 1         # 20, 45, 10 and the lower 43
    np.testing.assert_array_equal(dx[0, 0], winners)


def test_001_nearest_upsampling_2x2_to_4x4():
    x = f64([[1, 2], [3, 4]]).reshape(1, 1, 2, 2)
    y = L.Upsample2D(2).astype(np.float64).forward(x)
    np.testing.assert_array_equal(y[0, 0], [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])


def transposed(x, kernel, stride=1):
    layer = L.ConvTranspose2D(1, 1, kernel.shape[0], stride=stride, bias=False).astype(np.float64)
    layer.load_state_dict({"weight": kernel.reshape(1, 1, *kernel.shape)})
    return layer.forward(x.reshape(1, 1, *x.shape))[0, 0]


def test_001_transposed_convolution_worked_example():
    x, kernel = f64([[1, 4], [0, 2]]), f64([[2, 2], [1, 1]])
    y = transposed(x, kernel)
    # each input value stamps value * kernel at its position; the stamps add up
    np.testing.assert_array_equal(y, [[2, 10, 8], [1, 9, 8], [0, 2, 2]])
    # the slide's centre is 1*1 + 4*1 = 5: it leaves out the 2*2 of the bottom-right input
    # (and the 0*2 of the bottom-left one)
    assert y[1, 1] == 1 * 1 + 4 * 1 + 0 * 2 + 2 * 2 == 9


def test_001_transposed_convolution_checkerboard():
    # uneven overlap: kernel 3, stride 2 on a constant image gives a 1/2/4 checkerboard;
    # kernel 4 (divisible by the stride) covers the interior evenly
    ones = np.ones((4, 4))
    uneven = transposed(ones, np.ones((3, 3)), stride=2)
    assert set(np.unique(uneven[1:-1, 1:-1])) == {1.0, 2.0, 4.0}
    assert uneven[2, 2] == 4 and uneven[1, 1] == 1 and uneven[1, 2] == 2
    even = transposed(ones, np.ones((4, 4)), stride=2)
    assert np.all(even[2:-2, 2:-2] == 4)


def test_001_leaky_relu_is_max_of_az_and_z():
    z = np.linspace(-3, 3, 13)
    np.testing.assert_array_equal(L.LeakyReLU(0.1).astype(np.float64).forward(z), np.maximum(0.1 * z, z))


# --- 002: the 5x5-digit CNN, the DNN 25-3-3-10, the DCGAN loss ------------------------------------
DIGIT_2 = f64([[0, 0, 1, 1, 0],
               [0, 1, 0, 1, 0],
               [0, 0, 0, 1, 0],
               [0, 0, 1, 0, 0],
               [0, 1, 1, 1, 0]])
PLUS = f64([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def test_002_convolution_of_the_digit_2_with_the_plus_filter():
    conv = L.Conv2D(1, 1, 3, bias=False).astype(np.float64)
    conv.load_state_dict({"weight": PLUS.reshape(1, 1, 3, 3)})
    feature_map = conv.forward(DIGIT_2.reshape(1, 1, 5, 5))[0, 0]
    np.testing.assert_array_equal(feature_map, [[1, 3, 3], [1, 2, 2], [2, 2, 3]])
    # the first window, as the slide works it out element by element
    assert (DIGIT_2[:3, :3] * PLUS).sum() == 1


def test_002_max_pooling_example():
    x = f64([[3, 7, 2, 3], [3, 2, 4, 1], [0, 1, 3, 1], [0, 4, 1, 0]]).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(L.MaxPool2D(2).astype(np.float64).forward(x)[0, 0], [[7, 4], [4, 3]])


def test_002_dnn_25_3_3_10_shapes():
    model, input_shape, loss = zoo.seed_mlp()
    assert input_shape == (25,) and loss == "cross_entropy"
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {"0.weight": (3, 25), "0.bias": (3,), "2.weight": (3, 3), "2.bias": (3,),
                      "4.weight": (10, 3), "4.bias": (10,)}
    assert sum(p.data.size for p in model.parameters()) == 25 * 3 + 3 + 3 * 3 + 3 + 3 * 10 + 10 == 130
    x = np.zeros((7, 25), np.float32)               # a 5x5 image flattened to 25 inputs
    assert model.forward(x).shape == (7, 10)
    # the target of the digit 3 is the one-hot vector with a 1 in the fourth place (index 3)
    assert losses.CrossEntropy().forward(model.forward(x[:1]), np.eye(10)[[3]]) == pytest.approx(
        losses.CrossEntropy().forward(model.forward(x[:1]), np.array([3])))


def test_002_dcgan_discriminator_loss_example():
    # D(fake) = 0.2 against target 0 gives L1, D(real) = 0.9 against target 1 gives L2,
    # the discriminator's loss is L1 + L2
    per = losses.BCE(reduction="none").forward(f64([0.2, 0.9]), f64([0.0, 1.0]))
    np.testing.assert_allclose(per, [-math.log(0.8), -math.log(0.9)], rtol=1e-15)
    total = losses.BCE(reduction="sum").forward(f64([0.2, 0.9]), f64([0.0, 1.0]))
    assert total == pytest.approx(0.22314355 + 0.10536052, abs=1e-8)


# --- 003: "Deep Learning from Scratch" -------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_003_matrix_product(dtype):
    a, b = np.array([[1, 2], [3, 4]], dtype), np.array([[5, 6], [7, 8]], dtype)
    out = np.empty((2, 2), dtype)
    _core.gemm(a, b, out)
    np.testing.assert_array_equal(out, [[19, 22], [43, 50]])
    # the same product as a Dense layer: y = x @ W.T with W = B.T
    dense = L.Dense(2, 2, bias=False).astype(dtype)
    dense.load_state_dict({"weight": b.T.copy()})
    np.testing.assert_array_equal(dense.forward(a), [[19, 22], [43, 50]])


@pytest.mark.parametrize("h, w, p, fh, fw, s, oh, ow", [
    (4, 4, 1, 3, 3, 1, 4, 4),      # padding 1 keeps a 3x3 convolution's size
    (7, 7, 0, 3, 3, 2, 3, 3),
    (28, 31, 2, 5, 5, 3, 10, 11),
    (32, 32, 0, 5, 5, 1, 28, 28),  # LeNet's first layer
])
def test_003_convolution_output_size_formula(h, w, p, fh, fw, s, oh, ow):
    # OH = (H + 2P - FH) / S + 1, OW = (W + 2P - FW) / S + 1
    assert ((h + 2 * p - fh) // s + 1, (w + 2 * p - fw) // s + 1) == (oh, ow)
    y = L.Conv2D(1, 2, (fh, fw), stride=s, padding=p).forward(np.zeros((1, 1, h, w), np.float32))
    assert y.shape == (1, 2, oh, ow)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_003_softmax_overflow(dtype):
    a = np.array([1010, 1000, 990], dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp(a) / np.exp(a).sum()
    assert np.isnan(naive).all()                    # exp overflows: inf / inf
    y = L.Softmax().astype(dtype).forward(a[None])[0]
    np.testing.assert_allclose(y, [9.99954600e-01, 4.53978686e-05, 2.06106005e-09], rtol=1e-6)
    # subtracting any constant c leaves the softmax unchanged (the note's derivation)
    np.testing.assert_allclose(L.Softmax().astype(dtype).forward((a - a.max())[None])[0], y, rtol=1e-6)
    assert y.sum() == pytest.approx(1.0, abs=1e-6) and (y >= 0).all()


def test_003_perceptron_gates_with_the_step_function():
    # y = h(b + w1 x1 + w2 x2), h(x) = 1 for x > 0 else 0
    inputs = f64([[0, 0], [1, 0], [0, 1], [1, 1]])

    def gate(w1, w2, b):
        dense = L.Dense(2, 1).astype(np.float64)
        dense.load_state_dict({"weight": f64([[w1, w2]]), "bias": f64([b])})
        return fnn.Sequential(dense, L.Step()).astype(np.float64)

    and_, nand, or_ = gate(0.5, 0.5, -0.7), gate(-0.5, -0.5, 0.7), gate(0.5, 0.5, -0.2)
    assert and_.forward(inputs).ravel().tolist() == [0, 0, 0, 1]
    assert nand.forward(inputs).ravel().tolist() == [1, 1, 1, 0]
    assert or_.forward(inputs).ravel().tolist() == [0, 1, 1, 1]
    # XOR = AND(NAND, OR): two layers of perceptrons
    hidden = np.hstack([nand.forward(inputs), or_.forward(inputs)])
    assert and_.forward(hidden).ravel().tolist() == [0, 1, 1, 0]


def test_003_sum_of_squares_and_cross_entropy_errors():
    # E = 1/2 sum (y - t)^2 and E = -sum t log y, for the book's example: t is the one-hot "2",
    # y the network's probabilities
    t = np.eye(10)[[2]]
    y = f64([[0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]])
    assert 0.5 * losses.MSE(reduction="sum").forward(y, t) == pytest.approx(0.0975)
    # the note's mean form writes -1/N sum t log t; it is t log y (log of the prediction)
    assert losses.BCE(reduction="sum").forward(y[:, 2], t[:, 2]) == pytest.approx(-math.log(0.6))
    logits = np.log(y + 1e-300)
    assert losses.CrossEntropy().forward(logits, np.array([2])) == pytest.approx(-math.log(0.6), rel=1e-12)


def test_003_he_and_xavier_standard_deviations():
    # Xavier (the book's form): std 1/sqrt(n); He: std sqrt(2/n). The note writes He's std as
    # 2/sqrt(n), sqrt(2) times too large (the two agree for no n)
    n = 400
    fnn.seed(0)
    he = fnn.init.he_normal((n, n), dtype=np.float64)
    assert he.std() == pytest.approx(math.sqrt(2 / n), rel=0.01)
    assert abs(he.std() - 2 / math.sqrt(n)) > 0.3 * math.sqrt(2 / n)
    # Glorot's sqrt(2 / (fan_in + fan_out)) is the book's 1/sqrt(n) for a square layer
    xavier = fnn.init.xavier_normal((n, n), dtype=np.float64)
    assert xavier.std() == pytest.approx(1 / math.sqrt(n), rel=0.01)


def test_003_two_3x3_convolutions_see_5x5_with_18_weights():
    fnn.seed(1)
    a = L.Conv2D(1, 1, 3, bias=False).astype(np.float64)
    b = L.Conv2D(1, 1, 3, bias=False).astype(np.float64)
    stacked = sum(p.data.size for p in a.parameters() + b.parameters())
    assert stacked == 18                      # the note says 16: 2 * 3 * 3 = 18 < 25
    assert sum(p.data.size for p in L.Conv2D(1, 1, 5, bias=False).parameters()) == 25
    # the two linear 3x3 layers are one 5x5 layer: its kernel is the full convolution of theirs
    k1, k2 = a.weight.data[0, 0], b.weight.data[0, 0]
    k5 = np.zeros((5, 5))
    for i in range(3):
        for j in range(3):
            k5[i:i + 3, j:j + 3] += k1[i, j] * k2
    five = L.Conv2D(1, 1, 5, bias=False).astype(np.float64)
    five.load_state_dict({"weight": k5.reshape(1, 1, 5, 5)})
    x = np.random.default_rng(2).normal(size=(2, 1, 9, 9))
    np.testing.assert_allclose(b.forward(a.forward(x)), five.forward(x), rtol=1e-12, atol=1e-12)


def test_003_optimizer_rules_as_the_note_writes_them():
    g = f64([0.5, -2.0, 1.0])

    def run(make, steps=3):
        p = fnn.layers.Parameter("w", f64([1.0, 1.0, 1.0]))
        opt = make([p])
        for _ in range(steps):
            p.grad[...] = g
            opt.step()
        return p.data

    lr = 0.1
    # Momentum: v <- alpha v - lr g; W <- W + v
    w, v = f64([1.0, 1.0, 1.0]), np.zeros(3)
    for _ in range(3):
        v = 0.9 * v - lr * g
        w = w + v
    np.testing.assert_allclose(run(lambda ps: fnn.optim.SGD(ps, lr=lr, momentum=0.9)), w, rtol=1e-12)
    # AdaGrad: h <- h + g*g; W <- W - lr g / sqrt(h)   (plus a tiny eps in the denominator)
    w, h = f64([1.0, 1.0, 1.0]), np.zeros(3)
    for _ in range(3):
        h = h + g * g
        w = w - lr * g / (np.sqrt(h) + 1e-10)
    np.testing.assert_allclose(run(lambda ps: fnn.optim.AdaGrad(ps, lr=lr)), w, rtol=1e-12)
    # RMSProp: h <- rho h + (1 - rho) g*g; W <- W - lr g / sqrt(h)
    w, h = f64([1.0, 1.0, 1.0]), np.zeros(3)
    for _ in range(3):
        h = 0.9 * h + 0.1 * g * g
        w = w - lr * g / (np.sqrt(h) + 1e-8)
    np.testing.assert_allclose(run(lambda ps: fnn.optim.RMSProp(ps, lr=lr, alpha=0.9)), w, rtol=1e-12)
    # Adam: the note's theta - lr m / sqrt(v + eps) leaves out the bias correction of m and v
    # (with it, the first step moves every weight by lr); eps goes outside the root
    w, m, s = f64([1.0, 1.0, 1.0]), np.zeros(3), np.zeros(3)
    for t in range(1, 4):
        m = 0.9 * m + 0.1 * g
        s = 0.999 * s + 0.001 * g * g
        w = w - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(s / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(run(lambda ps: fnn.optim.Adam(ps, lr=lr)), w, rtol=1e-12)
    np.testing.assert_allclose(run(lambda ps: fnn.optim.Adam(ps, lr=lr), steps=1),
                               1.0 - lr * np.sign(g), rtol=1e-6)


def test_003_batch_norm_training_formula():
    # mu_B, sigma_B^2 (biased) over the mini-batch; x_hat = (x - mu) / sqrt(sigma^2 + eps);
    # y = gamma x_hat + beta
    x = np.random.default_rng(3).normal(2, 3, (8, 4))
    bn = L.BatchNorm1D(4, eps=1e-7).astype(np.float64)
    gamma, beta = f64([1.0, 2.0, 0.5, -1.0]), f64([0.0, 1.0, -1.0, 0.5])
    bn.load_state_dict({"weight": gamma, "bias": beta, "running_mean": np.zeros(4), "running_var": np.ones(4)})
    mu, var = x.mean(0), x.var(0)
    np.testing.assert_allclose(bn.forward(x, training=True), gamma * (x - mu) / np.sqrt(var + 1e-7) + beta,
                               rtol=1e-12, atol=1e-12)


def test_003_dropout_expectation_matches_inference():
    # the book scales by (1 - ratio) at test time; fastnn (like PyTorch) scales the kept units
    # by 1 / (1 - p) in training instead: the same expected activation
    fnn.seed(0)
    drop = L.Dropout(0.4).astype(np.float64)
    x = np.ones((2000, 50))
    assert drop.forward(x, training=True).mean() == pytest.approx(drop.forward(x, training=False).mean(), rel=0.01)


def test_003_im2col_turns_convolution_into_one_matrix_product():
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=(2, 3, 5, 5)), rng.normal(size=(4, 3, 3, 3))
    col = np.empty((2, 3 * 3 * 3, 3 * 3))
    _core.im2col(x, 3, 1, 0, col)                   # 4-D input -> rows of flattened windows
    y = np.einsum("ok,nkp->nop", w.reshape(4, -1), col).reshape(2, 4, 3, 3)
    conv = L.Conv2D(3, 4, 3, bias=False).astype(np.float64)
    conv.load_state_dict({"weight": w})
    np.testing.assert_allclose(conv.forward(x), y, rtol=1e-12, atol=1e-12)


# --- 004: the CNN review (zero padding with a sharpening kernel, max pooling) -----------------------
def test_004_zero_padding_keeps_the_size_sharpen_kernel_example():
    image = f64([[60, 113, 56, 139, 85],
                 [73, 121, 54, 84, 128],
                 [131, 99, 70, 129, 127],
                 [80, 57, 115, 69, 134],
                 [104, 126, 123, 95, 130]])
    conv = L.Conv2D(1, 1, 3, padding=1, bias=False).astype(np.float64)
    conv.load_state_dict({"weight": f64([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]).reshape(1, 1, 3, 3)})
    y = conv.forward(image.reshape(1, 1, 5, 5))[0, 0]
    assert y.shape == (5, 5)                       # padding 1 keeps 5x5
    # the slide's three rows (its third row stops after four values)
    np.testing.assert_array_equal(y[:2], [[114, 328, -26, 470, 158], [53, 266, -61, -30, 344]])
    np.testing.assert_array_equal(y[2, :4], [403, 116, -47, 295])
    assert y[2, 4] == 5 * 127 - 128 - 129 - 134 == 244


def test_004_max_pooling_example():
    x = f64([[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(L.MaxPool2D(2).astype(np.float64).forward(x)[0, 0], [[6, 8], [3, 4]])


# --- 004 (and 000): GAN theory ---------------------------------------------------------------------
def test_004_gan_value_at_the_optimal_discriminator_is_2_jsd_minus_log_4():
    rng = np.random.default_rng(5)
    p_data, p_g = rng.dirichlet(np.ones(8)), rng.dirichlet(np.ones(8))
    d_star = p_data / (p_data + p_g)
    value = (p_data * np.log(d_star)).sum() + (p_g * np.log(1 - d_star)).sum()
    assert value == pytest.approx(2 * fnn.metrics.js_divergence(p_data, p_g) - math.log(4), rel=1e-12)
    # the minimum -log 4 is reached when p_g = p_data, where D* = 1/2 everywhere
    assert fnn.metrics.js_divergence(p_data, p_data) == 0
    # JSD = 1/2 KL(p || M) + 1/2 KL(q || M), M = (p + q) / 2
    m = 0.5 * (p_data + p_g)
    assert fnn.metrics.js_divergence(p_data, p_g) == pytest.approx(
        0.5 * fnn.metrics.kl_divergence(p_data, m) + 0.5 * fnn.metrics.kl_divergence(p_g, m))


def test_004_saturating_generator_loss_vanishes_where_the_discriminator_wins():
    # early on D(G(z)) is near 0: log(1 - D(G(z))) is flat there, -log D(G(z)) is steep
    logit = f64([math.log(0.01 / 0.99)])          # D(G(z)) = 0.01
    saturating = losses.BCEWithLogits()           # minimise log(1 - D) = maximise the BCE to 0
    saturating.forward(logit, f64([0.0]))
    grad_saturating = -saturating.backward()      # d/dlogit of log(1 - sigmoid(a)) = -D
    non_saturating = losses.BCEWithLogits()       # minimise -log D = BCE against 1
    non_saturating.forward(logit, f64([1.0]))
    grad_non_saturating = non_saturating.backward()   # -(1 - D)
    assert grad_saturating[0] == pytest.approx(-0.01)
    assert grad_non_saturating[0] == pytest.approx(-0.99)
